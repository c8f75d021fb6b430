"""CPU instruction sets the stack's kernels use: AVX2/FMA on x86 (AVX-512 when present).

MindSpore's CPU kernels (nnacl, oneDNN) and PyTorch's pick AVX2 or AVX-512 code at run time; without
AVX2 they fall back to much slower code, and binaries built assuming AVX stop with SIGILL.
"""
from __future__ import annotations

import platform

X86_WANTED = ("avx", "avx2", "fma")
X86_NOTED = ("avx512f", "avx512_bf16", "amx_tile")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo"):
    """(model name, set of feature flags) of the first CPU listed."""
    model, flags = "unknown", set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "model name" and model == "unknown":
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def run(settings: dict) -> dict:
    machine = platform.machine()
    model, flags = cpu_flags()
    details = {"machine": machine, "model": model}
    if machine not in ("x86_64", "AMD64"):
        details["flags"] = sorted(flags)
        return {"status": "info", "summary": f"{machine} CPU ({model}): no x86 instruction-set checks apply",
                "details": details}
    present = {flag: flag in flags for flag in X86_WANTED + X86_NOTED}
    details["features"] = present
    listed = ", ".join(flag for flag, ok in present.items() if ok) or "none of " + ", ".join(X86_WANTED)
    if not present["avx"]:
        return {"status": "warn", "summary": f"{model}: no AVX; MindSpore/PyTorch kernels will be slow or stop with "
                "SIGILL", "details": details, "findings": ["cpu-no-avx"]}
    if not present["avx2"] or not present["fma"]:
        return {"status": "warn", "summary": f"{model}: has {listed}, but no AVX2/FMA: CPU training runs on slow "
                "fallback kernels", "details": details, "findings": ["cpu-no-avx2"]}
    return {"status": "pass", "summary": f"{model}: {listed}", "details": details}
