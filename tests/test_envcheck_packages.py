"""Distribution metadata, numpy binary compatibility and known version conflicts, built for real:
*.dist-info directories with other versions' metadata and packages whose import fails the way the
real broken package does."""
from __future__ import annotations

import shutil
import sys

import pytest

from tests.envcheck_helpers import run_envcheck, write_dist, write_package

ONLY_DISTRIBUTIONS = ("--only", "distributions")


def test_unmet_requirement_is_reported_like_pip_check(tmp_path):
    write_dist(tmp_path, "brokenpkg", "1.0", requires=["numpy<1.0", "not-installed-anywhere>=2",
                                                       "colorama; sys_platform == 'win32'"])
    run = run_envcheck(*ONLY_DISTRIBUTIONS, pythonpath=[tmp_path])
    probe = run.probe("distributions")
    assert probe["status"] == "fail"
    problems = {(p["requirement"], p["found"]) for p in probe["details"]["problems"]}
    assert ("numpy<1.0", "1.20.0") in {(r.replace(" ", ""), f) for r, f in problems}
    assert any(r.startswith("not-installed-anywhere") and f is None for r, f in problems)
    assert not any(r.startswith("colorama") for r, _ in problems)  # its marker does not hold on Linux
    assert "requirement-unmet" in run.rules("distributions")


def test_a_distribution_installed_twice(tmp_path):
    write_dist(tmp_path, "Levenshtein", "0.0.1")
    run = run_envcheck(*ONLY_DISTRIBUTIONS, pythonpath=[tmp_path])
    probe = run.probe("distributions")
    assert "levenshtein" in probe["details"]["duplicates"]
    assert "duplicate-distribution" in run.rules("distributions")


def test_mindspore_2_8_with_numpy_1_20_fails_on_numpy_typing(tmp_path):
    # MindSpore 2.8's metadata and its use of numpy.typing.NDArray, against the real numpy 1.20.0.
    write_dist(tmp_path, "mindspore", "2.8.0", requires=["numpy<2.0.0,>=1.20.0"])
    write_package(tmp_path, "mindspore", """
        import numpy.typing as npt
        ArrayLike = npt.NDArray
    """)
    run = run_envcheck("--only", "distributions", "--only", "import.mindspore", "--stage", "train",
                       pythonpath=[tmp_path])
    assert run.code == 1
    probe = run.probe("import.mindspore")
    assert "module 'numpy.typing' has no attribute 'NDArray'" in probe["summary"]
    assert "mindspore-needs-numpy-1.21" in run.rules("import.mindspore")
    # pip check is satisfied (the metadata lies); the rule still fails the distributions probe.
    assert run.probe("distributions")["details"]["problems"] == []
    assert "mindspore-needs-numpy-1.21" in run.rules("distributions")
    fix = " ".join(run.diagnosis("import.mindspore", "mindspore-needs-numpy-1.21")["fix"])
    assert "mindspore==2.7.2" in fix and "numpy==1.21.6" in fix and "numba" in fix


def test_mindspore_2_0_with_pillow_10_antialias(tmp_path):
    write_dist(tmp_path, "Pillow", "10.0.0")
    write_package(tmp_path, "PIL", "", files={"Image.py": "LANCZOS = 1\n"})
    write_dist(tmp_path, "mindspore", "2.0.0")
    write_package(tmp_path, "mindspore", """
        from PIL import Image
        RESAMPLE = Image.ANTIALIAS
    """)
    run = run_envcheck("--stage", "train", "--only", "import.mindspore", "--only", "distributions",
                       pythonpath=[tmp_path])
    assert "module 'PIL.Image' has no attribute 'ANTIALIAS'" in run.probe("import.mindspore")["summary"]
    assert "mindspore-2.0-pillow-10" in run.rules("import.mindspore")
    assert "mindspore-2.0-pillow-10" in run.rules("distributions")
    assert "Pillow<10" in " ".join(run.diagnosis("import.mindspore", "mindspore-2.0-pillow-10")["fix"])


def test_torch_before_2_4_with_numpy_2(tmp_path):
    write_dist(tmp_path, "numpy", "2.0.2")
    run = run_envcheck(*ONLY_DISTRIBUTIONS, pythonpath=[tmp_path])
    assert run.probe("distributions")["status"] == "fail"
    assert "torch-numpy-2" in run.rules("distributions")


def test_numba_0_53_outside_its_numpy_range(tmp_path):
    # numba 0.53.1 (the image's) beside numpy 1.24.4's metadata: measured failing at import
    write_dist(tmp_path / "new", "numpy", "1.24.4")
    run = run_envcheck(*ONLY_DISTRIBUTIONS, pythonpath=[tmp_path / "new"])
    assert run.probe("distributions")["status"] == "fail"
    diagnosis = run.diagnosis("distributions", "numba-0.53-numpy-range")
    assert "fails at import with numpy 1.24.4" in diagnosis["title"]
    assert "numpy==1.23.5" in " ".join(diagnosis["fix"])
    # numpy 1.22.4 is outside numba 0.53's release notes but measured working: no rule says otherwise
    write_dist(tmp_path / "old", "numpy", "1.22.4")
    run = run_envcheck(*ONLY_DISTRIBUTIONS, pythonpath=[tmp_path / "old"])
    assert "numba-0.53-numpy-range" not in run.rules("distributions")


def test_librosa_0_10_needs_numpy_1_20_3(tmp_path):
    write_dist(tmp_path, "librosa", "0.10.1", requires=["numpy!=1.22.0,>=1.20.3"])
    run = run_envcheck(*ONLY_DISTRIBUTIONS, pythonpath=[tmp_path])
    assert "librosa-needs-numpy-1.20.3" in run.rules("distributions")
    assert "librosa==0.9.2" in " ".join(run.diagnosis("distributions", "librosa-needs-numpy-1.20.3")["fix"])


def test_numba_refusing_numpy_at_import(tmp_path):
    write_package(tmp_path, "numba", 'raise ImportError("Numba needs NumPy 1.24 or less")\n')
    run = run_envcheck("--only", "import.numba", pythonpath=[tmp_path])
    diagnosis = run.diagnosis("import.numba", "numba-enforces-numpy")
    assert "1.24 or less" in diagnosis["title"]


# What numpy and Cython print when an extension module meets a numpy it was not built for.
ABI_FAILURES = {
    "numpy-c-api-too-old": (
        'import sys\n'
        'sys.stderr.write("RuntimeError: module compiled against API version 0xf but this version of numpy is 0xe\\n")\n'
        'raise ImportError("numpy.core.multiarray failed to import")\n'),
    "numpy-abi-version": (
        'import sys\n'
        'sys.stderr.write("RuntimeError: module compiled against ABI version 0x2000000 but this version of numpy '
        'is 0x1000009\\n")\n'
        'raise ImportError("numpy.core.multiarray failed to import")\n'),
    "numpy-2-abi": (
        'import sys\n'
        'sys.stderr.write("A module that was compiled using NumPy 1.x cannot be run in\\nNumPy 2.0.2 as it may '
        'crash. To support both 1.x and 2.x\\nversions of NumPy, modules must be compiled with NumPy 2.0.\\n")\n'
        'raise ImportError("numpy.core.multiarray failed to import")\n'),
    "numpy-multiarray-failed": 'raise ImportError("numpy.core.multiarray failed to import")\n',
    "numpy-dtype-size-changed": (
        'raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. '
        'Expected 96 from C header, got 88 from PyObject")\n'),
}


@pytest.mark.parametrize("rule_id", ["numpy-2-abi", "numpy-abi-version", "numpy-c-api-too-old",
                                     "numpy-dtype-size-changed", "numpy-multiarray-failed"])
def test_numpy_binary_mismatch_messages(tmp_path, rule_id):
    write_package(tmp_path, "Levenshtein", ABI_FAILURES[rule_id])
    run = run_envcheck("--stage", "eval", "--only", "import.levenshtein", pythonpath=[tmp_path])
    rules = run.rules("import.levenshtein")
    assert rule_id in rules
    assert (rule_id == "numpy-multiarray-failed") == ("numpy-multiarray-failed" in rules)


def test_numpy_c_api_message_names_both_versions(tmp_path):
    write_package(tmp_path, "Levenshtein", ABI_FAILURES["numpy-c-api-too-old"])
    run = run_envcheck("--stage", "eval", "--only", "import.levenshtein", "--only", "distributions",
                       pythonpath=[tmp_path])
    diagnosis = run.diagnosis("import.levenshtein", "numpy-c-api-too-old")
    assert "0xf" in diagnosis["title"] and "0xe" in diagnosis["title"]
    assert "numpy 1.20.0" in diagnosis["explanation"]


def test_compiled_package_built_for_a_newer_numpy(tmp_path):
    write_dist(tmp_path, "fastext", "3.1", requires=["numpy>=1.23.5"],
               files=["fastext/_core.cpython-39-x86_64-linux-gnu.so"])
    run = run_envcheck("--only", "numpy.abi", pythonpath=[tmp_path])
    probe = run.probe("numpy.abi")
    assert probe["status"] == "fail"
    assert "fastext 3.1 (built for numpy >= 1.23.5, C-API 0x10)" in probe["summary"]
    assert probe["details"]["c_api_level"] == "0xe"
    assert "numpy-older-than-build" in run.rules("numpy.abi")


def test_pinned_numpy_abi_passes():
    run = run_envcheck("--only", "numpy.abi")
    probe = run.probe("numpy.abi")
    assert probe["status"] == "pass", probe["summary"]
    assert probe["details"]["abi_version"].startswith("0x1")


def another_python():
    """A CPython 3.10 or newer on PATH, or None."""
    for minor in range(10, 16):
        found = shutil.which(f"python3.{minor}")
        if found:
            return found
    return None


@pytest.mark.skipif(another_python() is None or sys.version_info[:2] != (3, 9),
                    reason="needs a second CPython (3.10 or newer on PATH) next to the 3.9 under test")
def test_another_python_than_the_pinned_one():
    run = run_envcheck("--only", "python", "--python", another_python())
    assert run.probe("python")["status"] == "warn"
    assert "python-not-pinned" in run.rules("python")


def test_unreadable_config(tmp_path):
    run = run_envcheck("--only", "python", "--config", str(tmp_path / "missing.yaml"))
    assert run.code == 1
    assert run.probe("config")["status"] == "fail"
    assert "config-unreadable" in run.rules("config")


# flashlight-text's kenlm.py raises this when the bindings were built without KenLM (USE_KENLM=0).
FLASHLIGHT_WITHOUT_KENLM = '''
raise ImportError("""
    Installed Flashlight Text Python bindings were built without KenLM
    support. Install the bindings from PyPI, or set the environment
    variable USE_KENLM=1 if building the bindings from source.
    """)
'''


def test_flashlight_text_decodes_with_kenlm_in_the_eval_stage():
    pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    run = run_envcheck("--stage", "eval", "--only", "import.flashlight")
    probe = run.probe("import.flashlight")
    assert probe["status"] == "pass" and "KenLM reads an ARPA model" in probe["summary"]


def test_flashlight_text_without_kenlm_is_a_warning_naming_the_fix(tmp_path):
    write_package(tmp_path, "flashlight", "", files={"lib/__init__.py": "", "lib/text/__init__.py": "",
                                                     "lib/text/decoder/__init__.py": "",
                                                     "lib/text/decoder/kenlm.py": FLASHLIGHT_WITHOUT_KENLM})
    run = run_envcheck("--stage", "eval", "--only", "import.flashlight", pythonpath=[tmp_path])
    probe = run.probe("import.flashlight")
    assert probe["status"] == "warn" and "greedy decoding (ds2 eval --no-lm) works" in probe["summary"]
    assert run.code == 2
    diagnosis = run.diagnosis("import.flashlight", "flashlight-text-without-kenlm")
    assert any("USE_KENLM=1" in step for step in diagnosis["fix"])
