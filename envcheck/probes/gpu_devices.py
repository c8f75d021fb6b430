"""NVIDIA driver and GPUs (nvidia-smi), and whether MindSpore's CUDA kernels can run on them.

No GPU is a fact (INFO), not a problem, unless the configured device is GPU. A GPU's compute
capability is compared with the architectures MindSpore's GPU kernels were built for (read from the
wheel's libcuda_ops fat binaries): machine code for the same major version runs natively; otherwise
PTX for an older architecture is compiled by the driver at start-up (slow once, then cached); with
neither, the kernels cannot run.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess

from envcheck import elf, versions
from envcheck.settings import configured_device

# The oldest Linux driver that runs CUDA 11.x applications (CUDA minor-version compatibility).
MIN_DRIVER = "450.80.02"
QUERY = "index,name,driver_version,memory.total,compute_cap"


def gpu_needed(settings: dict) -> bool:
    return configured_device(settings) == "GPU" and \
        settings.get("stage") in (None, "train", "eval")


def mindspore_dir():
    """The installed mindspore package's folder, found without importing it, or None."""
    try:
        spec = importlib.util.find_spec("mindspore")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def kernel_architectures():
    """{'sass': [...], 'ptx': [...]} of the installed MindSpore's GPU kernels, or None."""
    package = mindspore_dir()
    if package is None:
        return None
    libraries = glob.glob(os.path.join(package, "lib", "plugin", "gpu", "libcuda_ops.so*"))
    if not libraries:
        return None
    archs = {"sass": set(), "ptx": set()}
    for library in libraries:
        found = elf.cuda_architectures(library)
        archs["sass"].update(found["sass"])
        archs["ptx"].update(found["ptx"])
    return {kind: sorted(values) for kind, values in archs.items()}


def support(compute_capability: str, archs: dict) -> str:
    """'native', 'ptx-jit' or 'unsupported' for a GPU of this compute capability ('8.6')."""
    major, minor = (int(p) for p in compute_capability.split(".")[:2])
    sm = major * 10 + minor
    if any(a // 10 == major and a % 10 <= minor for a in archs["sass"]):
        return "native"
    if any(a <= sm for a in archs["ptx"]):
        return "ptx-jit"
    return "unsupported"


def _query(smi: str):
    """(rows, error text) from nvidia-smi; drivers older than 510 lack the compute_cap field."""
    fields = QUERY
    for _ in range(2):
        proc = subprocess.run([smi, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode == 0:
            rows = [[c.strip() for c in line.split(",")] for line in proc.stdout.splitlines() if line.strip()]
            return [dict(zip(fields.split(","), row)) for row in rows], ""
        if "compute_cap" in proc.stdout + proc.stderr and fields.endswith(",compute_cap"):
            fields = fields[:-len(",compute_cap")]
            continue
        return None, (proc.stdout + proc.stderr).strip()
    return None, "nvidia-smi rejected the query"


def run(settings: dict) -> dict:
    needed = gpu_needed(settings)
    bad = "fail" if needed else "warn"
    device = configured_device(settings)
    nodes = sorted(glob.glob("/dev/nvidia[0-9]*"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    details = {"device": device, "gpu_needed": needed, "device_nodes": nodes, "CUDA_VISIBLE_DEVICES": visible}
    smi = shutil.which("nvidia-smi")
    if smi is None:
        if nodes:
            return {"status": bad, "summary": f"GPU device nodes {', '.join(nodes)} exist, but nvidia-smi is not on "
                    "PATH", "details": details, "findings": ["nvidia-smi-missing"]}
        if needed:
            return {"status": "fail", "summary": "no NVIDIA GPU is visible, but the configured device is GPU",
                    "details": details, "findings": ["gpu-not-present"]}
        return {"status": "info", "summary": f"no NVIDIA GPU: not present (device {device}; not needed)",
                "details": details}
    try:
        gpus, error = _query(smi)
    except (OSError, subprocess.TimeoutExpired) as exc:
        gpus, error = None, f"{type(exc).__name__}: {exc}"
    if gpus is None:
        details["error"] = error
        return {"status": bad, "summary": f"nvidia-smi fails: {error.splitlines()[0] if error else 'no output'}",
                "details": details, "findings": ["nvidia-smi-failed"], "output": error}
    archs = kernel_architectures()
    details["gpus"] = gpus
    details["kernel_architectures"] = archs
    problems, findings = [], []
    driver = gpus[0].get("driver_version", "") if gpus else ""
    if driver and versions.version_key(driver) is not None and \
            versions.version_key(driver) < versions.version_key(MIN_DRIVER):
        problems.append(f"driver {driver} is older than {MIN_DRIVER}, the oldest that runs CUDA 11")
        findings.append("driver-too-old")
    for gpu in gpus:
        cc = gpu.get("compute_cap")
        if cc and archs:
            gpu["mindspore_kernels"] = support(cc, archs)
            if gpu["mindspore_kernels"] == "unsupported":
                problems.append(f"GPU {gpu['index']} ({gpu['name']}, compute capability {cc}) is older than every "
                                "architecture MindSpore's kernels were built for")
                findings.append("gpu-arch-unsupported")
            elif gpu["mindspore_kernels"] == "ptx-jit":
                problems.append(f"GPU {gpu['index']} ({gpu['name']}, compute capability {cc}) has no prebuilt "
                                "MindSpore kernels; the driver compiles their PTX at start-up")
                findings.append("gpu-ptx-jit")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        problems.append(f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU")
        findings.append("gpus-hidden")
    names = ", ".join(f"{g['index']}: {g['name']} ({g.get('memory.total', '?')} MiB, cc {g.get('compute_cap', '?')})"
                      for g in gpus)
    summary = f"driver {driver}; {len(gpus)} GPU(s): {names}"
    if problems:
        details["problem"] = "; ".join(problems)
        blocking = {"driver-too-old", "gpu-arch-unsupported", "gpus-hidden"}
        status = bad if set(findings) & blocking else "warn"
        return {"status": status, "summary": summary + "; " + "; ".join(problems), "details": details,
                "findings": findings}
    return {"status": "pass", "summary": summary, "details": details}
