"""Memory this process may use (RAM, and the cgroup limit Docker's --memory sets) versus what the
configured model and batch need.

The estimate (bytes), from ds2's config; it aims at the right order of magnitude, not precision:

    parameters P   conv1 + conv2 (+ BatchNorm) + BiLSTM layers (2 directions x 4 gates x (in + hidden),
                   two biases) + output layer, with frequency bins after the convolutions
                   F1 = ceil(F0 / stride_f1), F2 = ceil(F1 / stride_f2) (padding k // 2)
    weights        P x 4 bytes x 4 when training (weights, gradients, Adam's two moments), x 1 for eval
    frames         train.max_batch_seconds x sample_rate / hop_length: input frames in one batch
    activations    conv: frames / stride_t1 x F1 x channels x 4 bytes x 3 (conv, BatchNorm, activation),
                   and again after conv2; LSTM: frames after the time strides x layers x 2 directions x
                   hidden x 4 bytes x 10 (gates, cell and hidden state, and their gradients); eval keeps no
                   activations for a backward pass, counted as a third of that
    runtime        1 GiB: Python, MindSpore's libraries and graph compilation (an imported MindSpore
                   alone holds about 0.45 GB)

For the report's model (preset seed: 5 x BiLSTM 1024, 160 s batches) this gives about 5.7 GiB for
training; for preset small (2 x BiLSTM 192, 64 s batches) about 1.2 GiB.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

from envcheck import cgroup
from envcheck.settings import config_value

GIB = 1024 ** 3
RUNTIME_BYTES = 1 * GIB


def meminfo() -> dict:
    """/proc/meminfo in bytes, e.g. {'MemTotal': ..., 'MemAvailable': ...}; {} where it cannot be read."""
    values = {}
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                key, rest = line.split(":", 1)
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return values


def parameter_count(model: dict, n_bins: int) -> Tuple[int, int, int]:
    """(parameters, frequency bins after conv1, after conv2) of ds2's network for this model config."""
    channels = int(model["conv_channels"])
    k1f, k1t = model["conv1_kernel"]
    k2f, k2t = model["conv2_kernel"]
    s1f = model["conv1_stride"][0]
    s2f = model["conv2_stride"][0]
    f1 = math.ceil(n_bins / s1f)
    f2 = math.ceil(f1 / s2f)
    hidden, layers = int(model["rnn_hidden"]), int(model["rnn_layers"])
    merged = hidden * (2 if model.get("rnn_merge") == "concat" else 1)
    conv = channels * k1f * k1t + channels * channels * k2f * k2t + 2 * 2 * channels
    rnn = 0
    layer_input = channels * f2
    for _ in range(layers):
        rnn += 2 * (4 * hidden * (layer_input + hidden) + 2 * 4 * hidden)
        layer_input = merged
    output = merged * len(model.get("labels", ""))
    return conv + rnn + output, f1, f2


def estimate(settings: dict, training: bool) -> Optional[dict]:
    model = config_value(settings, "model")
    if not model:
        return None
    n_bins = int(config_value(settings, "features.n_fft", 320)) // 2 + 1
    params, f1, f2 = parameter_count(model, n_bins)
    frames = float(config_value(settings, "train.max_batch_seconds", 160.0)) * \
        int(config_value(settings, "features.sample_rate", 16000)) / int(config_value(settings, "features.hop_length", 160))
    t1 = frames / model["conv1_stride"][1]
    t2 = t1 / model["conv2_stride"][1]
    channels, hidden, layers = int(model["conv_channels"]), int(model["rnn_hidden"]), int(model["rnn_layers"])
    weights = params * 4 * (4 if training else 1)
    activations = t1 * f1 * channels * 4 * 3 + t2 * f2 * channels * 4 * 3 + t2 * layers * 2 * hidden * 4 * 10
    if not training:
        activations /= 3
    total = weights + activations + RUNTIME_BYTES
    return {"parameters": params, "weights_bytes": int(weights), "activation_bytes": int(activations),
            "runtime_bytes": RUNTIME_BYTES, "total_bytes": int(total), "batch_frames": int(frames)}


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def run(settings: dict) -> dict:
    stage = settings.get("stage")
    memory = meminfo()
    total = memory.get("MemTotal")
    available = memory.get("MemAvailable")
    limit, limit_source = cgroup.memory_limit()
    usable = min(v for v in (total, limit) if v) if (total or limit) else None
    need = estimate(settings, training=stage != "eval")
    details = {"ram_bytes": total, "available_bytes": available, "cgroup_limit_bytes": limit,
               "cgroup_source": limit_source, "usable_bytes": usable, "estimate": need}
    have = f"{_gib(usable)} usable" if usable else "unknown memory"
    if limit:
        have += f" (cgroup limit {_gib(limit)} of {_gib(total or 0)} RAM)"
    if need is None:
        return {"status": "info", "summary": f"{have}; no model estimate (no ds2 config)", "details": details}
    details["estimate_total"] = _gib(need["total_bytes"])
    details["usable"] = _gib(usable) if usable else "unknown"
    what = f"{'eval' if stage == 'eval' else 'training'} needs about {_gib(need['total_bytes'])} " \
           f"({need['parameters'] / 1e6:.1f} M parameters, {need['batch_frames']} frames per batch)"
    if usable and usable < need["total_bytes"]:
        return {"status": "fail", "summary": f"{have}, but {what}", "details": details,
                "findings": ["memory-below-estimate"]}
    if available and available < need["total_bytes"]:
        details["available"] = _gib(available)
        return {"status": "warn", "summary": f"{have}, only {_gib(available)} available now; {what}",
                "details": details, "findings": ["memory-available-below-estimate"]}
    return {"status": "pass", "summary": f"{have}; {what}", "details": details}
