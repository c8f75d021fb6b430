"""A torch backward pass, then a clean exit?

Measured on the pinned stack: torch 1.7.1 from the package index is the CUDA 10.2 build, and on a
machine without an NVIDIA driver its first backward pass tries to initialise CUDA ("Found no NVIDIA
driver on your system") and the process later dies with SIGSEGV during interpreter shutdown, after
all its work is done (12 of 12 runs of this probe's script; CUDA_VISIBLE_DEVICES= does not help).
Output written before that is complete, but the exit status is 139: make, shells and CI read that
as a failed run, and it looks like "training segfaulted".

ds2 never runs a torch backward pass: training and eval use MindSpore only and `ds2 convert` reads
torch files without one. bench/train_speed.py trains its PyTorch model in a child process that
ends with os._exit(0) once its figures are written. So the crash is reported as INFO (it does not
stop ds2, and `make envcheck` stays green), with what to do in scripts of one's own.
"""
from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys

SCRIPT = ("import torch\nx = torch.ones(8, 8, requires_grad=True)\n(x @ x).sum().backward()\n"
          "print('backward done', flush=True)\n")
TRIES = 3   # a crash in any try counts: the teardown crash need not happen every time


def run(settings: dict) -> dict:
    if importlib.util.find_spec("torch") is None:
        return {"status": "skip", "summary": "torch is not installed (only ds2 convert and the benchmark use it)"}
    from importlib import metadata
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        version = "unknown"
    outcomes = []
    for _ in range(TRIES):
        proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180)
        finished = "backward done" in proc.stdout
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            outcomes.append(f"work finished, then {name} at exit" if finished else f"{name} before the work finished")
        else:
            outcomes.append(f"exit {proc.returncode}")
        if proc.returncode < 0 and finished:
            break
    details = {"torch": version, "outcomes": outcomes}
    summary = f"torch {version}, one backward pass: " + "; ".join(outcomes)
    if any("at exit" in outcome for outcome in outcomes):
        summary += (" -- ds2 never runs a torch backward pass; a torch training script of your own exits "
                    "139 after its work unless it ends with sys.stdout.flush(); os._exit(0) (or use a CPU-only "
                    "torch build)")
        return {"status": "info", "summary": summary, "details": details,
                "findings": ["torch-backward-crashes-at-exit"]}
    if any(not outcome.startswith("exit 0") for outcome in outcomes):
        return {"status": "fail", "summary": summary, "details": details}
    return {"status": "pass", "summary": summary, "details": details}
