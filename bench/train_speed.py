"""Training speed: ds2 (MindSpore) against the same DeepSpeech2 in PyTorch, on a LibriSpeech-like mix.

    python bench/train_speed.py                 # seed and small presets, ds2 and every PyTorch (~20 min)
    python bench/train_speed.py --short         # the regression check (make bench): a few minutes on 2 cores
    python bench/train_speed.py --presets small --threads 1,2 --json runs/bench/speed.json
    python bench/train_speed.py --torch-python /opt/torch-new/bin/python   # another torch build

For every (preset, framework, thread count) a fresh child process (so peak memory and thread pools
are its own) trains on the same synthetic corpus: utterance durations drawn from a LibriSpeech-like
mix (1-35 s, mean about 12.7 s, like train-clean-100), labels at 15 characters per second, random
features stored as .npy files and read back by a background loader, as a feature cache is. With
--set augment.enabled=true the loader augments as `ds2 train` does (ds2.augment), from audio files of
the utterances' durations, so the stall share shows what augmentation costs the step.

- ds2 batches as `ds2 train` does: length buckets with a cap on audio seconds per batch
  (train.max_batch_seconds); one compiled graph per (batch size, width) shape, or one for all of
  them with train.shapes=dynamic (--shapes static,dynamic runs both, side by side).
- PyTorch runs once per interpreter: by default this one's torch (the image's pinned 1.7.1) and the
  bench image's current PyTorch ($DS2_TORCH_PEER_PYTHON, docker/requirements/torch-peer.in).
- PyTorch trains the very batches ds2 trains (the same utterances, padded widths and labels), so
  peak memory and throughput compare at the same batches; its LSTMs run on the padded batch.
  --torch-batches pad-to-longest batches as deepspeech.pytorch does instead: shuffled utterances
  in batches of a fixed size (max_batch_seconds / mean duration, the same audio per step on
  average), padded to the longest; --torch-packed-lstm runs its LSTMs on packed sequences as
  deepspeech.pytorch does (the pinned torch 1.7.1 is several times slower that way on CPU).

Every preset runs at its configured batches (seed: 16 buckets of <= 160 s); --short caps batches at
40 s of audio. How many steps a run times follows the model's size (bench/harness.py, StepBudget):
ds2 times steps drawn at random from its epoch plan until it has spent its seconds (180, --short 20;
at least 2 steps, at most as many as the model's expected step time fits, 24 at most). Each PyTorch
run then trains ds2's very steps, or a prefix of them (at least 2) once it has spent twice ds2's
seconds: the pinned torch 1.7.1 is several times slower. Each framework runs one untimed step first
per distinct shape (MindSpore: graph compile or kernel sizing) or on its first batch (PyTorch:
allocator warm-up). Both take the same loader thread (ds2.batching.Prefetcher), the same thread
count, Adam, clipping, and CTC loss.

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
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from bench.corpus import CORPUS_SIZE, TRAIN_CLEAN_100_HOURS  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Batch plans: lists of (utterance indices, padded width)


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

    def step(features, frames, labels, label_lengths) -> float:
        log_probs, lengths = model(torch.from_numpy(features), torch.from_numpy(frames).long())
        loss = ctc(log_probs, torch.from_numpy(labels).long(), lengths, torch.from_numpy(label_lengths).long()).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        return float(loss.detach())

    return step


def measure(spec: Dict) -> Dict:
    """Train one framework on one preset until its step budget is spent; return the figures."""
    from ds2.batching import Prefetcher, pad_batch, speed_fits
    from ds2.config import load_config
    from ds2.memory import estimate as memory_estimate
    from ds2.shapes import training_flops

    if spec["framework"] == "gemm":
        return measure_gemm(spec)

    cfg = load_config(spec["preset"], overrides=spec["overrides"])
    n_bins = cfg.features.n_bins
    frame_seconds = cfg.features.hop_length / cfg.features.sample_rate
    plan = harness.epoch_plan(cfg, spec["seed"])
    frames, labels = plan.frames, plan.labels
    budget = harness.StepBudget(**spec["budget"])

    same_batches = spec["framework"] == "mindspore" or spec.get("torch_batches", "ds2") == "ds2"
    if same_batches:
        batching = f"{cfg.train.num_buckets} buckets, <= {cfg.train.max_batch_seconds:g} s/batch"
        if spec["framework"] == "mindspore":
            batching += f", {cfg.train.shapes} shapes"
        batches, label_width = plan.batches, plan.label_width
    else:
        batch_size = max(1, round(cfg.train.max_batch_seconds / float(plan.durations.mean())))
        batching = f"pad to longest, {batch_size}/batch"
        batches = pad_to_longest_plan(frames, batch_size, spec["seed"])
        label_width = None  # PyTorch pads labels to the longest in each batch
    # The same draw for every framework: with the same batches, the same timed steps (a prefix of them).
    candidates = harness.drawn(batches, spec["seed"] + SEED_OFFSET_DRAW)[:budget.max_steps]

    __import__(spec["framework"])
    import_gib = harness.process_gib("VmRSS")   # the framework's own libraries (torch's CUDA build: more)
    if spec["framework"] == "mindspore":
        cfg.train.threads = spec["threads"]
        step = harness.mindspore_step(cfg)
        first_of_shape = True      # MindSpore compiles (static) or sizes its kernels (dynamic) per new shape
    else:
        packed = spec.get("torch_packed_lstm", False)
        step = torch_stepper(cfg, n_bins, spec["threads"], packed=packed)
        batching += ", packed LSTM" if packed else ", LSTM on the padded batch"
        first_of_shape = False     # PyTorch warms its allocator on the first batch only

    with tempfile.TemporaryDirectory(prefix="ds2-bench-") as store:
        rng = np.random.default_rng(spec["seed"] + 2)
        used = sorted({i for indices, _ in candidates for i in indices})
        for i in used:
            # the feature cache: one .npy per utterance, read by the loader thread
            np.save(os.path.join(store, f"{i}.npy"), rng.standard_normal((n_bins, int(frames[i])), dtype=np.float32))
        augmenter = augmented_audio = None
        if cfg.augment.enabled:
            augmenter, augmented_audio, cache = augmentation_inputs(cfg, plan.durations, used, store, spec["seed"])
            batching += ", augmented"

        def utterance_features(i: int, width: int) -> np.ndarray:
            if augmenter is None:
                return np.load(os.path.join(store, f"{i}.npy"))
            return augmenter.features(augmented_audio[i], cache.features, 0, i, lambda factor: speed_fits(
                float(plan.durations[i]), labels[i], width, factor, cfg))

        def load(item):
            indices, width = item
            features = [utterance_features(i, width) for i in indices]
            width_of_labels = label_width[width] if label_width else max(len(labels[i]) for i in indices)
            return pad_batch(indices, width, features, [labels[i] for i in indices], n_bins,
                             width_of_labels, frame_seconds)

        warmup_seconds, warmed = 0.0, set()
        step_seconds, waits, audio, losses, shapes, timed = [], [], [], [], [], []
        prefetch = Prefetcher(candidates, load)
        try:
            for item, padded in zip(candidates, prefetch_iter(prefetch, waits)):
                arrays = (padded.features, padded.frames, padded.labels, padded.label_lengths)
                key = width_key(item) if first_of_shape else None
                if key not in warmed:   # one untimed step per shape (MindSpore) or for the first batch (PyTorch)
                    begin = time.perf_counter()
                    step(*arrays)
                    warmup_seconds += time.perf_counter() - begin
                    warmed.add(key)
                begin = time.perf_counter()
                losses.append(step(*arrays))
                step_seconds.append(time.perf_counter() - begin + waits[-1])
                audio.append(padded.audio_seconds)
                shapes.append(list(padded.features.shape[::3]))   # [batch size, padded frames]
                timed.append(item)
                if budget.done(len(step_seconds), sum(step_seconds)):
                    break
        finally:
            prefetch.close()
        waits = waits[:len(step_seconds)]

    throughput = sum(audio) / sum(step_seconds)
    model_flops = sum(training_flops(int(frames[i]), cfg) for indices, _ in timed for i in indices)
    # For the shapes this run compiled (one graph each), not for every bucket of a whole epoch.
    estimate = memory_estimate(cfg, training=True, num_buckets=max(1, len(warmed)) - 1)
    return {
        "preset": spec["preset"], "framework": spec["framework"], "threads": spec["threads"],
        "shapes": cfg.train.shapes if spec["framework"] == "mindspore" else None,
        "batching": batching, "same_batches_as_ds2": same_batches, "overrides": spec["overrides"],
        "budget": spec["budget"], "steps": len(step_seconds), "seconds_per_step": float(np.mean(step_seconds)),
        "audio_seconds_per_step": float(np.mean(audio)),
        "audio_seconds_per_second": throughput,
        "model_gflops_per_second": model_flops / sum(step_seconds) / 1e9,
        "padding_share": padding_share(batches, frames),
        "padding_share_timed": padding_share(timed, frames),
        "stall_share": sum(waits) / sum(step_seconds),
        "peak_memory_gib": harness.peak_gib(), "framework_import_gib": import_gib,
        "envcheck_memory_estimate_gib": (estimate.total_bytes / 1024 ** 3
                                         if spec["framework"] == "mindspore" else None),
        "warmup_seconds": warmup_seconds, "warmup_steps": len(warmed),
        "epoch_hours_train_clean_100": TRAIN_CLEAN_100_HOURS / throughput,
        "batches_per_epoch": len(batches), "mean_duration": float(plan.durations.mean()),
        "losses": losses, "step_shapes": shapes, "step_seconds": step_seconds,
        "framework_version": framework_version(spec["framework"]), "python": sys.executable,
    }


def augmentation_inputs(cfg, durations: np.ndarray, used: Sequence[int], store: str, seed: int):
    """With augment.enabled the loader works as in training, on audio: (Augmenter, {utterance: audio file},
    FeatureCache). The audio stands in for speech (noise of each utterance's duration), its features are
    cached beforehand as `ds2 preprocess --warm-cache` does, and the noise set is made from it as
    `ds2 preprocess` makes it from the training utterances."""
    import soundfile

    from ds2.augment import make_augmenter
    from ds2.data.manifest import Utterance
    from ds2.data.noise import build_noise_set
    from ds2.features import FeatureCache

    rate = cfg.features.sample_rate
    rng = np.random.default_rng(seed + 3)
    audio = {}
    for i in used:
        audio[i] = os.path.join(store, f"{i}.flac")
        samples = int(durations[i] * rate)   # as the plan counts its frames
        soundfile.write(audio[i], 0.1 * rng.standard_normal(samples), rate, format="FLAC", subtype="PCM_16")
    cache = FeatureCache(os.path.join(store, "features"), cfg.features)
    for path in audio.values():
        cache.features(path)
    utterances = [Utterance(str(i), audio[i], "", float(durations[i])) for i in used]
    noise = build_noise_set(Path(store) / "noise", utterances, seed, rate)
    return make_augmenter(cfg.augment, cfg.features, seed, noise), audio, cache


def prefetch_iter(prefetch, waits: List[float]):
    """The prefetched batches in order, appending each one's wait for the loader to `waits`."""
    batches = iter(prefetch)
    while True:
        begin = time.perf_counter()
        padded = next(batches, None)
        if padded is None:
            return
        waits.append(time.perf_counter() - begin)
        yield padded


def framework_version(framework: str) -> str:
    module = __import__(framework)
    return module.__version__


# Run lengths: timed seconds per ds2 run and the most steps a small model's run times.
FULL = {"seconds": 180.0, "most": 24}
SHORT = {"seconds": 20.0, "most": 8, "max_batch_seconds": 40.0}
SEED_OFFSET_DRAW = 1             # measure() draws its batches with the run's seed + this
TORCH_PEER_VARIABLE = "DS2_TORCH_PEER_PYTHON"


def width_key(item):
    indices, width = item
    return len(indices), width


# ---------------------------------------------------------------------------------------------
# Driver


def environment(results: List[Dict]) -> Dict:
    """Versions from package metadata (this process imports neither framework), and each PyTorch run's."""
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
    info["torch_runs"] = sorted({(r["framework_version"], r["python"]) for r in results if r["framework"] == "torch"})
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
                steps = (f"its {other['steps']} steps" if other["steps"] == r["steps"]
                         else f"the first {other['steps']} of ds2's {r['steps']} steps")
                lines.append(f"{r['preset']} ({r['threads']} threads, {r['shapes']} shapes): ds2 / PyTorch "
                             f"{other['framework_version']} on {which}, {steps}: throughput = "
                             f"{r['audio_seconds_per_second'] / other['audio_seconds_per_second']:.2f}x, "
                             f"peak memory = {r['peak_memory_gib'] / other['peak_memory_gib']:.2f}x")
            if (other["framework"] == "mindspore" and (other["preset"], other["threads"]) == (r["preset"], r["threads"])
                    and (r["shapes"], other["shapes"]) == ("dynamic", "static")):
                lines.append(f"{r['preset']} ({r['threads']} threads): ds2 dynamic / static shapes: throughput "
                             f"{r['audio_seconds_per_second'] / other['audio_seconds_per_second']:.2f}x, peak memory "
                             f"{r['peak_memory_gib'] / other['peak_memory_gib']:.2f}x")
    return lines


def planned_runs(frameworks: Sequence[str], shape_modes: Sequence[str], torch_pythons: Sequence[str]) -> List[Dict]:
    """The runs of one preset, ds2's first: ds2 once per train.shapes mode asked for (none asked: the
    preset's own setting), PyTorch once per interpreter."""
    runs = []
    if "mindspore" in frameworks:
        runs += [{"framework": "mindspore", "overrides": [f"train.shapes={mode}"] if mode else []}
                 for mode in (shape_modes or [""])]
    if "torch" in frameworks:
        runs += [{"framework": "torch", "overrides": [], "python": python} for python in torch_pythons]
    return runs


def default_torch_pythons() -> List[str]:
    """This interpreter's torch (the image's pinned one) and the bench image's current PyTorch, where present."""
    import importlib.util
    pythons = [sys.executable] if importlib.util.find_spec("torch") else []
    peer = os.environ.get(TORCH_PEER_VARIABLE, "")
    if peer and Path(peer).exists():
        pythons.append(peer)
    return pythons


def budget_for(run: Dict, cfg, plan, limit_gflops: float, mode: Dict, steps: int, ds2_result) -> harness.StepBudget:
    """How many steps a run times. --steps N: exactly N. ds2: the mode's seconds, the step cap following the
    model's size. PyTorch after ds2: ds2's very steps, or (taking more than twice ds2's seconds) a prefix of
    them, at least two."""
    if steps:
        return harness.StepBudget.exactly(steps)
    if run["framework"] == "torch" and ds2_result is not None:
        return harness.StepBudget(2 * ds2_result["budget"]["seconds"], min(2, ds2_result["steps"]), ds2_result["steps"])
    return harness.StepBudget.for_run(cfg, plan.batches, plan.frames, limit_gflops, mode["seconds"], most=mode["most"])


def parse_list(text: str, kind=str) -> List:
    return [kind(v) for v in text.split(",") if v]


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true",
                        help=f"the quick regression run (make bench): {SHORT['seconds']:g} s per run, batches of "
                             f"at most {SHORT['max_batch_seconds']:g} s of audio")
    parser.add_argument("--presets", default="seed,small", help="comma-separated presets (default: seed,small)")
    parser.add_argument("--frameworks", default="mindspore,torch")
    parser.add_argument("--steps", type=int, default=0, metavar="N",
                        help="time exactly N steps per run (default: as many as fit in the run's seconds, "
                             "the cap following the model's size)")
    parser.add_argument("--seconds", type=float, default=0, metavar="S",
                        help=f"timed seconds per ds2 run (default {FULL['seconds']:g}, --short {SHORT['seconds']:g})")
    parser.add_argument("--torch-python", default="", metavar="PYTHON[,PYTHON..]",
                        help="interpreters for the PyTorch runs, one run each (default: this one when it has torch, "
                             f"and ${TORCH_PEER_VARIABLE}, the bench image's current PyTorch); each needs numpy "
                             "and pyyaml besides torch")
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

    from ds2.config import PRESETS, load_config
    from ds2.errors import UserError
    from ds2.runtime import usable_cpus

    presets = parse_list(args.presets)
    unknown = [p for p in presets if p not in PRESETS]
    frameworks = parse_list(args.frameworks)
    bad = [f for f in frameworks if f not in ("mindspore", "torch")]
    shape_modes = parse_list(args.shapes)
    if unknown or bad or any(m not in ("static", "dynamic") for m in shape_modes):
        parser.error(f"unknown preset(s) {unknown}, framework(s) {bad} or shapes {args.shapes!r}; "
                     f"presets: {', '.join(PRESETS)}; frameworks: mindspore, torch; shapes: static, dynamic")
    torch_pythons = parse_list(args.torch_python) or default_torch_pythons()
    missing = [p for p in torch_pythons if not Path(p).exists()]
    if missing:
        parser.error(f"no interpreter {', '.join(missing)} (--torch-python)")
    if "torch" in frameworks and not torch_pythons:
        parser.error(f"no PyTorch to run: this Python has no torch and ${TORCH_PEER_VARIABLE} is not set; "
                     "give --torch-python PYTHON or --frameworks mindspore")
    threads = parse_list(args.threads, int) or [usable_cpus()]
    mode = dict(SHORT if args.short else FULL)
    mode["seconds"] = args.seconds or mode["seconds"]

    limits = {}
    for count in threads:
        print(f"measuring the fp32 GEMM limit / {count} threads ...", file=sys.stderr, flush=True)
        limits[count] = harness.run_child(__file__, {"framework": "gemm", "threads": count},
                                          env=harness.thread_env(count), what="GEMM limit")
    results = []
    for preset in presets:
        try:
            cfg = load_config(preset, overrides=args.overrides)
        except UserError as exc:
            parser.error(str(exc))
        overrides = list(args.overrides)
        if mode.get("max_batch_seconds") and cfg.train.max_batch_seconds > mode["max_batch_seconds"]:
            overrides.insert(0, f"train.max_batch_seconds={mode['max_batch_seconds']:g}")
            cfg = load_config(preset, overrides=overrides)
        plan = harness.epoch_plan(cfg, args.seed)
        for count in threads:
            ds2_result = None
            for run in planned_runs(frameworks, shape_modes, torch_pythons):
                budget = budget_for(run, cfg, plan, limits[count]["limit_gflops"], mode, args.steps, ds2_result)
                spec = {"preset": preset, "framework": run["framework"], "threads": count, "seed": args.seed,
                        "budget": vars(budget), "overrides": overrides + run["overrides"],
                        "torch_batches": args.torch_batches, "torch_packed_lstm": args.torch_packed_lstm}
                started = time.perf_counter()
                python = run.get("python", sys.executable)
                name = f"{preset} / {run['framework']}{' ' + python if run['framework'] == 'torch' else ''} / {count} threads"
                print(f"running {name} {' '.join(run['overrides'])} (at most {budget.max_steps} steps, "
                      f"{budget.seconds:.0f} s) ...", file=sys.stderr, flush=True)
                result = harness.run_child(__file__, spec, python=python, env=harness.thread_env(count), what=name)
                result["gemm_limit_gflops"] = limits[count]["limit_gflops"]
                result["limit_share"] = result["model_gflops_per_second"] / result["gemm_limit_gflops"]
                results.append(result)
                if run["framework"] == "mindspore" and ds2_result is None:
                    ds2_result = result
                print(f"  done in {time.perf_counter() - started:.0f} s ({result['steps']} steps)",
                      file=sys.stderr, flush=True)

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
        path.write_text(json.dumps({"command": sys.argv, "environment": environment(results),
                                    "gemm_limits": list(limits.values()), "results": results}, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
