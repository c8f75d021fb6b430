"""The process's compute resources and MindSpore's setup for a stage.

usable_cpus() is the one answer to "how many cores may this process use": CPU affinity (Docker's
--cpuset-cpus) capped by a cgroup CPU quota (Docker's --cpus), rounded up. ds2 sizes MindSpore's thread
pool with it, envcheck's threads probe compares thread settings with it, and docker/entrypoint.sh's
shell version (OMP_NUM_THREADS) is checked against it by a test.
"""
from __future__ import annotations

import math
import os
from typing import Optional

from ds2 import cgroup
from ds2.config import Config
from ds2.errors import UserError, first_line
from ds2.memory import GIB, usable_bytes


def usable_cpus(root: str = "/sys/fs/cgroup", self_cgroup: str = "/proc/self/cgroup") -> int:
    """Cores this process may use: CPU affinity, capped by the cgroup CPU quota (rounded up)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota, _ = cgroup.cpu_quota(root, self_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def configure_mindspore(cfg: Config) -> int:
    """GRAPH_MODE on the configured device, CPU kernel threads = cfg.train.threads (0: all usable).

    MindSpore's default is 25 kernel threads whatever the machine has; ds2 sizes the pool to the
    cores it may use instead, so shared machines are not oversubscribed. Returns the thread count.
    """
    import mindspore as ms

    threads = cfg.train.threads or usable_cpus()
    ms.set_context(mode=ms.GRAPH_MODE)
    # Both settings are fixed once the runtime has started; a second stage run in the same
    # interpreter (tests) keeps the first ones.
    if ms.get_context("device_target") != cfg.train.device:
        try:
            ms.set_device(cfg.train.device)
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"train.device={cfg.train.device} is not available here ({first_line(exc)}); "
                            f"use the GPU image on a machine with an NVIDIA GPU (make train-gpu), "
                            f"or --set train.device=CPU") from None
    try:
        ms.device_context.cpu.op_tuning.threads_num(threads)
    except RuntimeError:
        pass
    if cfg.train.compact_host_memory and cfg.train.device == "CPU":
        compact_host_memory()
    ms.set_seed(cfg.train.seed)
    return threads


# glibc mallopt parameters (malloc.h): fixed thresholds also switch off glibc's dynamic mmap threshold,
# which otherwise rises to 32 MiB after the first large free and keeps later buffers on the heap.
# Buffers under 4 MiB stay on the heap: a small model's many small per-step buffers then cost no
# mmap / munmap (a 128 KiB threshold slowed the small preset: docs/performance.md), while the
# seed model's LSTM weight copies (16 MiB and more) still go back to the system when freed.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024


def memory_pool_init_size(usable: Optional[int]) -> Optional[str]:
    """MindSpore's set_memory init_size for one pool block as large as the usable memory, whole GiB
    (MindSpore's format); None when the usable memory is unknown or under 2 GiB (keep the default)."""
    if not usable or usable < 2 * GIB:
        return None
    return f"{usable // GIB}GB"


def compact_host_memory() -> None:
    """train.compact_host_memory on CPU: one MindSpore pool block instead of 1 GiB blocks (its best-fit
    allocator then reuses freed ranges across the whole step instead of leaving holes in each block), and
    glibc mmap / trim thresholds fixed at MMAP_THRESHOLD_BYTES so freed large buffers go back to the system.
    Settings MindSpore already fixed in this process (a second stage in one interpreter) stay as they are."""
    import mindspore as ms

    init_size = memory_pool_init_size(usable_bytes())
    if init_size:
        try:
            ms.runtime.set_memory(init_size=init_size)
        except RuntimeError:   # "can not be set repeatedly"
            pass
    return_freed_buffers()


def return_freed_buffers() -> bool:
    """glibc: buffers of MMAP_THRESHOLD_BYTES or more get pages of their own, unmapped when freed, and the
    heap's top is trimmed past that size. False where the C library is not glibc (nothing to tune)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                    and libc.mallopt(M_TRIM_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False
