"""Limits the kernel puts on this process through cgroups (v1 and v2): memory and CPU quota.

Docker's --memory and --cpus become these limits; /proc/meminfo and os.cpu_count() still show the
whole machine, which is why memory and thread settings must be compared with these instead.
Both functions take the file locations as arguments so tests can point them at a prepared tree.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

# cgroup v1 reports "no limit" as a huge page-rounded number (e.g. 9223372036854771712).
V1_UNLIMITED = 1 << 60


def _memberships(self_cgroup: str) -> List[Tuple[str, str]]:
    """(controllers, path) per line of /proc/self/cgroup; controllers '' for the v2 unified hierarchy."""
    found = []
    try:
        with open(self_cgroup, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) == 3:
                    found.append((parts[1], parts[2]))
    except OSError:
        pass
    return found


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def _v2_dirs(root: str, path: str) -> List[str]:
    """The process's cgroup directory and its ancestors up to the root (a limit anywhere above applies)."""
    dirs = []
    current = os.path.normpath(os.path.join(root, path.lstrip("/")))
    if not os.path.isdir(current):  # a cgroup namespace can hide the host path: the root is ours then
        current = root
    while True:
        dirs.append(current)
        if os.path.normpath(current) == os.path.normpath(root):
            return dirs
        current = os.path.dirname(current)


def _v1_dir(root: str, controller: str, path: str) -> Optional[str]:
    """The v1 cgroup directory of `controller` for this process (the mount itself inside a container)."""
    mounts = [os.path.join(root, controller)]
    if controller == "cpu":
        mounts.append(os.path.join(root, "cpu,cpuacct"))
    for mount in mounts:
        if os.path.isdir(mount):
            candidate = os.path.normpath(os.path.join(mount, path.lstrip("/")))
            return candidate if os.path.isdir(candidate) else mount
    return None


def memory_limit(root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> Tuple[Optional[int], str]:
    """(limit in bytes or None when unlimited, where it was read)."""
    for controllers, path in _memberships(self_cgroup):
        if controllers == "":
            limits = []
            for directory in _v2_dirs(root, path):
                value = _read(os.path.join(directory, "memory.max"))
                if value and value != "max":
                    limits.append((int(value), os.path.join(directory, "memory.max")))
            if limits:
                return min(limits)
            if os.path.exists(os.path.join(root, "cgroup.controllers")):
                return None, "cgroup v2: memory.max is 'max'"
        elif "memory" in controllers.split(","):
            directory = _v1_dir(root, "memory", path)
            if directory is None:
                continue
            stat = _read(os.path.join(directory, "memory.stat")) or ""
            for line in stat.splitlines():
                if line.startswith("hierarchical_memory_limit "):
                    value = int(line.split()[1])
                    source = os.path.join(directory, "memory.stat") + " hierarchical_memory_limit"
                    return (None, source) if value >= V1_UNLIMITED else (value, source)
            value = _read(os.path.join(directory, "memory.limit_in_bytes"))
            if value is not None:
                source = os.path.join(directory, "memory.limit_in_bytes")
                return (None, source) if int(value) >= V1_UNLIMITED else (int(value), source)
    return None, "no cgroup memory limit found"


def cpu_quota(root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> Tuple[Optional[float], str]:
    """(CPU quota in cores or None when unlimited, where it was read)."""
    for controllers, path in _memberships(self_cgroup):
        if controllers == "":
            quotas = []
            for directory in _v2_dirs(root, path):
                value = _read(os.path.join(directory, "cpu.max"))
                if value and not value.startswith("max"):
                    quota, period = value.split()[:2]
                    quotas.append((int(quota) / int(period), os.path.join(directory, "cpu.max")))
            if quotas:
                return min(quotas)
        elif "cpu" in controllers.split(","):
            directory = _v1_dir(root, "cpu", path)
            if directory is None:
                continue
            quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))
            period = _read(os.path.join(directory, "cpu.cfs_period_us"))
            if quota and period and int(quota) > 0:
                return int(quota) / int(period), os.path.join(directory, "cpu.cfs_quota_us")
    return None, "no cgroup CPU quota found"
