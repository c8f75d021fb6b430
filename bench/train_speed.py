"""Training speed: ds2 (MindSpore) against the same DeepSpeech2 in PyTorch, on a LibriSpeech-like mix.

    python bench/train_speed.py                 # seed and small presets, both frameworks (~15 min)
    python bench/train_speed.py --short         # the regression check (make bench): ~75 s on 2 cores
    python bench/train_speed.py --presets small --threads 1,2 --json runs/bench/speed.json
    python bench/train_speed.py --torch-python /opt/torch-new/bin/python   # another torch build

For every (preset, framework, thread count) a fresh child process (so peak memory and thread pools
are its own) trains on the same synthetic corpus: utterance durations drawn from a LibriSpeech-like
mix (1-35 s, mean about 12.7 s, like train-clean-100), labels at 15 characters per second, random
features stored as .npy files and read back by a background loader, as a feature cache is.

- ds2 batches as `ds2 train` does: length buckets with a cap on audio seconds per batch
  (train.max_batch_seconds); one compiled graph per (batch size, width) shape, or one for all of
  them with train.shapes=dynamic (--shapes static,dynamic runs both, side by side).
- PyTorch trains the very batches ds2 trains (the same utterances, padded widths and labels), so
  peak memory and throughput compare at the same batches; its LSTMs run on the padded batch.
  --torch-batches pad-to-longest batches as deepspeech.pytorch does instead: shuffled utterances
  in batches of a fixed size (max_batch_seconds / mean duration, the same audio per step on
  average), padded to the longest; --torch-packed-lstm runs its LSTMs on packed sequences as
  deepspeech.pytorch does (the pinned torch 1.7.1 is several times slower that way on CPU).

Every preset runs at its configured batches (seed: 16 buckets of <= 160 s). --short, the quick
regression check, runs the seed preset at 40 s batches (train.max_batch_seconds=40, shown in the
table) and leaves out the PyTorch seed run: about 75 s.

Both take the same loader thread (ds2.batching.Prefetcher), the same thread count, Adam, clipping,
and CTC loss. Each times `--steps` batches drawn at random from its epoch plan (PyTorch on ds2's
batches: the first of ds2's draw), after one untimed step per distinct shape (graph compile for
MindSpore, allocator warm-up for PyTorch).

Reported per run: seconds per step; throughput in audio seconds per wall second (timed steps'
real audio / their wall time, input waits included); the model's achieved GFLOP/s (the training FLOPs
of the timed steps' real frames, ds2.shapes.training_flops, padding excluded, over their wall time) and
its share of the machine's fp32 GEMM limit (the best of numpy's and MindSpore's matrix-product rates on
GEMM_SHAPES, measured in a child of its own with the same threads before the runs); padding share (padded frames / computed
frames over the whole epoch plan); stall share (time waiting for the loader / step time); peak
resident memory, beside envcheck's estimate of MindSpore's for the shapes the run compiled; warm-up (compile) time; projected hours for one train-clean-100 epoch (100.6 h
of audio / throughput). Results as a table and, with --json, a JSON file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.corpus import CORPUS_SIZE, TRAIN_CLEAN_100_HOURS, librispeech_like_corpus  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Batch plans: lists of (utterance indices, padded width)


def ds2_plan(sampler):
    """The first epoch of a ds2.batching.BatchSampler."""
    return [(list(batch.indices), batch.width) for batch in sampler.epoch(0)]


def pad_to_longest_plan(frames: np.ndarray, batch_size: int, seed: int):
    order = np.random.default_rng(seed).permutation(len(frames))
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return [(batch, int(frames[batch].max())) for batch in batches]


def padding_share(plan, frames: np.ndarray) -> float:
    computed = sum(len(indices) * width for indices, width in plan)
    real = sum(int(frames[indices].sum()) for indices, _ in plan)
    return 1.0 - real / computed


# ---------------------------------------------------------------------------------------------
# The machine's limit: fp32 matrix products

# (m, k, n): a square product, and one shaped like a BiLSTM layer's input projection over a batch.
GEMM_SHAPES = ((2048, 2048, 2048), (4000, 2048, 4096))
GEMM_REPEATS = 5


def measure_gemm(spec: Dict) -> Dict:
    """GFLOP/s of fp32 matrix products with numpy and with MindSpore: the best of GEMM_REPEATS per shape."""
    import mindspore as ms
    from mindspore import ops

    from ds2.config import load_config
    from ds2.runtime import configure_mindspore

    cfg = load_config("small", overrides=[f"train.threads={spec['threads']}"])
    configure_mindspore(cfg)
    matmul = ms.jit(ops.matmul)
    rng = np.random.default_rng(0)
    rates: Dict[str, Dict[str, float]] = {"numpy": {}, "mindspore": {}}
    for m, k, n in GEMM_SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        a_ms, b_ms = ms.Tensor(a), ms.Tensor(b)
        runs = {"numpy": lambda: a @ b, "mindspore": lambda: matmul(a_ms, b_ms).asnumpy()}
        for name, run in runs.items():
            run()   # warm-up: thread pools, kernel selection, graph compile
            best = float("inf")
            for _ in range(GEMM_REPEATS):
                start = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - start)
            rates[name][f"{m}x{k}x{n}"] = 2 * m * k * n / best / 1e9
    limit = max(rate for by_shape in rates.values() for rate in by_shape.values())
    return {"framework": "gemm", "threads": spec["threads"], "gflops": rates, "limit_gflops": limit}


# ---------------------------------------------------------------------------------------------
# One measured run (child process)


def peak_memory_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # ru_maxrss is KiB on Linux


def mindspore_stepper(cfg, n_bins: int, threads: int):
    import mindspore as ms
    from ds2.model import DeepSpeech2, TrainNetwork
    from ds2.runtime import configure_mindspore
    from ds2.step import build_optimizer, configured_train_step

    cfg.train.threads = threads
    configure_mindspore(cfg)
    model = DeepSpeech2(cfg.model, n_bins)
    optimizer = build_optimizer(model, cfg.train)
    train_step = configured_train_step(TrainNetwork(model), optimizer, cfg)
    model.set_train(True)
    lr = ms.Tensor(cfg.train.lr, ms.float32)

    def step(padded) -> float:
        loss, _, _ = train_step(ms.Tensor(padded.features), ms.Tensor(padded.frames), ms.Tensor(padded.labels),
                                ms.Tensor(padded.label_lengths), lr)
        return float(loss.asnumpy())

    return step


def torch_stepper(cfg, n_bins: int, threads: int, packed: bool = False):
    import torch
    from bench.torch_ds2 import TorchDeepSpeech2

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.train.seed)
    model = TorchDeepSpeech2(cfg.model, n_bins, packed=packed)
    model.train()
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    optimizer = torch.optim.Adam([{"params": decay, "weight_decay": cfg.train.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=cfg.train.lr, eps=1e-8)
    ctc = torch.nn.CTCLoss(blank=0, reduction="none", zero_infinity=True)

    def step(padded) -> float:
        log_probs, lengths = model(torch.from_numpy(padded.features), torch.from_numpy(padded.frames).long())
        loss = ctc(log_probs, torch.from_numpy(padded.labels).long(), lengths,
                   torch.from_numpy(padded.label_lengths).long()).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        return float(loss.detach())

    return step


def measure(spec: Dict) -> Dict:
    """Train `spec['steps']` timed steps of one framework on one preset; return the figures."""
    from ds2.batching import BatchSampler, Prefetcher, pad_batch
    from ds2.config import load_config
    from ds2.memory import estimate as memory_estimate
    from ds2.shapes import training_flops

    if spec["framework"] == "gemm":
        return measure_gemm(spec)

    cfg = load_config(spec["preset"], overrides=spec["overrides"])
    n_bins = cfg.features.n_bins
    frame_seconds = cfg.features.hop_length / cfg.features.sample_rate
    rng = np.random.default_rng(spec["seed"] + 1)
    durations, frames, labels = librispeech_like_corpus(cfg, spec["seed"], rng)

    same_batches = spec["framework"] == "mindspore" or spec.get("torch_batches", "ds2") == "ds2"
    if same_batches:
        batching = f"{cfg.train.num_buckets} buckets, <= {cfg.train.max_batch_seconds:g} s/batch"
        if spec["framework"] == "mindspore":
            batching += f", {cfg.train.shapes} shapes"
        sampler = BatchSampler.from_config(frames, cfg, spec["seed"])
        plan = ds2_plan(sampler)
        # As ds2 train pads them: a fixed label width per bucket, so labels never add a graph shape.
        label_width = sampler.label_width_of([len(l) for l in labels])
    else:
        batch_size = max(1, round(cfg.train.max_batch_seconds / float(durations.mean())))
        batching = f"pad to longest, {batch_size}/batch"
        plan = pad_to_longest_plan(frames, batch_size, spec["seed"])
        label_width = None  # PyTorch pads labels to the longest in each batch
    # The same draw for every framework: with the same batches, the same timed steps.
    timed = [plan[i] for i in rng.permutation(len(plan))[:spec["steps"]]]   # fewer steps: a prefix of the same draw
    warmup = list({width_key(b): b for b in timed}.values()) if spec["framework"] == "mindspore" else timed[:1]

    if spec["framework"] == "mindspore":
        step = mindspore_stepper(cfg, n_bins, spec["threads"])
    else:
        packed = spec.get("torch_packed_lstm", False)
        step = torch_stepper(cfg, n_bins, spec["threads"], packed=packed)
        batching += ", packed LSTM" if packed else ", LSTM on the padded batch"

    with tempfile.TemporaryDirectory(prefix="ds2-bench-") as store:
        needed = sorted({i for indices, _ in warmup + timed for i in indices})
        for i in needed:  # the feature cache: one .npy per utterance, read by the loader thread
            np.save(os.path.join(store, f"{i}.npy"),
                    rng.standard_normal((n_bins, int(frames[i])), dtype=np.float32))

        def load(item):
            indices, width = item
            features = [np.load(os.path.join(store, f"{i}.npy")) for i in indices]
            width_of_labels = label_width[width] if label_width else max(len(labels[i]) for i in indices)
            return pad_batch(indices, width, features, [labels[i] for i in indices], n_bins,
                             width_of_labels, frame_seconds)

        start = time.perf_counter()
        for item in warmup:
            step(load(item))
        warmup_seconds = time.perf_counter() - start

        step_seconds, waits, audio, losses, shapes = [], [], [], [], []
        prefetch = Prefetcher(timed, load)
        try:
            batches = iter(prefetch)
            while True:
                begin = time.perf_counter()
                padded = next(batches, None)
                if padded is None:
                    break
                ready = time.perf_counter()
                losses.append(step(padded))
                step_seconds.append(time.perf_counter() - begin)
                waits.append(ready - begin)
                audio.append(padded.audio_seconds)
                shapes.append(list(padded.features.shape[::3]))   # [batch size, padded frames]
        finally:
            prefetch.close()

    throughput = sum(audio) / sum(step_seconds)
    model_flops = sum(training_flops(int(frames[i]), cfg) for indices, _ in timed for i in indices)
    # For the shapes this run compiled (one graph each), not for every bucket of a whole epoch.
    estimate = memory_estimate(cfg, training=True, num_buckets=len(warmup) - 1)
    return {
        "preset": spec["preset"], "framework": spec["framework"], "threads": spec["threads"],
        "shapes": cfg.train.shapes if spec["framework"] == "mindspore" else None,
        "batching": batching, "same_batches_as_ds2": same_batches, "overrides": spec["overrides"],
        "steps": len(step_seconds), "seconds_per_step": float(np.mean(step_seconds)),
        "audio_seconds_per_step": float(np.mean(audio)),
        "audio_seconds_per_second": throughput,
        "model_gflops_per_second": model_flops / sum(step_seconds) / 1e9,
        "padding_share": padding_share(plan, frames),
        "padding_share_timed": padding_share(timed, frames),
        "stall_share": sum(waits) / sum(step_seconds),
        "peak_memory_gib": peak_memory_gib(),
        "envcheck_memory_estimate_gib": (estimate.total_bytes / 1024 ** 3
                                         if spec["framework"] == "mindspore" else None),
        "warmup_seconds": warmup_seconds, "warmup_steps": len(warmup),
        "epoch_hours_train_clean_100": TRAIN_CLEAN_100_HOURS / throughput,
        "batches_per_epoch": len(plan), "mean_duration": float(durations.mean()),
        "losses": losses, "step_shapes": shapes, "step_seconds": step_seconds,
        "framework_version": framework_version(spec["framework"]),
    }


def framework_version(framework: str) -> str:
    module = __import__(framework)
    return module.__version__


def width_key(item):
    indices, width = item
    return len(indices), width


# ---------------------------------------------------------------------------------------------
# Driver


def run_child(spec: Dict, python: str) -> Dict:
    """One run in its own interpreter: its own peak memory and thread pools, one framework loaded."""
    threads = str(spec["threads"])  # numpy's BLAS reads these when it loads
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    proc = subprocess.run([python, __file__, "--child", json.dumps(spec)], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark run {spec} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def environment() -> Dict:
    """Versions from package metadata: this process imports neither framework (see run_child)."""
    from importlib import metadata
    from ds2.checkpoint.storage import cpu_model
    from ds2.runtime import usable_cpus

    info = {"python": platform.python_version(), "machine": platform.machine(), "processor": cpu_model(),
            "usable_cpus": usable_cpus(), "load_average_1_5_15_min": os.getloadavg()}
    for package in ("mindspore", "torch", "numpy"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def table(results: List[Dict]) -> str:
    header = ("preset", "framework", "thr", "batching", "s/step", "audio s/step", "audio s/s", "model GFLOP/s",
              "of GEMM limit", "padding", "stall", "peak GiB", "memory est.", "warm-up s", "epoch h (100.6 h)")
    rows = [header]
    for r in results:
        rows.append((r["preset"], f"{r['framework']} {r['framework_version']}", str(r["threads"]), r["batching"],
                     f"{r['seconds_per_step']:.2f}", f"{r['audio_seconds_per_step']:.1f}",
                     f"{r['audio_seconds_per_second']:.2f}", f"{r['model_gflops_per_second']:.1f}",
                     f"{100 * r['limit_share']:.0f} %", f"{100 * r['padding_share']:.1f} %",
                     f"{100 * r['stall_share']:.2f} %", f"{r['peak_memory_gib']:.2f}",
                     "-" if r["envcheck_memory_estimate_gib"] is None else f"{r['envcheck_memory_estimate_gib']:.2f}",
                     f"{r['warmup_seconds']:.1f}", f"{r['epoch_hours_train_clean_100']:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ratios(results: List[Dict]) -> List[str]:
    lines = []
    for r in results:
        if r["framework"] != "mindspore":
            continue
        for other in results:
            if other["framework"] == "torch" and (other["preset"], other["threads"]) == (r["preset"], r["threads"]):
                which = "the same batches" if other["same_batches_as_ds2"] else "its own pad-to-longest batches"
                lines.append(f"{r['preset']} ({r['threads']} threads, {r['shapes']} shapes): ds2 / PyTorch "
                             f"{other['framework_version']} on {which}: throughput = "
                             f"{r['audio_seconds_per_second'] / other['audio_seconds_per_second']:.2f}x, "
                             f"peak memory = {r['peak_memory_gib'] / other['peak_memory_gib']:.2f}x")
            if (other["framework"] == "mindspore" and (other["preset"], other["threads"]) == (r["preset"], r["threads"])
                    and (r["shapes"], other["shapes"]) == ("dynamic", "static")):
                lines.append(f"{r['preset']} ({r['threads']} threads): ds2 dynamic / static shapes: throughput "
                             f"{r['audio_seconds_per_second'] / other['audio_seconds_per_second']:.2f}x, peak memory "
                             f"{r['peak_memory_gib'] / other['peak_memory_gib']:.2f}x")
    return lines


def planned_runs(frameworks: Sequence[str], shape_modes: Sequence[str]) -> List:
    """(framework, extra overrides) per run: ds2 once per train.shapes mode asked for (none asked: the
    preset's own setting), PyTorch once."""
    runs = []
    for framework in frameworks:
        if framework == "mindspore" and shape_modes:
            runs += [(framework, [f"train.shapes={mode}"]) for mode in shape_modes]
        else:
            runs.append((framework, []))
    return runs


def parse_list(text: str, kind=str) -> List:
    return [kind(v) for v in text.split(",") if v]


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        help="the quick regression run (make bench): fewer steps and no PyTorch seed run")
    parser.add_argument("--presets", default="seed,small", help="comma-separated presets (default: seed,small)")
    parser.add_argument("--frameworks", default="mindspore,torch")
    parser.add_argument("--steps", type=int, default=0, metavar="N",
                        help="timed steps per run (default: seed 6 MindSpore / 2 PyTorch, small 24; "
                             "--short: seed 2, small 8)")
    parser.add_argument("--torch-python", default=sys.executable, metavar="PYTHON",
                        help="interpreter for the PyTorch runs (default: this one), e.g. one with a newer "
                             "torch; it needs numpy, soundfile and pyyaml besides torch")
    parser.add_argument("--threads", default="", metavar="N[,N..]",
                        help="thread counts to run (default: the cores this process may use)")
    parser.add_argument("--torch-batches", choices=("ds2", "pad-to-longest"), default="ds2",
                        help="PyTorch trains ds2's batches (default: the same batches, so memory and speed "
                             "compare like for like) or deepspeech.pytorch's fixed-size pad-to-longest ones")
    parser.add_argument("--torch-packed-lstm", action="store_true",
                        help="run PyTorch's LSTMs on packed sequences (deepspeech.pytorch) instead of the padded batch")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="config override for every run, e.g. train.max_batch_seconds=80")
    parser.add_argument("--shapes", default="", metavar="MODE[,MODE]",
                        help="ds2 runs with train.shapes static, dynamic or both (default: each preset's own)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(measure(json.loads(args.child))), flush=True)
        sys.stderr.flush()
        # torch 1.7.1 can segfault in interpreter teardown after a backward pass (envcheck's
        # torch.exit probe: always beside mindspore, on some Pythons alone). The figures are out and
        # flushed: skip the teardown so a finished run does not exit 139.
        os._exit(0)

    from ds2.config import PRESETS
    from ds2.runtime import usable_cpus

    presets = parse_list(args.presets)
    unknown = [p for p in presets if p not in PRESETS]
    frameworks = parse_list(args.frameworks)
    bad = [f for f in frameworks if f not in ("mindspore", "torch")]
    shape_modes = parse_list(args.shapes)
    if unknown or bad or any(m not in ("static", "dynamic") for m in shape_modes):
        parser.error(f"unknown preset(s) {unknown}, framework(s) {bad} or shapes {args.shapes!r}; "
                     f"presets: {', '.join(PRESETS)}; frameworks: mindspore, torch; shapes: static, dynamic")
    threads = parse_list(args.threads, int) or [usable_cpus()]
    if args.short:
        default_steps = {("seed", "mindspore"): 2, ("small", "mindspore"): 8, ("small", "torch"): 8}
    else:
        default_steps = {("seed", "mindspore"): 6, ("seed", "torch"): 2,
                         ("small", "mindspore"): 24, ("small", "torch"): 24}

    limits = {}
    for count in threads:
        print(f"measuring the fp32 GEMM limit / {count} threads ...", file=sys.stderr, flush=True)
        limits[count] = run_child({"framework": "gemm", "threads": count}, sys.executable)
    results = []
    for preset in presets:
        overrides = list(args.overrides)
        if preset == "seed" and args.short:
            overrides.insert(0, "train.max_batch_seconds=40")
        runs = planned_runs(frameworks, shape_modes)
        for count in threads:
            for framework, shapes in runs:
                steps = args.steps or default_steps.get((preset, framework), 0)
                if steps == 0:  # --short: no PyTorch seed run
                    continue
                spec = {"preset": preset, "framework": framework, "threads": count, "seed": args.seed,
                        "steps": steps, "overrides": overrides + shapes,
                        "torch_batches": args.torch_batches, "torch_packed_lstm": args.torch_packed_lstm}
                started = time.perf_counter()
                print(f"running {preset} / {framework} / {count} threads {' '.join(shapes)}...", file=sys.stderr, flush=True)
                python = args.torch_python if framework == "torch" else sys.executable
                result = run_child(spec, python)
                result["gemm_limit_gflops"] = limits[count]["limit_gflops"]
                result["limit_share"] = result["model_gflops_per_second"] / result["gemm_limit_gflops"]
                results.append(result)
                print(f"  done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    print(table(results))
    for line in ratios(results):
        print(line)
    for count, limit in limits.items():
        rates = ", ".join(f"{name} {shape} {rate:.0f}" for name, by_shape in limit["gflops"].items()
                          for shape, rate in by_shape.items())
        print(f"fp32 GEMM limit, {count} threads: {limit['limit_gflops']:.0f} GFLOP/s (best of: {rates}); "
              f"model GFLOP/s = training FLOPs of the real frames (ds2.shapes.training_flops) / wall time")
    mean = results[0]["mean_duration"] if results else 0.0
    print(f"corpus: {CORPUS_SIZE} utterances, mean {mean:.2f} s; epoch hours = {TRAIN_CLEAN_100_HOURS} h "
          f"of audio / throughput")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"command": sys.argv, "environment": environment(),
                                    "gemm_limits": list(limits.values()), "results": results}, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
