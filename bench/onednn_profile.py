"""Where a training step's time goes, from oneDNN's verbose log: MindSpore's CPU kernels for the
convolutions, LSTMs and BatchNorm are oneDNN primitives, and DNNL_VERBOSE=1 logs each call's time.

    DNNL_VERBOSE=1 python bench/shape_memory.py --preset seed --modes dynamic --order frequent --shapes 1 > log 2>&1
    python bench/onednn_profile.py log

The log is cut into steps at each forward call of the first convolution (one input channel). The
first step (compile, warm-up) is left out. For every primitive (kind, implementation, propagation,
problem) it takes the count per step and the MINIMUM time over its calls: other jobs on a shared
machine only ever add time, so the minimum is the best estimate of the uncontended time. Printed:
the per-step sum of those minima by kind, beside the medians, with the achieved GFLOP/s of the LSTM
and convolution primitives (a backward pass counted as twice its forward's FLOPs), then the
largest primitives. The steps should all have one shape: a primitive absent from the last step
is not counted.
"""
from __future__ import annotations

import collections
import re
import statistics
import sys


def flops(kind: str, problem: str) -> float:
    """Forward FLOPs of one primitive call from its oneDNN problem string (0 if not counted)."""
    if kind == "rnn":
        m = re.search(r"l(\d+)t(\d+)mb(\d+)sic(\d+)slc(\d+)dhc(\d+)", problem)
        if m:
            layers, steps, batch, sic, slc, dhc = map(int, m.groups())
            return layers * steps * batch * 2 * 4 * dhc * (slc + sic)
    if kind == "convolution":
        v = {k: int(x) for k, x in re.findall(r"([a-z]+)(\d+)", problem.replace("_", ""))}
        return 2.0 * v["mb"] * v["ic"] * v["oc"] * v["oh"] * v["ow"] * v["kh"] * v["kw"]
    return 0.0


def _timed(line: str) -> bool:
    """A whole verbose line ends with the call's milliseconds (a line cut by other output does not)."""
    try:
        float(line.rsplit(",", 1)[-1])
        return True
    except ValueError:
        return False


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python bench/onednn_profile.py LOG (a run's output with DNNL_VERBOSE=1)")
    with open(sys.argv[1], errors="replace") as log:
        lines = [l.strip() for l in log]
    execs = [l for l in lines if l.startswith(("dnnl_verbose,exec", "onednn_verbose,exec")) and _timed(l)]
    starts = [i for i, l in enumerate(execs) if ",convolution," in l and "forward" in l and "_ic1oc" in l]
    steps = [execs[a:b] for a, b in zip(starts, starts[1:] + [len(execs)])]
    if not steps:
        sys.exit(f"{sys.argv[1]}: no oneDNN convolution calls; was the run started with DNNL_VERBOSE=1?")
    timed = steps[1:] if len(steps) > 1 else steps
    calls = collections.defaultdict(list)
    per_step = collections.Counter()
    for step in timed:
        for l in step:
            f = l.split(",")
            key = (f[3], f[4], f[5], f[-2] if f[3] in ("convolution", "rnn") else "")
            calls[key].append(float(f[-1]))
    for l in timed[-1]:
        f = l.split(",")
        per_step[(f[3], f[4], f[5], f[-2] if f[3] in ("convolution", "rnn") else "")] += 1
    best = {k: min(v) * per_step[k] for k, v in calls.items()}
    median = {k: statistics.median(v) * per_step[k] for k, v in calls.items()}
    total_best, total_median = sum(best.values()), sum(median.values())
    print(f"{len(timed)} timed steps; per step: sum of minima {total_best:.0f} ms, of medians {total_median:.0f} ms")
    by_kind = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for k in best:
        entry = by_kind[k[0] + " " + k[2]]
        entry[0] += best[k]
        entry[1] += median[k]
        entry[2] += flops(k[0], k[3]) * per_step[k]
    print("  min ms   share   median ms   fwd-GFLOP  GFLOP/s(min, bwd counted 2x)")
    for kind, (b, m, fl) in sorted(by_kind.items(), key=lambda kv: -kv[1][0]):
        factor = 2.0 if ("backward" in kind and "rnn" in kind) else 1.0
        rate = f"{factor * fl / b / 1e6:8.1f}" if fl else ""
        print(f"  {b:8.1f} {100 * b / total_best:5.1f} %  {m:9.1f}  {fl / 1e9:9.2f}  {rate}  {kind}")
    print("detail (per step):")
    for k, b in sorted(best.items(), key=lambda kv: -kv[1])[:16]:
        print(f"  {b:8.1f} ms min, {median[k]:8.1f} median, {per_step[k]:2d}x  {' '.join(k)}")


if __name__ == "__main__":
    main()
