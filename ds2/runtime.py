"""The process's compute resources and MindSpore's setup for a stage.

usable_cpus() is the one answer to "how many cores may this process use": CPU affinity (Docker's
--cpuset-cpus) capped by a cgroup CPU quota (Docker's --cpus), rounded up. ds2 sizes MindSpore's thread
pool with it, envcheck's threads probe compares thread settings with it, and docker/entrypoint.sh's
shell version (OMP_NUM_THREADS) is checked against it by a test.
"""
from __future__ import annotations

import math
import os

from ds2 import cgroup
from ds2.config import Config
from ds2.errors import UserError, first_line


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
    ms.set_seed(cfg.train.seed)
    return threads
