"""Where a training step's time goes, by MindSpore operator type (MindSpore's own profiler).

    python bench/op_profile.py --preset seed                 # the epoch's most frequent shape
    python bench/op_profile.py --preset small --shapes 2 --out runs/bench/op_profile

It trains as bench/shape_memory.py does: one step on each shape (compiling), then, under
mindspore.Profiler, one more step on each. Printed: each operator type's total time over the
profiled steps, its share of the operators' sum, and that sum against the steps' wall time (what
is left is the framework between operators). bench/onednn_profile.py splits the oneDNN operators
(LSTM, convolutions) further, by primitive.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import shape_memory  # noqa: E402


def read_op_types(output: Path) -> List[Dict]:
    """The profiler's per-type table (FRAMEWORK/cpu_op_type_info_0.csv): [{"op", "count", "ms"}, ...]."""
    tables = sorted(output.glob("**/cpu_op_type_info_*.csv"))
    if not tables:
        raise SystemExit(f"op_profile: the profiler wrote no cpu_op_type_info table under {output}")
    rows = []
    for table in tables:
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                rows.append({"op": row["op_type"], "count": int(row["type_occurrences"]),
                             "ms": float(row["total_compute_time"])})
    return sorted(rows, key=lambda r: -r["ms"])


def format_table(rows: List[Dict], wall_seconds: float, top: int) -> str:
    total = sum(r["ms"] for r in rows)
    lines = [f"{'operator type':<26} {'calls':>5} {'ms':>9} {'share':>6}"]
    for r in rows[:top]:
        lines.append(f"{r['op']:<26} {r['count']:>5} {r['ms']:>9.0f} {100 * r['ms'] / total:>5.1f} %")
    rest = rows[top:]
    if rest:
        lines.append(f"{f'{len(rest)} other types':<26} {sum(r['count'] for r in rest):>5} "
                     f"{sum(r['ms'] for r in rest):>9.0f} {100 * sum(r['ms'] for r in rest) / total:>5.1f} %")
    lines.append(f"operators' sum {total / 1000:.2f} s of {wall_seconds:.2f} s wall in the profiled steps "
                 f"({100 * total / 1000 / wall_seconds:.0f} %)")
    return "\n".join(lines)


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shape_memory.add_step_options(parser)
    parser.add_argument("--top", type=int, default=15, help="rows before the rest is summed (default 15)")
    parser.add_argument("--out", metavar="DIR", help="keep the profiler's files here (default: a temporary folder)")
    args = parser.parse_args(argv)

    spec = shape_memory.planned_steps(parser, args)
    shapes = spec["shapes"]
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(args.out) if args.out else Path(tmp)
        profiler = []

        def after_step(number: int) -> None:
            if number == len(shapes):   # every shape compiled: profile pass 2
                from mindspore import Profiler
                profiler.append(Profiler(output_path=str(output)))

        result = shape_memory.measure(spec, after_step=after_step)
        profiler[0].analyse()
        sizes = ", ".join(f"{s['batch']} x {s['width']}" for s in shapes)
        print(f"{args.preset}: {sizes} frames; {result['audio_seconds_per_second']:.2f} audio s/s in the "
              f"profiled steps")
        print(format_table(read_op_types(output), sum(result["pass2_step_s"]), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
