"""/dev/shm: multi-process data loaders pass batches through it; Docker gives containers 64 MiB."""
from __future__ import annotations

import os

MIB = 1024 ** 2
# Below this, a few workers with prefetched spectrogram batches fill it (bus error / "No space left").
MIN_BYTES = 512 * MIB
SHM = "/dev/shm"


def run(settings: dict) -> dict:
    path = SHM
    try:
        stat = os.statvfs(path)
    except OSError as exc:
        return {"status": "warn", "summary": f"{path} is not available ({exc}); multi-process loading needs it",
                "details": {"path": path, "error": str(exc)}, "findings": ["shm-missing"]}
    size, free = stat.f_frsize * stat.f_blocks, stat.f_frsize * stat.f_bavail
    details = {"path": path, "size_bytes": size, "free_bytes": free, "size_mib": size // MIB,
               "free_mib": free // MIB, "minimum_mib": MIN_BYTES // MIB}
    if size < MIN_BYTES:
        return {"status": "warn", "summary": f"{path} is {size // MIB} MiB (free {free // MIB} MiB); "
                f"multi-worker data loading wants at least {MIN_BYTES // MIB} MiB", "details": details,
                "findings": ["shm-small"]}
    return {"status": "pass", "summary": f"{path} is {size // MIB} MiB, {free // MIB} MiB free", "details": details}
