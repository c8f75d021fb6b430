"""Shared libraries that MindSpore's GPU plugins need, and whether the dynamic loader will find them.

The wheel ships one plugin per CUDA version, mindspore/lib/plugin/libmindspore_gpu.so.<cuda> (11.1
and 11.6), and loads the first whose libraries all resolve. For each plugin this reads DT_NEEDED,
RPATH and RUNPATH from its ELF file and looks every library up as the loader does: RPATH ($ORIGIN
expanded), LD_LIBRARY_PATH, RUNPATH, the ldconfig cache, the default directories. A library that
is missing there but sits in a pip wheel directory (site-packages/nvidia/*/lib) is reported as such:
pip installs those files, but nothing puts them on the loader's path. Only the plugins' direct needs
are checked; libraries the wheel ships itself resolve through its RPATH.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

from envcheck import elf
from envcheck.probes.gpu_devices import gpu_needed, mindspore_dir
from envcheck.settings import configured_device

# Where each CUDA 11 library comes from. libcuda.so.1 is the driver's own: on the host, or mounted into
# a container by the NVIDIA container runtime (docker run --gpus all).
PROVIDERS = {
    "libcudart.so.11.0": "nvidia-cuda-runtime-cu11",
    "libcublas.so.11": "nvidia-cublas-cu11",
    "libcublasLt.so.11": "nvidia-cublas-cu11",
    "libcudnn.so.8": "nvidia-cudnn-cu11<9",
    "libcufft.so.10": "nvidia-cufft-cu11",
    "libcurand.so.10": "nvidia-curand-cu11",
    "libcusolver.so.11": "nvidia-cusolver-cu11",
    "libcusparse.so.11": "nvidia-cusparse-cu11",
    "libnvrtc.so.11.2": "nvidia-cuda-nvrtc-cu11",
    "libnvrtc.so.11.1": "the CUDA 11.1 toolkit (no pip wheel has this soname)",
    "libcuda.so.1": "the NVIDIA driver (host), mounted into containers by the NVIDIA container runtime",
}
DEFAULT_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib", "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu")


def ldconfig_cache() -> dict:
    """soname -> path from `ldconfig -p` (64-bit entries), or {} without ldconfig."""
    ldconfig = shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig")
                                                 if os.path.exists(p)), None)
    if ldconfig is None:
        return {}
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    cache = {}
    for line in out.splitlines():
        if "=>" not in line or "(" not in line:
            continue
        left, path = line.split("=>", 1)
        soname, _, flags = left.strip().partition(" ")
        if "64" in flags:  # (libc6,x86-64) or (libc6,AArch64); skip 32-bit entries
            cache.setdefault(soname, path.strip())
    return cache


def wheel_library_dirs() -> list:
    """site-packages/nvidia/<component>/lib directories of installed nvidia-*-cu11 wheels."""
    dirs = []
    for entry in sys.path:
        dirs += sorted(glob.glob(os.path.join(entry or ".", "nvidia", "*", "lib")))
    return dirs


def resolve(plugin: str, cache: dict, wheel_dirs: list) -> dict:
    entries = elf.dynamic_entries(plugin)
    origin = os.path.dirname(plugin)

    def expand(paths):
        return [p.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for p in paths]

    ld_library_path = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    search = (expand(entries["rpath"]) if not entries["runpath"] else []) + ld_library_path + expand(entries["runpath"])
    resolved, missing, off_path = {}, [], {}
    for soname in entries["needed"]:
        path = next((os.path.join(d, soname) for d in search if os.path.exists(os.path.join(d, soname))), None)
        path = path or cache.get(soname) or next((os.path.join(d, soname) for d in DEFAULT_DIRS
                                                  if os.path.exists(os.path.join(d, soname))), None)
        if path:
            resolved[soname] = os.path.normpath(path)
            continue
        missing.append(soname)
        in_wheel = next((d for d in wheel_dirs if os.path.exists(os.path.join(d, soname))), None)
        if in_wheel:
            off_path[soname] = in_wheel
    return {"plugin": plugin, "needed": len(entries["needed"]), "resolved": resolved, "missing": missing,
            "installed_but_not_on_loader_path": off_path}


def run(settings: dict) -> dict:
    needed = gpu_needed(settings)
    device = configured_device(settings)
    root = mindspore_dir()
    if root is None:
        return {"status": "fail" if needed else "skip", "summary": "mindspore is not installed",
                "findings": ["module-missing"] if needed else [], "details": {"missing_module": "mindspore"}}
    plugins = sorted(glob.glob(os.path.join(root, "lib", "plugin", "libmindspore_gpu.so.*")))
    if not plugins:
        return {"status": "fail" if needed else "info", "summary": "this MindSpore build has no GPU plugin "
                "(lib/plugin/libmindspore_gpu.so.*)", "details": {"mindspore": root},
                "findings": ["gpu-plugin-missing"] if needed else []}
    cache, wheel_dirs = ldconfig_cache(), wheel_library_dirs()
    checked = [resolve(p, cache, wheel_dirs) for p in plugins]
    best = min(checked, key=lambda c: len(c["missing"]))
    name = os.path.basename(best["plugin"])
    gpu_present = bool(glob.glob("/dev/nvidia[0-9]*"))
    details = {"plugins": checked, "wheel_library_dirs": wheel_dirs, "device": device,
               "gpu_present": gpu_present}
    if not best["missing"]:
        return {"status": "pass", "summary": f"{name}: all {best['needed']} libraries it needs resolve",
                "details": details}
    missing = best["missing"]
    off_path = best["installed_but_not_on_loader_path"]
    packages = sorted({PROVIDERS[s] for s in missing if s in PROVIDERS and s not in off_path
                       and PROVIDERS[s].startswith("nvidia-")})
    details.update(missing=", ".join(missing), pip_install=" ".join(f"'{p}'" for p in packages),
                   ld_library_path=":".join(sorted(set(off_path.values()))),
                   providers="; ".join(f"{s}: {PROVIDERS.get(s, 'unknown')}" for s in missing))
    findings = ["gpu-libs-missing"] + (["gpu-libs-not-on-loader-path"] if off_path else [])
    summary = f"{name} cannot load: {len(missing)} of {best['needed']} libraries unresolved ({', '.join(missing)})"
    if off_path:
        summary += f"; {len(off_path)} of them are installed in nvidia wheel directories not on LD_LIBRARY_PATH"
    if needed:
        return {"status": "fail", "summary": summary, "details": details, "findings": findings}
    if gpu_present:
        return {"status": "warn", "summary": summary + f" (a GPU is present; device is {device})",
                "details": details, "findings": findings}
    return {"status": "info", "summary": f"GPU plugin not usable here (no GPU; device {device}): "
            f"{len(missing)} CUDA libraries absent", "details": details}
