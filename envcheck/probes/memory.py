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
    graphs         MindSpore compiles one graph per batch shape and each keeps its own activation
                   memory: train.num_buckets + 1 shapes, each GRAPH_MEMORY_FACTOR x the activations
                   above. Measured (bench/train_speed.py, /proc/self/status): the seed model's RSS grew
                   by 4.4, 3.0 and 4.0 GiB with its first three shapes (2x1428, 2x1562, 3x1224 frames)
                   where the formula gives 0.6-0.8 GiB each; the small preset peaked at 3.6 GiB with 10
                   shapes. A factor of 5 overestimates those runs by 10-30 %.

So the batch settings decide memory twice over: batch seconds (activations per graph) and buckets
(graphs). fit() picks what ds2 train uses within the memory it has: the configured settings if
they fit, else fewer buckets (more padding, less memory), then shorter batches. For the report's
model (preset seed: 5 x BiLSTM 1024, 160 s batches, 16 buckets) the estimate is about 290 GiB; on a
24 GiB machine fit() gives 4 buckets of about 30 s batches. Preset small needs about 7.4 GiB.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

from envcheck import cgroup
from envcheck.settings import config_value

GIB = 1024 ** 3
RUNTIME_BYTES = 1 * GIB
GRAPH_MEMORY_FACTOR = 5.0     # measured activation memory per compiled graph / the formula's
HEADROOM = 0.9                # fit() plans within this share of the usable memory
MIN_BUCKETS = 4               # fewer buckets pad LibriSpeech-like lengths by more than ~10 %
MIN_BATCH_SECONDS = 10.0


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


def estimate(settings: dict, training: bool, num_buckets: Optional[int] = None,
             batch_seconds: Optional[float] = None) -> Optional[dict]:
    """Bytes the configured model and batch need (num_buckets / batch_seconds override the config's)."""
    model = config_value(settings, "model")
    if not model:
        return None
    n_bins = int(config_value(settings, "features.n_fft", 320)) // 2 + 1
    params, f1, f2 = parameter_count(model, n_bins)
    if batch_seconds is None:
        batch_seconds = float(config_value(settings, "train.max_batch_seconds", 160.0))
    if num_buckets is None:
        num_buckets = int(config_value(settings, "train.num_buckets", 16))
    graphs = num_buckets + 1
    frames = batch_seconds * \
        int(config_value(settings, "features.sample_rate", 16000)) / int(config_value(settings, "features.hop_length", 160))
    t1 = frames / model["conv1_stride"][1]
    t2 = t1 / model["conv2_stride"][1]
    channels, hidden, layers = int(model["conv_channels"]), int(model["rnn_hidden"]), int(model["rnn_layers"])
    weights = params * 4 * (4 if training else 1)
    activations = t1 * f1 * channels * 4 * 3 + t2 * f2 * channels * 4 * 3 + t2 * layers * 2 * hidden * 4 * 10
    if not training:
        activations /= 3
    activations *= GRAPH_MEMORY_FACTOR * graphs
    total = weights + activations + RUNTIME_BYTES
    return {"parameters": params, "weights_bytes": int(weights), "activation_bytes": int(activations),
            "runtime_bytes": RUNTIME_BYTES, "total_bytes": int(total), "batch_frames": int(frames),
            "graphs": graphs, "num_buckets": num_buckets, "batch_seconds": batch_seconds}


def fit(settings: dict, usable_bytes: int, training: bool = True) -> Optional[dict]:
    """The estimate for the batch settings ds2 train uses within HEADROOM x usable_bytes: the
    configured ones if they fit; else fewer buckets (down to MIN_BUCKETS); else, at MIN_BUCKETS, the
    longest batch (down to MIN_BATCH_SECONDS, in whole seconds) that fits. None if nothing fits."""
    budget = usable_bytes * HEADROOM
    configured = estimate(settings, training)
    if configured is None or configured["total_bytes"] <= budget:
        return configured
    fewest = min(MIN_BUCKETS, configured["num_buckets"])
    for buckets in range(configured["num_buckets"] - 1, fewest - 1, -1):
        need = estimate(settings, training, num_buckets=buckets)
        if need["total_bytes"] <= budget:
            return need
    seconds = int(configured["batch_seconds"])
    while seconds >= MIN_BATCH_SECONDS:
        need = estimate(settings, training, num_buckets=fewest, batch_seconds=float(seconds))
        if need["total_bytes"] <= budget:
            return need
        seconds -= 1
    return None


def usable_bytes() -> Optional[int]:
    """Memory this process may use now: the least of RAM, the cgroup limit and MemAvailable."""
    memory = meminfo()
    values = [v for v in (memory.get("MemTotal"), cgroup.memory_limit()[0], memory.get("MemAvailable")) if v]
    return min(values) if values else None


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
           f"({need['parameters'] / 1e6:.1f} M parameters, {need['batch_frames']} frames per batch, " \
           f"{need['graphs']} compiled shapes)"
    if stage != "eval" and usable:
        # What ds2 train computes at its start (usable_bytes): free memory counts too.
        fitted = fit(settings, min(v for v in (usable, available) if v))
        if fitted is None:
            smallest = estimate(settings, True, num_buckets=min(MIN_BUCKETS, need["num_buckets"]),
                                batch_seconds=MIN_BATCH_SECONDS)
            details["estimate_total"] = _gib(smallest["total_bytes"])
            return {"status": "fail", "summary": f"{have}, but {what}; even {smallest['num_buckets']} buckets "
                    f"of {MIN_BATCH_SECONDS:g} s batches need {_gib(smallest['total_bytes'])}",
                    "details": details, "findings": ["memory-below-estimate"]}
        if (fitted["num_buckets"], fitted["batch_seconds"]) != (need["num_buckets"], need["batch_seconds"]):
            details["fitted"] = fitted
            return {"status": "warn", "summary": f"{have}, but {what}; ds2 train will use "
                    f"train.num_buckets={fitted['num_buckets']} train.max_batch_seconds={fitted['batch_seconds']:g} "
                    f"(about {_gib(fitted['total_bytes'])}) unless train.fit_memory=false",
                    "details": details, "findings": ["batch-reduced-to-fit"]}
    if usable and usable < need["total_bytes"]:
        return {"status": "fail", "summary": f"{have}, but {what}", "details": details,
                "findings": ["memory-below-estimate"]}
    if available and available < need["total_bytes"]:
        details["available"] = _gib(available)
        return {"status": "warn", "summary": f"{have}, only {_gib(available)} available now; {what}",
                "details": details, "findings": ["memory-available-below-estimate"]}
    return {"status": "pass", "summary": f"{have}; {what}", "details": details}
