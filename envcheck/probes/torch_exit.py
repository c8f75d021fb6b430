"""A torch backward pass, alone and beside MindSpore or numba: does the process still exit cleanly?

Measured on the pinned stack (torch 1.7.1, the CUDA 10.2 build from the package index; mindspore
2.7.2; numba 0.53.1; no NVIDIA driver): a process that imports mindspore and runs one torch
backward pass dies with SIGSEGV during interpreter shutdown, after all its work is done, in the
CPU image (3 of 3 runs) and on a pyenv Python 3.9.18 host. On that host torch alone, and torch
with numba imported after the backward pass, crash the same way; in the image (Debian's Python
3.9.2) they exit cleanly. Output written before the crash is complete, but the exit status is 139:
make, shells and CI read that as a failed run, and it looks like "training segfaulted".

ds2 never runs a torch backward pass: training and eval use MindSpore only and `ds2 convert` reads
torch files without one. bench/train_speed.py trains its PyTorch model in a child process of its
own that ends with os._exit(0) once its figures are written. So a crash is reported as INFO (it
does not stop ds2, and `make envcheck` stays green), with what to do in scripts of one's own.
Each combination runs in a fresh interpreter, so the crash is observed, not suffered.
"""
from __future__ import annotations

import importlib.util
import os
import select
import signal
import subprocess
import sys
import time

BACKWARD = "x = torch.ones(8, 8, requires_grad=True)\n(x @ x).sum().backward()\n"
DONE = "print('backward done', flush=True)\n"
# name -> (module it needs besides torch, script)
COMBINATIONS = {
    "torch": (None, "import torch\n" + BACKWARD + DONE),
    "torch+mindspore": ("mindspore", "import mindspore\nimport torch\n" + BACKWARD + DONE),
    "torch+numba": ("numba", "import torch\n" + BACKWARD + "import numba\n" + DONE),
}


# The work (imports and one backward pass) takes 1-4 s on an idle machine and much longer on a loaded
# one; the exit after it takes well under a second. The teardown can also hang instead of crashing
# (2 of 14 envcheck runs in the image): a hang after the work counts like a crash after it.
WORK_TIMEOUT_S = 300
EXIT_TIMEOUT_S = 15


def _printed_done(stream, timeout: float) -> bool:
    """Whether the process printed "backward done" within `timeout` seconds (False at its end or the limit)."""
    end = time.monotonic() + timeout
    printed = b""
    while b"backward done" not in printed:
        left = end - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            return False
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            return False
        printed += chunk
    return True


def outcome(script: str) -> str:
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        done = _printed_done(proc.stdout, WORK_TIMEOUT_S)
        try:
            proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return f"work finished, then hung at exit (killed after {EXIT_TIMEOUT_S} s)" if done \
                else f"no result within {WORK_TIMEOUT_S} s"
    finally:
        proc.stdout.close()
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        return f"work finished, then {name} at exit" if done else f"{name} before the work finished"
    return f"exit {proc.returncode}"


def run(settings: dict) -> dict:
    if importlib.util.find_spec("torch") is None:
        return {"status": "skip", "summary": "torch is not installed (only ds2 convert and the benchmark use it)"}
    from importlib import metadata
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        version = "unknown"
    outcomes = {name: outcome(script) for name, (needs, script) in COMBINATIONS.items()
                if needs is None or importlib.util.find_spec(needs) is not None}
    crashed = [name for name, result in outcomes.items() if result.startswith("work finished, then")]
    details = {"torch": version, "outcomes": outcomes, "crashed_at_exit": crashed}
    summary = f"torch {version}, one backward pass: " + "; ".join(f"{k}: {v}" for k, v in outcomes.items())
    if crashed:
        summary += (" -- ds2 never runs a torch backward pass; a torch training script of your own that "
                    "does this crashes or hangs after its work unless it ends with sys.stdout.flush(); "
                    "os._exit(0)")
        return {"status": "info", "summary": summary, "details": details,
                "findings": ["torch-backward-crashes-at-exit"]}
    if any(result != "exit 0" for result in outcomes.values()):
        return {"status": "fail", "summary": summary, "details": details}
    return {"status": "pass", "summary": summary, "details": details}
