"""numpy's C-API level versus the compiled packages built against numpy.

A compiled module records the numpy C-API feature version it was built with and refuses to load on an
older numpy ("module compiled against API version 0xf but this version of numpy is 0xe", then
"numpy.core.multiarray failed to import"); a module built for numpy 1.x fails under numpy 2.x ("A
module that was compiled using NumPy 1.x cannot be run in NumPy 2.x"). The import probes show those
messages for the modules ds2 uses, and the rules explain them. This probe states the installed
numpy's level and compares it with what every installed compiled package that requires numpy
declares: wheels are built against the oldest numpy they declare, so a declared lower bound above
the installed numpy means a C-API the installed numpy does not have.
"""
from __future__ import annotations

import importlib.util
import re
from importlib import metadata

from envcheck import versions

# numpy C-API feature version (NPY_FEATURE_VERSION) by numpy release: [first, next) -> level.
C_API_LEVELS = [
    ("1.14", "1.16", 0xC),
    ("1.16", "1.20", 0xD),
    ("1.20", "1.22", 0xE),
    ("1.22", "1.23", 0xF),
    ("1.23", "1.25", 0x10),
    ("1.25", "2.0", 0x11),
    ("2.0", "2.1", 0x12),
    ("2.1", "2.2", 0x13),
]


def c_api_level(numpy_version: str):
    for first, following, level in C_API_LEVELS:
        if versions.specifier_contains(f">={first},<{following}", numpy_version):
            return level
    return None


def _releases_with(level) -> str:
    ranges = [f"{first} <= numpy < {following}" for first, following, lv in C_API_LEVELS if lv == level]
    return ", ".join(ranges) or "unknown"


def _lower_bound(specifier: str):
    """The version in the specifier's >= or == clause, e.g. '1.19.5' from '<1.27.0,>=1.19.5'."""
    for clause in specifier.split(","):
        clause = clause.strip()
        for op in (">=", "==", "~="):
            if clause.startswith(op) and not clause.endswith(".*"):
                return clause[len(op):].strip()
    return None


_EXTENSION = re.compile(r"\.(so|pyd)(\.[0-9.]+)?,", re.IGNORECASE)


def _compiled_numpy_users(env):
    """(name, version, numpy specifier) of installed distributions that ship extension modules and require numpy."""
    users = []
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        requirement = None
        for line in dist.requires or []:
            req = versions.parse_requirement(line)
            if req and versions.normalize_name(req.name) == "numpy":
                try:
                    if versions.marker_holds(req.marker, env):
                        requirement = req
                except Exception:
                    continue
        if requirement is None:
            continue
        # RECORD lists every installed file; scanning its text is much faster than dist.files.
        record = dist.read_text("RECORD") or ""
        if _EXTENSION.search(record):
            users.append((name, dist.version, requirement.specifier))
    return users


def run(settings: dict) -> dict:
    if importlib.util.find_spec("numpy") is None:
        return {"status": "skip", "summary": "numpy is not installed (see import.numpy)"}
    try:
        import numpy
        from numpy.core import _multiarray_umath
    except Exception as exc:
        return {"status": "skip", "summary": f"numpy does not import ({type(exc).__name__}: {exc}); see import.numpy"}
    level = c_api_level(numpy.__version__)
    abi = _multiarray_umath._get_ndarray_c_version()
    details = {
        "numpy": numpy.__version__,
        "c_api_level": hex(level) if level is not None else None,
        "abi_version": hex(abi),
        "packages": [],
    }
    too_new = []
    for name, version, specifier in _compiled_numpy_users(versions.marker_environment()):
        bound = _lower_bound(specifier)
        needs = c_api_level(bound) if bound else None
        entry = {"dist": name, "version": version, "requires": specifier or "numpy",
                 "built_for_c_api": hex(needs) if needs is not None else None}
        details["packages"].append(entry)
        if bound and versions.version_key(bound) is not None and \
                versions.version_key(bound) > versions.version_key(numpy.__version__):
            too_new.append(f"{name} {version} (built for numpy >= {bound}, C-API "
                           f"{entry['built_for_c_api'] or '?'})")
    summary = (f"numpy {numpy.__version__}: C-API {details['c_api_level'] or 'unknown'} "
               f"({_releases_with(level)}), ABI {details['abi_version']}")
    if too_new:
        return {"status": "fail", "summary": summary + "; built for a newer numpy: " + ", ".join(too_new),
                "details": details, "findings": ["numpy-older-than-build"]}
    return {"status": "pass", "summary": summary + f"; {len(details['packages'])} compiled packages that require "
            "numpy declare versions it satisfies", "details": details}
