"""ds2's whole training step on ds2's own operators against MindSpore's kernels (builtin).

    python bench/kernel_ab.py --check --preset small               # every kernel setting at once
    python bench/kernel_ab.py --check --preset seed --kernel conv  # train.conv_kernel only
    python bench/kernel_ab.py --preset seed --kernel lstm --repeat 1 --cycles 2

--kernel lstm, conv, ctc, batch_norm or mask compares that setting (train.lstm_kernel,
train.conv_kernel, train.ctc_kernel, train.batch_norm_kernel, train.mask_kernel) at builtin and at ds2's operator, the others at the preset's
values; all (the default) sets every one together.

--check: the whole model's loss and the gradients of every trainable parameter for one batch of the
preset's most frequent shape, once on each side (a child process each, the same initial weights and
batch), compared to float32 tolerance (the largest difference over each gradient's largest value).

Without --check, the A/B: bench/shape_memory.py's measure() (the compiled step as `ds2 train` builds
it; pass 1 compiles and runs one step, pass 2 runs --repeat more, their median) on the preset's most
frequent shape, the two kernels alternating --cycles times, each in a child process with the
environment `ds2 train` has (OMP_WAIT_POLICY as this process has it: docs/speed-levers.md measures
its effect on the operator's OpenMP threads). Printed per run: seconds and CPU
seconds per step, audio seconds per second, peak resident memory (VmHWM), page faults per step.
The operators' library: ds2.kernels.library_path() ($DS2_NATIVE_LIBRARY, else the CPU image's).
"""
from __future__ import annotations

import argparse
import json
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

SIDES = ("builtin", "ds2")     # MindSpore's kernels, ds2's operators
KERNEL_CHOICES = ("all", "lstm", "conv", "ctc", "batch_norm", "mask")
TOLERANCE = 1e-4     # largest difference / largest |value|, per tensor
# With the CTC loss on ds2's operator: MindSpore's float32 CTC gradient is itself up to about 1e-3 from
# a float64 computation on long utterances (ds2's operator, in double: 3e-7; tests/test_native_ops.py).
CTC_TOLERANCE = 1e-3
# A gradient whose largest value is below this share of the model's largest is rounding noise around an
# exact 0 (the convolution biases: BatchNorm follows them), judged against the model's largest gradient.
NOISE_SHARE = 1e-3


def tolerance(kernel: str) -> float:
    return CTC_TOLERANCE if kernel in ("all", "ctc") else TOLERANCE


def setting_keys(kernel: str) -> List[str]:
    """The settings --kernel compares: train.<kernel>_kernel, or every one."""
    from ds2.kernels import OPERATORS

    return list(OPERATORS) if kernel == "all" else [f"train.{kernel}_kernel"]


def kernel_setting(kernel: str, side: str) -> List[str]:
    """The overrides that put --kernel's settings on `side` (builtin or ds2)."""
    from ds2.kernels import BUILTIN, OPERATORS

    return [f"{key}={OPERATORS[key]['value'] if side == 'ds2' else BUILTIN}" for key in setting_keys(kernel)]


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

    cfg = load_config(spec["preset"], overrides=spec["overrides"] + spec["variant"])
    configure_mindspore(cfg)
    ms.set_seed(spec["seed"])
    model = DeepSpeech2(cfg.model, n_bins=cfg.features.n_bins)
    network = TrainNetwork(model, blank=0)
    use_configured_kernels(network, cfg)
    network.set_train(True)
    params = network.trainable_params()
    grad = ms.jit(ms.value_and_grad(network, grad_position=None, weights=params))
    loss, grads = grad(*one_batch(cfg, spec["shape"], spec["seed"]))
    arrays = {"loss": loss.asnumpy().copy()}
    arrays.update({p.name: g.asnumpy().copy() for p, g in zip(params, grads)})
    np.savez(spec["output"], **arrays)
    return {"side": spec["side"], "loss": float(arrays["loss"]), "peak_gib": harness.peak_gib()}


def compare(reference: Dict[str, np.ndarray], other: Dict[str, np.ndarray], limit: float = TOLERANCE) -> List[Dict]:
    """Per tensor (loss first): the largest |value| of the reference (of every gradient, for one that is
    rounding noise: NOISE_SHARE) and the largest difference over it."""
    largest = max([float(np.abs(want).max()) for name, want in reference.items() if name != "loss"] or [0.0])
    rows = []
    for name, want in reference.items():
        got = other.get(name)
        scale = max(float(np.abs(want).max()), 1e-6)
        if name != "loss" and scale < NOISE_SHARE * largest:
            scale = largest
        worst = float(np.abs(got - want).max()) / scale if got is not None and got.shape == want.shape else float("inf")
        rows.append({"name": name, "shape": want.shape, "scale": scale, "worst": worst, "ok": worst < limit})
    return rows


def check(preset: str, overrides: Sequence[str], seed: int, kernel: str = "all") -> List[Dict]:
    """The model's loss and gradients on both sides, each in a child process, compared (compare()'s rows)."""
    from ds2.config import load_config

    cfg = load_config(preset, overrides=list(overrides))
    shape = harness.plan_shapes(cfg, seed, 1, "frequent")[0]
    saved = {}
    for side in SIDES:
        output = Path(tempfile.mkdtemp(prefix="ds2-grads-")) / f"{side}.npz"
        spec = {"task": "grads", "side": side, "variant": kernel_setting(kernel, side), "preset": preset,
                "overrides": list(overrides), "seed": seed, "shape": shape, "output": str(output)}
        result = harness.run_child(__file__, spec, what=f"{side} gradients")
        print(f"{side}: loss {result['loss']:.6f}, peak {result['peak_gib']:.2f} GiB", flush=True)
        with np.load(output) as data:
            saved[side] = {name: data[name] for name in data.files}
        output.unlink()
        output.parent.rmdir()
    print(f"{preset}, one batch of {shape['batch']} x {shape['width']} frames: "
          f"ds2's operators ({', '.join(kernel_setting(kernel, 'ds2'))}) against MindSpore's kernels")
    return compare(saved["builtin"], saved["ds2"], tolerance(kernel))


def cpu_seconds() -> float:
    """User and kernel CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def step_times(spec: Dict) -> Dict:
    """Child: bench/shape_memory.py's measure() with spec's kernel settings, plus pass 2's CPU seconds
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
    parser.add_argument("--check", action="store_true", help="compare the model's loss and gradients on both sides")
    parser.add_argument("--kernel", choices=KERNEL_CHOICES, default="all",
                        help="the kernel setting to compare: lstm, conv, ctc, batch_norm, mask, or all of them (the default)")
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
    from ds2.kernels import OPERATORS, chosen_kernel
    try:
        cfg = load_config(args.preset, overrides=args.overrides)
        for key in setting_keys(args.kernel):
            chosen_kernel(key, OPERATORS[key]["value"], cfg.train.device)
    except UserError as exc:
        parser.error(str(exc))
    if args.check:
        rows = check(args.preset, args.overrides, args.seed, args.kernel)
        for row in rows:
            print(f"  {row['name']:36s} {str(row['shape']):14s} largest |value| {row['scale']:.3e}, "
                  f"largest difference / largest |value| {row['worst']:.2e} {'ok' if row['ok'] else 'DIFFERS'}")
        agree = all(row["ok"] for row in rows)
        print(f"{len(rows)} tensors: {'all agree' if agree else 'some differ'} (tolerance {tolerance(args.kernel):g})")
        return 0 if agree else 1
    shape = harness.plan_shapes(cfg, args.seed, 1, "frequent")
    spec = {"preset": args.preset, "kernel": args.kernel, "overrides": args.overrides, "seed": args.seed,
            "shapes": shape, "repeat": max(1, args.repeat)}
    print(f"{args.preset}: one shape, {shape[0]['batch']} x {shape[0]['width']} frames; "
          f"{1 + spec['repeat']} steps per run", flush=True)
    results = {}
    for cycle in range(1, max(1, args.cycles) + 1):
        for side in SIDES:
            label = f"{side} ({cycle})"
            print(f"running {label} ...", file=sys.stderr, flush=True)
            results[label] = harness.run_child(__file__, {**spec, "side": side, "name": label,
                                                          "variant": kernel_setting(args.kernel, side)})
            print(f"{label}: {summary(results[label])}", flush=True)
    for line in harness.pair_ratios(results):
        print(line)
    if args.json:
        path = harness.write_record(args.json, {"preset": args.preset, "kernel": args.kernel,
                                                "overrides": args.overrides,
                                                "shape": {k: shape[0][k] for k in ("batch", "width")},
                                                "results": results})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
