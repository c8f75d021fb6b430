"""The interpreter: version, implementation, environment, and the wheel tags it installs."""
from __future__ import annotations

import os
import platform
import sys
import sysconfig

# The pinned stack (numpy 1.20.0, numba 0.53.1, torch 1.7.1) has wheels for CPython <= 3.9 only.
PINNED_PYTHON = (3, 9)


def _glibc():
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        return name, version
    except (AttributeError, ValueError, OSError):
        return None, None


def _tags(glibc_version):
    """Wheel tags this interpreter accepts: the newest manylinux tag first, then a few others."""
    try:
        from packaging import tags
        accepted = [str(t) for t in tags.sys_tags()]
        manylinux = [t for t in accepted if "manylinux" in t]
        return (manylinux[:1] + [t for t in accepted if t not in manylinux[:1]])[:4], "packaging.tags"
    except Exception:
        pass
    interpreter = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    machine = platform.machine()
    platform_tag = f"linux_{machine}"
    if glibc_version:
        major, minor = glibc_version.split(".")[:2]
        platform_tag = f"manylinux_{major}_{minor}_{machine}"
    return [f"{interpreter}-{interpreter}-{platform_tag}"], "computed (packaging not installed)"


def run(settings: dict) -> dict:
    libc, libc_version = _glibc()
    tags, tags_source = _tags(libc_version)
    version = platform.python_version()
    details = {
        "executable": sys.executable,
        "version": version,
        "implementation": platform.python_implementation(),
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "virtualenv": sys.prefix != sys.base_prefix,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "libc": f"{libc} {libc_version}" if libc else "unknown",
        "sysconfig_platform": sysconfig.get_platform(),
        "soabi": sysconfig.get_config_var("SOABI"),
        "tags": tags,
        "tags_source": tags_source,
    }
    summary = (f"{details['implementation']} {version} on {platform.system()} {platform.machine()} "
               f"({details['libc']}); accepts wheels tagged {tags[0]}")
    if sys.version_info[:2] != PINNED_PYTHON:
        return {"status": "warn", "summary": summary + f"; the pinned stack is for Python "
                f"{PINNED_PYTHON[0]}.{PINNED_PYTHON[1]}", "details": details, "findings": ["python-not-pinned"]}
    return {"status": "pass", "summary": summary, "details": details}
