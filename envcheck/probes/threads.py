"""Thread settings against the cores this process may really use, and thread variables no library accepts.

os.cpu_count() reports the machine's cores even when Docker's --cpus (a cgroup CPU quota) or
--cpuset-cpus (affinity) allow fewer. OpenMP (MindSpore, PyTorch, numba), OpenBLAS and MKL start one
thread per reported core unless told otherwise, and threads beyond the usable cores only contend.

A thread variable that is not a positive integer does not limit anything: OpenMP (libgomp) prints
"Invalid value for environment variable OMP_NUM_THREADS" and starts one thread per core, OpenBLAS and MKL
read the leading digits ('abc' and '0' as their default, '1.5' as 1), numba warns and uses every core
(NUMBA_NUM_THREADS=0 makes its parallel code raise). OMP_NUM_THREADS alone may list one count per nesting
level ('4,2').
"""
from __future__ import annotations

import os
import re
from typing import Optional

from envcheck.settings import config_value

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
_COUNT = re.compile(r"\s*\+?0*[1-9][0-9]*\s*")
# What the library reading each variable does with a value it cannot use.
INVALID_EFFECT = {
    "OMP_NUM_THREADS": "OpenMP (libgomp, loaded by MindSpore, PyTorch and SciPy) rejects it and starts one thread "
                       "per core",
    "NUMBA_NUM_THREADS": "numba warns that it cannot parse it and uses every core (0 makes its parallel code "
                         "raise ValueError)",
}
OTHER_EFFECT = "the library reading it takes only its leading digits, or its own default when there are none"


def invalid(name: str, value: str) -> Optional[str]:
    """Why `value` is not a thread count for variable `name`, or None when it is one."""
    if not value.strip():
        return "is empty"
    items = value.split(",") if name == "OMP_NUM_THREADS" else [value]
    if all(_COUNT.fullmatch(item) for item in items):
        return None
    return "is not a positive integer"


def _first_int(value: str):
    """OMP_NUM_THREADS may list one count per nesting level ('4,2'); the first is the outer one."""
    try:
        return int(value.split(",")[0].strip())
    except ValueError:
        return None


def run(settings: dict) -> dict:
    from ds2 import cgroup
    from ds2.runtime import usable_cpus

    reported = os.cpu_count() or 1
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else reported
    quota, quota_source = cgroup.cpu_quota()
    usable = usable_cpus()
    variables = {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ}
    configured = int(config_value(settings, "train.threads", 0) or 0)
    details = {"cpu_count": reported, "affinity": affinity, "cgroup_quota_cores": quota,
               "cgroup_source": quota_source, "usable": usable, "variables": variables,
               "ds2_threads": configured}
    problems, findings, unusable, fixes = [], [], [], []
    for name, value in variables.items():
        why = invalid(name, value)
        if why:
            unusable.append(f"{name}={value!r} {why}: {INVALID_EFFECT.get(name, OTHER_EFFECT)}")
            fixes.append(f"export {name}={usable}    # or: unset {name}")
            continue
        count = _first_int(value)
        if count is not None and count > usable:
            problems.append(f"{name}={value} > {usable} usable cores")
    if configured > usable:
        problems.append(f"train.threads={configured} > {usable} usable cores")
    if problems:
        findings.append("threads-oversubscribed")
    if usable < reported and "OMP_NUM_THREADS" not in variables:
        problems.append(f"OMP_NUM_THREADS is unset: OpenMP will start {reported} threads on {usable} usable cores")
        findings.append("threads-unset-under-limit")
    if unusable:
        findings.append("threads-invalid")
        details.update(invalid="; ".join(unusable), invalid_fixes=fixes)
    cores = f"{usable} usable cores (cpu_count {reported}, affinity {affinity}, cgroup quota {quota or 'none'})"
    details["cores"] = cores
    if problems or unusable:
        details["problem"] = "; ".join(problems)
        return {"status": "warn", "summary": f"{cores}; " + "; ".join(unusable + problems), "details": details,
                "findings": findings}
    settings_text = ", ".join(f"{k}={v}" for k, v in variables.items()) or "no thread variables set"
    return {"status": "pass", "summary": f"{cores}; {settings_text}; ds2 train.threads={configured or 'all'}",
            "details": details}
