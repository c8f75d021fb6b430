"""Time a full envcheck run (every probe, no --stage), as users and the Makefile run it.

    python bench/envcheck_time.py [--repeat N] [ENVCHECK ARGS...]     e.g. --python /opt/venv/bin/python

Runs `python -m envcheck --json [ARGS]` N times (default 3) from the repository root and prints, per
run, wall seconds, the CPU seconds of envcheck and all its probe processes, and the slowest probes;
the last line is the median wall time in seconds. The target is < 15 s on 2 cores in the Docker image.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args, envcheck_args = parser.parse_known_args()
    command = [sys.executable, "-m", "envcheck", *envcheck_args, "--json"]
    walls = []
    for i in range(args.repeat):
        cpu_before = children_cpu_seconds()
        start = time.monotonic()
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.monotonic() - start
        cpu = children_cpu_seconds() - cpu_before
        walls.append(wall)
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            print(f"run {i + 1}: envcheck exited {proc.returncode} without JSON:\n{proc.stderr[-2000:]}")
            return 1
        slowest = sorted(report["probes"], key=lambda p: -p["duration_s"])[:4]
        print(f"run {i + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU, exit {report['exit_code']}, {len(report['probes'])} "
              "checks; slowest: " + ", ".join(f"{p['id']} {p['duration_s']:.1f} s" for p in slowest))
    print(f"{statistics.median(walls):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
