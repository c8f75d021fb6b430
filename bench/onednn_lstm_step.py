"""ds2's whole training step with train.lstm_kernel=onednn against train.lstm_kernel=builtin.

    python bench/onednn_lstm_step.py --check --preset small
    python bench/onednn_lstm_step.py --check --preset seed
    python bench/onednn_lstm_step.py --preset seed --repeat 1 --cycles 2

--check: the whole model's loss and the gradients of every trainable parameter for one batch of the
preset's most frequent shape, once on each kernel (a child process each, the same initial weights and
batch), compared to float32 tolerance (the largest difference over each gradient's largest value).

Without --check, the A/B: bench/shape_memory.py's measure() (the compiled step as `ds2 train` builds
it; pass 1 compiles and runs one step, pass 2 runs --repeat more, their median) on the preset's most
frequent shape, the two kernels alternating --cycles times, each in a child process with the
environment `ds2 train` has (OMP_WAIT_POLICY as this process has it: docs/speed-levers.md measures
its effect on the operator's OpenMP threads). Printed per run: seconds and CPU
seconds per step, audio seconds per second, peak resident memory (VmHWM), page faults per step.
The operator's library: ds2.lstm_kernel.library_path() ($DS2_ONEDNN_LSTM, else the CPU image's).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402

KERNELS = ("builtin", "onednn")
TOLERANCE = 1e-4     # largest difference / largest |value|, per tensor


def kernel_setting(kernel: str) -> List[str]:
    return [f"train.lstm_kernel={kernel}"]


def one_batch(cfg, shape: Dict, seed: int):
    """The features, frames, labels and label lengths of one batch of `shape` (harness.plan_shapes), as tensors."""
    import mindspore as ms

    from ds2.batching import pad_batch

    n_bins = cfg.features.n_bins
    frame_seconds = cfg.features.hop_length / cfg.features.sample_rate
    rng = np.random.default_rng(seed)
    features = [rng.standard_normal((n_bins, f), dtype=np.float32) for f in shape["frames"]]
    padded = pad_batch(range(len(features)), shape["width"], features, shape["labels"], n_bins,
                       shape["label_width"], frame_seconds)
    return [ms.Tensor(a) for a in (padded.features, padded.frames, padded.labels, padded.label_lengths)]


def loss_and_grads(spec: Dict) -> Dict:
    """Child: the model's loss and gradients for spec's batch, saved to spec["output"] (.npz)."""
    import mindspore as ms

    from ds2.config import load_config
    from ds2.model import DeepSpeech2, TrainNetwork
    from ds2.runtime import configure_mindspore

    from ds2.step import use_configured_kernels

    cfg = load_config(spec["preset"], overrides=spec["overrides"] + kernel_setting(spec["kernel"]))
    configure_mindspore(cfg)
    ms.set_seed(spec["seed"])
    model = DeepSpeech2(cfg.model, n_bins=cfg.features.n_bins)
    use_configured_kernels(model, cfg)
    network = TrainNetwork(model, blank=0)
    network.set_train(True)
    params = network.trainable_params()
    grad = ms.jit(ms.value_and_grad(network, grad_position=None, weights=params))
    loss, grads = grad(*one_batch(cfg, spec["shape"], spec["seed"]))
    arrays = {"loss": loss.asnumpy().copy()}
    arrays.update({p.name: g.asnumpy().copy() for p, g in zip(params, grads)})
    np.savez(spec["output"], **arrays)
    return {"kernel": spec["kernel"], "loss": float(arrays["loss"]), "peak_gib": harness.peak_gib()}


def compare(reference: Dict[str, np.ndarray], other: Dict[str, np.ndarray]) -> List[Dict]:
    """Per tensor (loss first): the largest |value| of the reference and the largest difference over it."""
    rows = []
    for name, want in reference.items():
        got = other.get(name)
        scale = max(float(np.abs(want).max()), 1e-6)
        worst = float(np.abs(got - want).max()) / scale if got is not None and got.shape == want.shape else float("inf")
        rows.append({"name": name, "shape": want.shape, "scale": scale, "worst": worst, "ok": worst < TOLERANCE})
    return rows


def check(preset: str, overrides: Sequence[str], seed: int) -> List[Dict]:
    """The model's loss and gradients on both kernels, each in a child process, compared (compare()'s rows)."""
    from ds2.config import load_config

    cfg = load_config(preset, overrides=list(overrides))
    shape = harness.plan_shapes(cfg, seed, 1, "frequent")[0]
    saved = {}
    for kernel in KERNELS:
        output = Path(tempfile.mkdtemp(prefix="ds2-grads-")) / f"{kernel}.npz"
        spec = {"task": "grads", "kernel": kernel, "preset": preset,
                "overrides": list(overrides), "seed": seed, "shape": shape, "output": str(output)}
        result = harness.run_child(__file__, spec, what=f"{kernel} gradients")
        print(f"{kernel}: loss {result['loss']:.6f}, peak {result['peak_gib']:.2f} GiB", flush=True)
        with np.load(output) as data:
            saved[kernel] = {name: data[name] for name in data.files}
        output.unlink()
        output.parent.rmdir()
    print(f"{preset}, one batch of {shape['batch']} x {shape['width']} frames: the operator against MindSpore's kernel")
    return compare(saved["builtin"], saved["onednn"])


def cpu_seconds() -> float:
    """User and kernel CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def step_times(spec: Dict) -> Dict:
    """Child: bench/shape_memory.py's measure() with BiLSTM on spec's kernel, plus pass 2's CPU seconds
    per step (on a shared machine the CPU time is what the two kernels can be compared by)."""
    from bench import shape_memory

    pass1_end = []
    result = shape_memory.measure(spec, after_step=lambda number: pass1_end.append(cpu_seconds()))
    result["pass2_cpu_s_per_step"] = (cpu_seconds() - pass1_end[-1]) / (len(spec["shapes"]) * spec["repeat"])
    return result


def summary(result: Dict) -> str:
    step_s = float(np.median(result["pass2_step_s"]))
    return (f"{step_s:.1f} s/step ({result['pass2_cpu_s_per_step']:.1f} CPU s), "
            f"{result['audio_seconds_per_second']:.2f} audio s/s, peak {result['peak_gib']:.2f} GiB "
            f"(first step {result['pass1'][0]['first_step_s']:.1f} s); per step "
            f"{harness.fault_summary(result['pass2_minor_faults_per_step'], result['pass2_system_cpu_s_per_step'])}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the model's loss and gradients on both kernels")
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2, help="timed steps per run after the first (their median)")
    parser.add_argument("--cycles", type=int, default=2, help="runs of each kernel, alternating")
    parser.add_argument("--json", metavar="PATH", help="also write the A/B's results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        result = loss_and_grads(spec) if spec.get("task") == "grads" else step_times(spec)
        print(json.dumps(result), flush=True)
        return 0
    from ds2.config import load_config
    from ds2.errors import UserError
    from ds2.lstm_kernel import chosen_kernel
    try:
        cfg = load_config(args.preset, overrides=args.overrides)
        chosen_kernel("onednn", cfg.train.device)
    except UserError as exc:
        parser.error(str(exc))
    if args.check:
        rows = check(args.preset, args.overrides, args.seed)
        for row in rows:
            print(f"  {row['name']:36s} {str(row['shape']):14s} largest |value| {row['scale']:.3e}, "
                  f"largest difference / largest |value| {row['worst']:.2e} {'ok' if row['ok'] else 'DIFFERS'}")
        agree = all(row["ok"] for row in rows)
        print(f"{len(rows)} tensors: {'all agree' if agree else 'some differ'} (tolerance {TOLERANCE:g})")
        return 0 if agree else 1
    shape = harness.plan_shapes(cfg, args.seed, 1, "frequent")
    spec = {"preset": args.preset, "overrides": args.overrides, "seed": args.seed,
            "shapes": shape, "repeat": max(1, args.repeat)}
    print(f"{args.preset}: one shape, {shape[0]['batch']} x {shape[0]['width']} frames; "
          f"{1 + spec['repeat']} steps per run", flush=True)
    results = {}
    for cycle in range(1, max(1, args.cycles) + 1):
        for kernel in KERNELS:
            label = f"{kernel} ({cycle})"
            print(f"running {label} ...", file=sys.stderr, flush=True)
            results[label] = harness.run_child(__file__, {**spec, "kernel": kernel, "name": label,
                                                          "variant": kernel_setting(kernel)},
                                               )
            print(f"{label}: {summary(results[label])}", flush=True)
    labels = list(results)
    for builtin, onednn in zip(labels[0::2], labels[1::2]):
        a, b = results[builtin], results[onednn]
        print(f"{onednn} / {builtin}: speed {b['audio_seconds_per_second'] / a['audio_seconds_per_second']:.2f}x, "
              f"CPU time per step {b['pass2_cpu_s_per_step'] / a['pass2_cpu_s_per_step']:.2f}x, peak memory {b['peak_gib'] / a['peak_gib']:.2f}x")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"command": sys.argv, "preset": args.preset, "overrides": args.overrides,
                                    "shape": {k: shape[0][k] for k in ("batch", "width")},
                                    "load_average_1_5_15_min": os.getloadavg(), "results": results}, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
