"""The benchmarks' one harness: child processes, memory readers and step planning.

    result = run_child(__file__, spec)                 # `python SCRIPT --child JSON` -> its last stdout line
    plan = epoch_plan(cfg, seed)                       # the benchmark corpus batched as `ds2 train` batches it
    budget = StepBudget.for_run(cfg, plan.batches, limit_gflops, seconds=180)   # how many steps to time
    step = mindspore_step(cfg)                         # ds2's compiled training step, as `ds2 train` builds it

Every measured run is a child process of its own, so its peak memory and thread pools are its own and
only one framework is loaded in it. Memory is read from /proc/self/status (VmRSS: resident now, VmHWM:
the peak) and page faults and kernel CPU time from getrusage.

Step counts follow the model's size, never its preset's name: a run times steps until it has spent its
time budget (at least `min_steps`, at most `max_steps`), and StepBudget.for_run sizes that budget from the
training FLOPs of the run's batches against the machine's GEMM limit, so a large model times a few long
steps and a small one many short ones, and a new preset is benchmarked without edits.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.corpus import librispeech_like_corpus  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Memory readers


def process_gib(key: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024 ** 2
    raise RuntimeError(f"no {key} in /proc/self/status")


def peak_gib() -> float:
    """The most memory this process has had resident (VmHWM), in GiB."""
    return process_gib("VmHWM")


@dataclass
class KernelCounters:
    """Minor page faults (memory touched fresh) and CPU seconds in the kernel since `start()`."""
    minor_faults: int = 0
    system_seconds: float = 0.0

    @classmethod
    def start(cls) -> "KernelCounters":
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(usage.ru_minflt, usage.ru_stime)

    def since(self) -> "KernelCounters":
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return KernelCounters(usage.ru_minflt - self.minor_faults, usage.ru_stime - self.system_seconds)


def fault_summary(faults_per_step: float, system_seconds_per_step: float) -> str:
    """Minor page faults per step (and the memory they touched fresh) and kernel CPU time per step."""
    fresh_gib = faults_per_step * resource.getpagesize() / 1024 ** 3
    return (f"{faults_per_step / 1e6:.2f} M minor page faults ({fresh_gib:.2f} GiB touched fresh), "
            f"{system_seconds_per_step:.2f} s CPU in the kernel")


# ---------------------------------------------------------------------------------------------
# Child processes


def run_child(script: str, spec: Dict, python: str = sys.executable, env: Optional[Dict[str, str]] = None,
              what: str = "") -> Dict:
    """Run `python SCRIPT --child JSON(spec)` in the checkout; its last stdout line is the result (JSON).
    Other stdout lines (e.g. oneDNN's verbose log) are passed through; stderr goes to ours as it comes.
    A failed child is a one-line error naming the run, after its own messages."""
    proc = subprocess.run([python, str(script), "--child", json.dumps(spec)], cwd=REPO,
                          env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE, text=True)
    *other, last = proc.stdout.strip().splitlines() or [""]
    if other:
        print("\n".join(other), flush=True)
    name = what or spec.get("name") or spec.get("framework", "benchmark")
    if proc.returncode != 0:
        raise SystemExit(f"{Path(script).name}: the {name} run failed (exit {proc.returncode}); "
                         f"its messages are above")
    return json.loads(last)


def thread_env(threads: int) -> Dict[str, str]:
    """The thread counts numpy's BLAS and OpenMP read when they load."""
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


# ---------------------------------------------------------------------------------------------
# Step planning


@dataclass
class EpochPlan:
    """The benchmark corpus batched as `ds2 train` batches it: batches as (utterance indices, padded width)."""
    durations: np.ndarray
    frames: np.ndarray
    labels: List[List[int]]
    batches: List[Tuple[List[int], int]]
    label_width: Dict[int, int]     # padded width -> label width (ds2 pads labels per bucket)


def epoch_plan(cfg, seed: int) -> EpochPlan:
    from ds2.batching import BatchSampler

    rng = np.random.default_rng(seed + 1)
    durations, frames, labels = librispeech_like_corpus(cfg, seed, rng)
    sampler = BatchSampler.from_config(frames, cfg, seed)
    return EpochPlan(durations, frames, labels, sampler_batches(sampler), sampler.label_width_of([len(l) for l in labels]))


def sampler_batches(sampler) -> List[Tuple[List[int], int]]:
    """The first epoch of a ds2.batching.BatchSampler as (utterance indices, padded width)."""
    return [(list(batch.indices), batch.width) for batch in sampler.epoch(0)]


def drawn(batches: Sequence, seed: int) -> List:
    """The epoch's batches in the benchmark's random order: every run with the same seed draws the same,
    so a run of fewer steps times a prefix of another's."""
    order = np.random.default_rng(seed).permutation(len(batches))
    return [batches[i] for i in order]


def plan_shapes(cfg, seed: int, count: int, order: str = "widest") -> List[Dict]:
    """The first `count` distinct (batch size, width) shapes of epoch 0, the widest first (order
    "widest") or the most frequent first ("frequent"), each with the utterances of one batch of that shape."""
    plan = epoch_plan(cfg, seed)
    by_shape, batches_of = {}, {}
    for indices, width in plan.batches:
        shape = (len(indices), width)
        by_shape.setdefault(shape, indices)
        batches_of[shape] = batches_of.get(shape, 0) + 1
    if order == "frequent":
        key = lambda item: (-batches_of[item[0]], -item[0][1])  # noqa: E731
    else:
        key = lambda item: (-item[0][1], -item[0][0])  # noqa: E731
    chosen = sorted(by_shape.items(), key=key)[:count]
    return [{"batch": size, "width": width, "frames": [int(plan.frames[i]) for i in indices],
             "labels": [plan.labels[i] for i in indices], "label_width": plan.label_width[width]}
            for (size, width), indices in chosen]


# A step's expected time: its training FLOPs at this share of the GEMM limit, plus a fixed cost per step
# (framework, optimizer, small operators), which is what dominates a small model's step. Measured: the
# seed model trains at 60-75 % of the limit, the small one near 25 % with about 0.2 s per step beside.
EXPECTED_LIMIT_SHARE = 0.6
EXPECTED_STEP_OVERHEAD_S = 0.2


@dataclass
class StepBudget:
    """Time steps until `seconds` are spent, at least `min_steps` and at most `max_steps` of them."""
    seconds: float
    min_steps: int
    max_steps: int

    def done(self, steps: int, elapsed: float) -> bool:
        return steps >= self.max_steps or (steps >= self.min_steps and elapsed >= self.seconds)

    @classmethod
    def exactly(cls, steps: int) -> "StepBudget":
        return cls(0.0, steps, steps)

    @classmethod
    def for_run(cls, cfg, batches: Sequence, frames: np.ndarray, limit_gflops: float, seconds: float,
                min_steps: int = 2, most: int = 24) -> "StepBudget":
        """A budget of `seconds` whose step cap follows the model's size: as many steps as its
        expected step time (the mean batch's training FLOPs over EXPECTED_LIMIT_SHARE of the limit, plus
        EXPECTED_STEP_OVERHEAD_S) fits in `seconds`, between min_steps and `most`. `batches`: the
        epoch's, as (utterance indices, width); `frames`: each utterance's frame count."""
        expected = expected_step_seconds(cfg, batches, frames, limit_gflops)
        cap = int(np.clip(round(seconds / expected), min_steps, most))
        return cls(seconds, min_steps, cap)


def expected_step_seconds(cfg, batches: Sequence, frames: np.ndarray, limit_gflops: float) -> float:
    from ds2.shapes import training_flops

    flops = np.mean([sum(training_flops(int(frames[i]), cfg) for i in indices) for indices, _ in batches])
    return float(flops / (EXPECTED_LIMIT_SHARE * limit_gflops * 1e9) + EXPECTED_STEP_OVERHEAD_S)


# ---------------------------------------------------------------------------------------------
# ds2's training step


def mindspore_step(cfg):
    """ds2's compiled training step, built as `ds2 train` builds it: step(features, frames, labels,
    label_lengths) -> loss (float), for numpy arrays. Configures MindSpore from cfg first."""
    import mindspore as ms
    from ds2.runtime import configure_mindspore
    from ds2.step import build_training_state

    configure_mindspore(cfg)
    model, _, _, train_step = build_training_state(cfg)
    model.set_train(True)
    lr = ms.Tensor(cfg.train.lr, ms.float32)

    def step(*arrays) -> float:
        loss, _, _ = train_step(*[a if isinstance(a, ms.Tensor) else ms.Tensor(a) for a in arrays], lr)
        return float(loss.asnumpy())

    return step


def pair_ratios(results: Dict[str, Dict]) -> List[str]:
    """An A/B's results in run order (A B A B ...): per pair, the second against the first: speed, CPU
    time per step where both runs measured it (pass2_cpu_s_per_step), and peak memory."""
    labels = list(results)
    lines = []
    for first, second in zip(labels[0::2], labels[1::2]):
        a, b = results[first], results[second]
        parts = [f"speed {b['audio_seconds_per_second'] / a['audio_seconds_per_second']:.2f}x"]
        if "pass2_cpu_s_per_step" in a and "pass2_cpu_s_per_step" in b:
            parts.append(f"CPU time per step {b['pass2_cpu_s_per_step'] / a['pass2_cpu_s_per_step']:.2f}x")
        parts.append(f"peak memory {b['peak_gib'] / a['peak_gib']:.2f}x")
        lines.append(f"{second} / {first}: {', '.join(parts)}")
    return lines


def write_record(path: str, record: Dict) -> Path:
    """`record` as JSON at `path` (folders made), with the command that measured it and how busy the
    machine was (the load averages): a benchmark's --json."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": sys.argv, **record, "load_average_1_5_15_min": os.getloadavg()},
                              indent=2) + "\n")
    return out


def milliseconds_per_call(fn, repeats: int, warmup: int) -> float:
    """fn's mean wall time over `repeats` calls, after `warmup` calls (compiling, caches)."""
    import time

    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def require_operator(parser, setting_key: str, operator: str) -> None:
    """parser.error with ds2.kernels' one-line reason when ds2's `operator` for `setting_key` cannot run."""
    from ds2.errors import UserError
    from ds2.kernels import chosen_kernel

    try:
        chosen_kernel(setting_key, operator, "CPU")
    except UserError as exc:
        parser.error(str(exc))
