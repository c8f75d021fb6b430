"""Resident memory against the number of batch shapes compiled: train.shapes=static against dynamic.

    python bench/shape_memory.py --preset seed --set train.max_batch_seconds=40 --shapes 6
    python bench/shape_memory.py --preset small --shapes 8 --json runs/bench/shape-memory.json

The shapes are the distinct (batch size, padded width) pairs of a ds2.batching epoch plan over the
benchmarks' LibriSpeech-like corpus (bench/corpus.py), the widest first (--order frequent: those with
the most batches per epoch first). For each variant (train.shapes static, then dynamic; or the
--variant settings) a child process of its own builds the model and the compiled step as `ds2 train`
does, then:

- pass 1: one step on each shape in turn; after each, its resident memory (VmRSS), its peak (VmHWM)
  and the step's seconds (with train.shapes=static every new shape compiles a graph; with dynamic
  only the first does);
- pass 2: one more step on each shape (--repeat N: N more, their median), timed: the variants' speed
  once nothing compiles, and per step the process's minor page faults (memory it touched fresh:
  buffers the kernels free and allocate again each step) and the CPU time spent in the kernel.

Printed: a row per shape count with the variants side by side, each one's pass-2 throughput (audio
seconds per wall second) and their ratio, and envcheck's estimate for the largest shape count.
--variant compares other settings the same way (e.g. train.recompute_rnn=false / true).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402

MODES = ("static", "dynamic")


def add_step_options(parser: argparse.ArgumentParser, preset: str = "seed", shapes: int = 1,
                     order: str = "frequent") -> None:
    """The options that choose the steps measure() trains: --preset --shapes --order --set --seed."""
    parser.add_argument("--preset", default=preset)
    parser.add_argument("--shapes", type=int, default=shapes, help=f"how many distinct batch shapes (default {shapes})")
    parser.add_argument("--order", choices=("widest", "frequent"), default=order,
                        help="which shapes come first: the widest, or those with the most batches per epoch")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=7)


def planned_steps(parser: argparse.ArgumentParser, args) -> Dict:
    """measure()'s spec for the steps add_step_options chose, one timed step per shape in pass 2
    (a config mistake is the parser's one-line error)."""
    from ds2.config import load_config
    from ds2.errors import UserError
    try:
        cfg = load_config(args.preset, overrides=args.overrides)
    except UserError as exc:
        parser.error(str(exc))
    return {"preset": args.preset, "overrides": args.overrides, "variant": [], "name": args.preset,
            "seed": args.seed, "shapes": harness.plan_shapes(cfg, args.seed, args.shapes, args.order), "repeat": 1}


def measure(spec: Dict, after_step: Optional[Callable[[int], None]] = None) -> Dict:
    """One variant in this process: pass 1 (memory after each new shape) and pass 2 (step times).
    after_step(n), if given, runs after pass 1's step on the n-th shape (bench/heap_trace.py)."""
    import mindspore as ms

    from ds2.batching import pad_batch
    from ds2.config import load_config

    cfg = load_config(spec["preset"], overrides=spec["overrides"] + spec["variant"])
    step = harness.mindspore_step(cfg)
    n_bins = cfg.features.n_bins
    frame_seconds = cfg.features.hop_length / cfg.features.sample_rate
    rng = np.random.default_rng(spec["seed"])
    batches = []
    for shape in spec["shapes"]:
        features = [rng.standard_normal((n_bins, f), dtype=np.float32) for f in shape["frames"]]
        padded = pad_batch(range(len(features)), shape["width"], features, shape["labels"], n_bins,
                           shape["label_width"], frame_seconds)
        batches.append((padded.audio_seconds, [ms.Tensor(a) for a in (padded.features, padded.frames,
                                                                      padded.labels, padded.label_lengths)]))
    start_gib = harness.process_gib("VmRSS")

    def run(inputs) -> float:
        begin = time.perf_counter()
        step(*inputs)
        return time.perf_counter() - begin

    first = []
    for number, (_, inputs) in enumerate(batches, 1):
        seconds = run(inputs)
        first.append({"shapes": number, "first_step_s": seconds, "rss_gib": harness.process_gib("VmRSS"),
                      "peak_gib": harness.peak_gib()})
        print(f"  {spec['name']}: shape {number} of {len(batches)}: {seconds:.1f} s, "
              f"{first[-1]['rss_gib']:.2f} GiB resident", file=sys.stderr, flush=True)
        if after_step is not None:
            after_step(number)
    # pass 2, repeated: each shape's median step time
    counters = harness.KernelCounters.start()
    second = [float(np.median([run(inputs) for _ in range(spec["repeat"])])) for _, inputs in batches]
    kernel = counters.since()
    steps = len(batches) * spec["repeat"]
    audio = sum(seconds for seconds, _ in batches)
    return {"variant": spec["name"], "overrides": spec["variant"], "start_rss_gib": start_gib, "pass1": first, "pass2_step_s": second,
            "pass2_minor_faults_per_step": kernel.minor_faults / steps,
            "pass2_system_cpu_s_per_step": kernel.system_seconds / steps,
            "audio_seconds": audio, "audio_seconds_per_second": audio / sum(second),
            "final_rss_gib": harness.process_gib("VmRSS"), "peak_gib": harness.peak_gib()}


ENV_PREFIX = "env:"


def variant_env(text: str) -> Dict[str, str]:
    """The env:NAME=VALUE items of a --variant, as the environment variables they set."""
    items = [kv[len(ENV_PREFIX):] for kv in text.split(",") if kv.startswith(ENV_PREFIX)]
    return dict(item.split("=", 1) for item in items if "=" in item)


def variant_name(text: str) -> str:
    """A --variant's name in the table: its settings, and the names of the variables it sets (not their values)."""
    return ",".join(kv.split("=", 1)[0] if kv.startswith(ENV_PREFIX) else kv for kv in text.split(",") if kv)


def fault_summary(result: Dict) -> str:
    """Pass 2's minor page faults (and the memory they touched fresh) and kernel CPU time, per step."""
    return harness.fault_summary(result["pass2_minor_faults_per_step"], result["pass2_system_cpu_s_per_step"])


def table(shapes: List[Dict], results: Dict[str, Dict]) -> str:
    header = f"{'shapes':>6} {'batch x width':>14}"
    for name in results:
        header += f" | {name + ' resident':>16} {name + ' peak':>13} {'1st step s':>10} {'step s':>7}"
    lines = [header, "-" * len(header)]
    for i, shape in enumerate(shapes):
        line = f"{i + 1:>6} {str(shape['batch']) + ' x ' + str(shape['width']):>14}"
        for result in results.values():
            row = result["pass1"][i]
            line += (f" | {row['rss_gib']:>12.2f} GiB {row['peak_gib']:>9.2f} GiB {row['first_step_s']:>10.1f}"
                     f" {result['pass2_step_s'][i]:>7.1f}")
        lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_options(parser, preset="small", shapes=6, order="widest")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="train.shapes of each run: static,dynamic (default: both)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="instead of --modes: one run per --variant with these settings, e.g. "
                             "--variant train.recompute_rnn=false --variant train.recompute_rnn=true; an item "
                             f"{ENV_PREFIX}NAME=VALUE sets an environment variable of that run instead "
                             f"(e.g. {ENV_PREFIX}MALLOC_CONF=oversize_threshold:0)")
    parser.add_argument("--cycles", type=int, default=1, metavar="N",
                        help="run the variants N times, alternating (A B A B ...): side by side on a noisy machine")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="pass 2 steps each shape N times and takes the median (default 1)")
    parser.add_argument("--json", metavar="PATH", help="also write the results here as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))), flush=True)
        return 0

    from ds2.config import load_config
    from ds2.errors import UserError
    from ds2.memory import GIB, estimate

    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        parser.error(f"--modes takes static, dynamic or both, not {args.modes!r}")
    if args.variant:
        variants = {variant_name(text): [kv for kv in text.split(",") if kv and not kv.startswith(ENV_PREFIX)]
                    for text in args.variant}
        environments = {variant_name(text): variant_env(text) for text in args.variant}
    else:
        variants = {mode: [f"train.shapes={mode}"] for mode in modes}
        environments = {mode: {} for mode in modes}
    spec = planned_steps(parser, args)
    shapes = spec["shapes"]
    cfg = load_config(args.preset, overrides=args.overrides)   # planned_steps has checked it
    print(f"{args.preset}: {len(shapes)} shapes (batch x width frames), {args.order} first; "
          f"train.max_batch_seconds={cfg.train.max_batch_seconds:g}, train.num_buckets={cfg.train.num_buckets}",
          file=sys.stderr, flush=True)
    results = {}
    for name, variant in variants.items():
        try:
            load_config(args.preset, overrides=args.overrides + variant)
        except UserError as exc:
            parser.error(str(exc))
    for cycle in range(1, max(1, args.cycles) + 1):
        for name, variant in variants.items():
            label = name if cycle == 1 else f"{name} ({cycle})"
            print(f"running {label} ...", file=sys.stderr, flush=True)
            results[label] = harness.run_child(__file__, {**spec, "variant": variant, "name": label,
                                                          "repeat": max(1, args.repeat)}, env=environments[name])
            results[label]["environment"] = environments[name]
    print(table(shapes, results))
    for label, result in results.items():
        name = label.rsplit(" (", 1)[0] if label not in variants else label
        planned = estimate(load_config(args.preset, overrides=args.overrides + variants[name]),
                           training=True, num_buckets=len(shapes) - 1)
        print(f"{label}: {result['audio_seconds_per_second']:.2f} audio s/s in pass 2; peak {result['peak_gib']:.2f} GiB "
              f"(started at {result['start_rss_gib']:.2f} GiB); envcheck's estimate for {len(shapes)} shapes "
              f"{planned.total_bytes / GIB:.2f} GiB; per pass-2 step {fault_summary(result)}")
    if len(variants) == 2:
        for line in harness.pair_ratios(results):
            print(line)
    if args.json:
        path = harness.write_record(args.json, {"preset": args.preset, "overrides": args.overrides,
                                                "shapes": [{k: s[k] for k in ("batch", "width")} for s in shapes],
                                                "results": results})
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
