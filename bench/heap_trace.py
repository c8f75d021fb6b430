"""Who holds a training step's resident memory: live heap blocks of >= 1 MiB by owner.

    cc -O2 -shared -fPIC -o runs/heap_trace.so bench/heap_trace.c          # on the host, once
    docker run --rm --init -v $PWD:/opt/ds2 -w /opt/ds2 -e LD_PRELOAD=/opt/ds2/runs/heap_trace.so \\
        ds2:cpu python bench/heap_trace.py --preset seed --order frequent --shapes 1

It trains one step on each of the shapes bench/shape_memory.py would pick (same options), and after
each step asks the tracer (bench/heap_trace.c) for every live block of at least 1 MiB, how much of
it is resident, and the call stack that allocated it. Printed per step: the resident GiB of each
owner, told apart by the frames of that stack:

    memory pool          MindSpore's memory pool (tensors; the block is reserved, resident where touched)
    oneDNN scratchpads   buffers oneDNN allocates when a primitive is created and keeps while it lives
    oneDNN other         oneDNN's other buffers (memory objects a kernel allocates, e.g. weight copies)
    index vectors        std::vector<size_t> that MindSpore's CPU kernels keep (8 bytes per element)
    NumPy arrays         arrays owned by NumPy (the optimizer's moments start as NumPy zeros)
    other                everything else

then the largest oneDNN scratchpads by size. The sum falls short of VmRSS by what lives in blocks
under 1 MiB, the libraries' code and data, and Python.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import harness, shape_memory  # noqa: E402

GIB = 1024 ** 3
MIB = 1024 ** 2
BUILD = "cc -O2 -shared -fPIC -o runs/heap_trace.so bench/heap_trace.c"
# (owner, a substring of some frame of its stack), the first match wins
OWNERS: Tuple[Tuple[str, str], ...] = (
    ("memory pool", "DynamicMemPoolBestFit"),
    ("oneDNN scratchpads", "dnnl_primitive_create"),
    ("oneDNN other", "libdnnl"),
    ("index vectors", "_ZNSt6vectorImSaImEE"),
    ("NumPy arrays", "_multiarray_umath"),
)
OTHER = "other"


def parse_report(text: str) -> List[Dict]:
    """The tracer's report: [{"bytes", "resident", "stack": [frame, ...]}, ...]."""
    blocks = []
    for line in text.splitlines():
        if line.startswith("BLOCK "):
            _, size, resident = line.split()
            blocks.append({"bytes": int(size), "resident": int(resident), "stack": []})
        elif blocks:
            blocks[-1]["stack"].append(line)
    return blocks


def owner(stack: Sequence[str]) -> str:
    for name, marker in OWNERS:
        if any(marker in frame for frame in stack):
            return name
    return OTHER


def summarize(blocks: List[Dict]) -> Dict:
    """Resident bytes, reserved bytes and block count per owner; oneDNN scratchpads by size."""
    owners: Dict[str, Dict[str, int]] = {}
    for name in [n for n, _ in OWNERS] + [OTHER]:
        owners[name] = {"blocks": 0, "bytes": 0, "resident": 0}
    scratchpads: Counter = Counter()
    for block in blocks:
        name = owner(block["stack"])
        owners[name]["blocks"] += 1
        owners[name]["bytes"] += block["bytes"]
        owners[name]["resident"] += block["resident"]
        if name == "oneDNN scratchpads":
            scratchpads[(round(block["bytes"] / MIB), round(block["resident"] / MIB))] += 1
    return {"owners": owners,
            "scratchpads_mib": [{"count": n, "mib": size, "resident_mib": resident}
                                for (size, resident), n in sorted(scratchpads.items(), key=lambda kv: -kv[0][1] * kv[1])]}


def format_summary(summary: Dict) -> str:
    """One step's summary (summarize() with its step, shape and rss_gib) as the printed table."""
    shape = summary["shape"]
    lines = [f"after the step on shape {summary['step']} ({shape['batch']} x {shape['width']} frames): "
             f"VmRSS {summary['rss_gib']:.2f} GiB",
             f"  {'owner':<20} {'blocks':>6} {'reserved GiB':>12} {'resident GiB':>12}"]
    total = 0
    for name, row in summary["owners"].items():
        total += row["resident"]
        lines.append(f"  {name:<20} {row['blocks']:>6} {row['bytes'] / GIB:>12.2f} {row['resident'] / GIB:>12.2f}")
    lines.append(f"  {'blocks >= 1 MiB':<20} {'':>6} {'':>12} {total / GIB:>12.2f}")
    pads = ", ".join(f"{p['count']} x {p['mib']} MiB ({p['resident_mib']} resident)"
                     for p in summary["scratchpads_mib"][:6])
    if pads:
        lines.append(f"  oneDNN scratchpads, largest first: {pads}")
    return "\n".join(lines)


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shape_memory.add_step_options(parser)
    parser.add_argument("--json", metavar="PATH", help="also write the summaries here as JSON")
    args = parser.parse_args(argv)
    try:
        report = ctypes.CDLL(None).heap_trace_report
    except AttributeError:
        print(f"heap_trace: the tracer is not loaded; build it on the host ({BUILD}) and run this "
              f"with LD_PRELOAD=<checkout>/runs/heap_trace.so", file=sys.stderr)
        return 2
    report.argtypes = [ctypes.c_char_p]

    output = Path(args.json) if args.json else None
    if output is not None:
        try:   # before the steps, which take minutes
            output.parent.mkdir(parents=True, exist_ok=True)
            output.touch()
        except OSError as exc:
            print(f"heap_trace: cannot write {output} ({exc.strerror}); choose another --json path",
                  file=sys.stderr)
            return 2
    spec = shape_memory.planned_steps(parser, args)
    summaries = []

    with tempfile.TemporaryDirectory() as tmp:
        def after_step(number: int) -> None:
            path = Path(tmp) / f"step{number}.txt"
            if report(str(path).encode()) != 0:
                raise SystemExit(f"heap_trace: the tracer could not write {path}")
            summary = summarize(parse_report(path.read_text()))
            summary.update(step=number, shape={k: spec["shapes"][number - 1][k] for k in ("batch", "width")},
                           rss_gib=harness.process_gib("VmRSS"))
            summaries.append(summary)
            print(format_summary(summary), flush=True)

        result = shape_memory.measure(spec, after_step=after_step)
    print(f"peak VmHWM {result['peak_gib']:.2f} GiB")
    if output is not None:
        output.write_text(json.dumps({"command": sys.argv, "overrides": args.overrides, "steps": summaries,
                                      "peak_gib": result["peak_gib"]}, indent=2) + "\n")
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
