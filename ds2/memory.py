"""The memory plan: what this process may use, what the configured model and batches need, and the
batch settings `ds2 train` picks to fit.

    usable = usable_bytes()                     # least of RAM, the cgroup limit, MemAvailable
    need = estimate(cfg, training=True)         # MemoryPlan for the configured batch settings
    plan = fit(cfg, usable)                     # the settings ds2 train will use, or None

The estimate (bytes) aims at the right order of magnitude, not precision:

    weights        trainable parameters (ds2.shapes) x 4 bytes, x WEIGHT_COPIES: when training the
                   weights, gradients, Adam's two moments and oneDNN's copies of the LSTM weights in the
                   forward and backward kernels (bench/heap_trace.py: "oneDNN other", 3x the weights);
                   in eval the weights and the forward kernels' copy. Training on ds2's own LSTM operator
                   (train.lstm_kernel, ds2.kernels) keeps no copies per layer: OPERATOR_WEIGHT_COPIES
    frames         train.max_batch_seconds x sample_rate / hop_length: input frames in one batch
    activations    conv: frames after conv1's time stride x its frequency rows x channels x 4 bytes x 3
                   (conv, BatchNorm, activation), and again after conv2; LSTM: output frames x layers x
                   2 directions x hidden x 4 bytes x 10 (gates, cell and hidden state, their gradients);
                   eval keeps no activations for a backward pass, counted as a third of that
    runtime        Python, MindSpore's libraries and graph compilation (RUNTIME_BYTES)
    graphs         train.shapes=static: MindSpore compiles one graph per batch shape and each keeps its
                   own activation memory: train.num_buckets + 1 shapes, each GRAPH_MEMORY_FACTOR x the
                   activations above. train.shapes=dynamic: one graph for every shape, whose memory
                   follows the largest batch: DYNAMIC_MEMORY_FACTOR x the activations (on the operator,
                   which makes no scratchpads per primitive: OPERATOR_DYNAMIC_MEMORY_FACTOR). The factors
                   are calibrated on bench/shape_memory.py's and bench/train_speed.py's resident memory
                   (docs/performance.md has the figures).

So with static shapes the batch settings decide memory twice over: batch seconds (activations per
graph) and buckets (graphs); with dynamic shapes only batch seconds count. fit() picks what ds2 train
uses within the memory it has: the configured settings if they fit, else (static) fewer buckets (more
padding, less memory), then shorter batches. envcheck's memory probe and
the benchmark report the same numbers. Standard library only: envcheck reads it in its own process.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ds2 import cgroup
from ds2.config import Config
from ds2.kernels import trains_on_operator
from ds2.shapes import conv1_bins, output_bins, parameter_count

GIB = 1024 ** 3
RUNTIME_BYTES = 1 * GIB
GRAPH_MEMORY_FACTOR = 5.0     # activation memory per compiled graph, measured / the formula's
DYNAMIC_MEMORY_FACTOR = 3.15  # the one dynamic-shape graph's memory, measured / the formula's, fitted to
                              # the seed preset's peaks at 40 s and 160 s batches (docs/performance.md)
OPERATOR_DYNAMIC_MEMORY_FACTOR = 2.4  # the same on ds2's LSTM operator: the larger of its fits at 40 s (2.39)
                                      # and 160 s batches (2.10), so never below those peaks
WEIGHT_COPIES = {True: 7, False: 2}   # training, eval: see "weights" above
OPERATOR_WEIGHT_COPIES = 4            # training on the operator: weights, gradients, Adam's two moments
HEADROOM = 0.9                # fit() plans within this share of the usable memory
MIN_BUCKETS = 4               # fewer buckets pad LibriSpeech-like lengths by more than ~10 %
MIN_BATCH_SECONDS = 10.0


@dataclass(frozen=True)
class MemoryPlan:
    parameters: int
    weights_bytes: int
    activation_bytes: int
    runtime_bytes: int
    total_bytes: int
    batch_frames: int
    graphs: int
    num_buckets: int
    batch_seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def meminfo(path: str = "/proc/meminfo") -> dict:
    """/proc/meminfo in bytes, e.g. {'MemTotal': ..., 'MemAvailable': ...}; {} where it cannot be read."""
    values = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, rest = line.split(":", 1)
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return values


def usable_bytes() -> Optional[int]:
    """Memory this process may use now: the least of RAM, the cgroup limit and MemAvailable."""
    memory = meminfo()
    values = [v for v in (memory.get("MemTotal"), cgroup.memory_limit()[0], memory.get("MemAvailable")) if v]
    return min(values) if values else None


def estimate(cfg: Config, training: bool, num_buckets: Optional[int] = None,
             batch_seconds: Optional[float] = None) -> MemoryPlan:
    """Bytes the configured model and batches need (num_buckets / batch_seconds replace the config's)."""
    model, features = cfg.model, cfg.features
    params = parameter_count(model, features.n_bins)
    batch_seconds = cfg.train.max_batch_seconds if batch_seconds is None else batch_seconds
    num_buckets = cfg.train.num_buckets if num_buckets is None else num_buckets
    dynamic = cfg.train.shapes == "dynamic"
    graphs = 1 if dynamic else num_buckets + 1
    # Evaluation always runs MindSpore's kernel; the operator is measured with dynamic shapes only, so
    # with static shapes its estimate stays MindSpore's kernel's (higher).
    operator = training and dynamic and trains_on_operator("train.lstm_kernel", cfg.train.lstm_kernel, cfg.train.device)
    frames = batch_seconds * features.sample_rate / features.hop_length
    t1 = frames / model.conv1_stride[1]
    t2 = t1 / model.conv2_stride[1]
    channels, hidden = model.conv_channels, model.rnn_hidden
    weights = params * 4 * (OPERATOR_WEIGHT_COPIES if operator else WEIGHT_COPIES[training])
    activations = (t1 * conv1_bins(features.n_bins, model) * channels * 4 * 3
                   + t2 * output_bins(features.n_bins, model) * channels * 4 * 3
                   + t2 * model.rnn_layers * 2 * hidden * 4 * 10)
    if not training:
        activations /= 3
    if dynamic:
        activations *= OPERATOR_DYNAMIC_MEMORY_FACTOR if operator else DYNAMIC_MEMORY_FACTOR
    else:
        activations *= GRAPH_MEMORY_FACTOR * graphs
    total = weights + activations + RUNTIME_BYTES
    return MemoryPlan(parameters=params, weights_bytes=int(weights), activation_bytes=int(activations),
                      runtime_bytes=RUNTIME_BYTES, total_bytes=int(total), batch_frames=int(frames),
                      graphs=graphs, num_buckets=num_buckets, batch_seconds=batch_seconds)


def fewest_buckets(cfg: Config) -> int:
    """The fewest buckets fit() goes down to. With dynamic shapes fewer buckets save nothing: all of them."""
    if cfg.train.shapes == "dynamic":
        return cfg.train.num_buckets
    return min(MIN_BUCKETS, cfg.train.num_buckets)


def fit(cfg: Config, usable: int, training: bool = True) -> Optional[MemoryPlan]:
    """The plan for the batch settings ds2 train uses within HEADROOM x usable bytes: the configured
    ones if they fit; else fewer buckets (down to fewest_buckets); else, at that many buckets, the longest
    batch (down to MIN_BATCH_SECONDS, in whole seconds) that fits. None if nothing fits."""
    budget = usable * HEADROOM
    configured = estimate(cfg, training)
    if configured.total_bytes <= budget:
        return configured
    fewest = fewest_buckets(cfg)
    for buckets in range(configured.num_buckets - 1, fewest - 1, -1):
        need = estimate(cfg, training, num_buckets=buckets)
        if need.total_bytes <= budget:
            return need
    seconds = int(configured.batch_seconds)
    while seconds >= MIN_BATCH_SECONDS:
        need = estimate(cfg, training, num_buckets=fewest, batch_seconds=float(seconds))
        if need.total_bytes <= budget:
            return need
        seconds -= 1
    return None


def smallest(cfg: Config) -> MemoryPlan:
    """The plan fit() tries last: the fewest buckets (static shapes) and the shortest batches."""
    return estimate(cfg, True, num_buckets=fewest_buckets(cfg), batch_seconds=MIN_BATCH_SECONDS)
