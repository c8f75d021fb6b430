"""Progress log of a probe subprocess: what it was doing when it died.

The child writes one line per event to a file the runner reads after the process ends:

    import NAME     an import of module NAME started (written by an import hook, before the module is
                    found, so a crash or hang inside that import leaves NAME as the last import line)
    step TEXT       a probe announced a step ("training step", "import mindspore", ...)

Lines are written with os.write on an O_APPEND descriptor: no Python buffering, so every line before
a SIGSEGV or SIGKILL is on disk. Only the child (envcheck/child.py and the probes) uses this module.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

_fd: Optional[int] = None


def open_log(path: str) -> None:
    global _fd
    _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def _write(line: str) -> None:
    if _fd is not None:
        os.write(_fd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))


def mark(step: str) -> None:
    """Record that the probe is starting `step`; shown when the probe crashes or hangs in it."""
    _write("step " + step)


class _ImportRecorder:
    """A meta path finder that finds nothing: it only records each import before the real finders run."""

    def find_spec(self, name, path=None, target=None):
        _write("import " + name)
        return None


def record_imports() -> None:
    sys.meta_path.insert(0, _ImportRecorder())


# --- reading (runner side) -------------------------------------------------------------------------

def read_log(path: str) -> List[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        return []


def last_event(lines: List[str]) -> str:
    """Describe the last thing the probe started, e.g. "while importing torch._C" or "during training step"."""
    for line in reversed(lines):
        if line.startswith("import "):
            return "while importing " + line[len("import "):]
        if line.startswith("step "):
            return "during " + line[len("step "):]
    return "before any import or step"


def steps(lines: List[str]) -> List[str]:
    return [line[len("step "):] for line in lines if line.startswith("step ")]
