"""envcheck's own PEP 440/508 parser (used where `packaging` is missing) agrees with `packaging`."""
from __future__ import annotations

import pytest

from envcheck import versions

packaging = pytest.importorskip("packaging")

SPECIFIER_CASES = [
    (">=1.15", "1.20.0"), ("<1.21", "1.21.0"), ("<1.21", "1.20.3"), (">=1.15,<1.21", "1.21"),
    ("==1.20.*", "1.20.3"), ("==1.20.*", "1.21.0"), ("!=1.22.0", "1.22.0"), ("!=1.22.*", "1.22.4"),
    ("~=1.4.2", "1.4.9"), ("~=1.4.2", "1.5.0"), ("~=2.2", "2.9"), ("~=2.2", "3.0"),
    ("<2.0", "2.0rc1"), ("<2.0rc2", "2.0rc1"), (">1.0", "1.0.post1"), (">1.0.post0", "1.0.post1"),
    ("<=1.0", "1.0+local"), ("==1.0", "1.0+local"), ("==1.0+local", "1.0+other"), (">1.0", "1.0+local"),
    (">=2.8.0", "2.8.0"), (">=2.8.0", "2.10.0"), (">=1.0.dev1", "1.0a1"), ("<1.0", "1.0.dev3"),
    ("==1.0.0", "1.0"), ("===1.0", "1.0"), ("<2.0.0,>=1.20.0", "1.20.0"), ("<1.27.0,>=1.19.5", "1.26.4"),
    (">=1!1.0", "2.0"), ("", "0.1"), (">=11.0", "11.0.3"), (">=0.53,<0.54", "0.53.1"),
]
MARKER_CASES = [
    'python_version < "3.10"', 'python_version >= "3.8" and sys_platform == "linux"',
    'sys_platform == "win32" or (platform_machine == "x86_64" and python_version < "4")',
    '"linux" in sys_platform', 'platform_system != "Windows"', 'extra == "test"',
    'python_full_version >= "3.9.0"', 'implementation_name == "cpython" and os_name == "posix"',
    "platform_machine not in 'aarch64 arm64'",
]
REQUIREMENT_CASES = [
    "numpy (>=1.15)", "numpy<2.0.0,>=1.20.0", "scipy>=1.0; python_version >= '3.8'",
    "pytest[testing] >= 6 ; extra == 'test'", "dataclasses ; python_version < \"3.7\"",
    "pkg @ https://example.com/pkg-1.0.tar.gz", "Python_Levenshtein==0.27.1",
]


@pytest.fixture
def fallback(monkeypatch):
    monkeypatch.setattr(versions, "HAVE_PACKAGING", False)


@pytest.mark.parametrize("specifier, version", SPECIFIER_CASES)
def test_specifiers_agree_with_packaging(specifier, version, fallback):
    from packaging.specifiers import SpecifierSet
    expected = SpecifierSet(specifier).contains(version, prereleases=True)
    assert versions.specifier_contains(specifier, version) == expected


def test_version_order_agrees_with_packaging(fallback):
    from packaging.version import Version
    ordered = ["1.0.dev1", "1.0a1", "1.0a2.dev1", "1.0b1", "1.0rc1", "1.0", "1.0+abc", "1.0.post1", "1.1", "1!0.5"]
    assert sorted(ordered, key=versions.version_key) == sorted(ordered, key=Version)
    assert versions.version_key("not a version") is None


@pytest.mark.parametrize("marker", MARKER_CASES)
def test_markers_agree_with_packaging(marker, fallback):
    from packaging.markers import Marker
    env = versions.marker_environment()
    assert versions.marker_holds(marker, env) == Marker(marker).evaluate(dict(env))


@pytest.mark.parametrize("line", REQUIREMENT_CASES)
def test_requirements_agree_with_packaging(line, fallback):
    from packaging.requirements import Requirement
    parsed, expected = versions.parse_requirement(line), Requirement(line)
    assert versions.normalize_name(parsed.name) == versions.normalize_name(expected.name)
    assert parsed.extras == tuple(sorted(expected.extras))
    for candidate in ("0.1", "1.15", "1.20.0", "2.0.0", "6.2", "0.27.1"):
        assert versions.specifier_contains(parsed.specifier, candidate) == \
            expected.specifier.contains(candidate, prereleases=True)
    assert versions.marker_holds(parsed.marker) == (expected.marker is None or expected.marker.evaluate({"extra": ""}))
