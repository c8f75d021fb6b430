"""Draw envcheck/data/compat-matrix.json as a heat map: mindspore (rows) by numpy (columns).

    MPLBACKEND=Agg python bench/compat_heatmap.py [--matrix envcheck/data/compat-matrix.json] [--out docs/compat-matrix.png]

Each cell is split in two: numba 0.53.1 on the left, the newest numba that installs beside that numpy on
the right, coloured pass / warn / fail / refused by the resolver; a letter names the first error, listed
under the map. The pinned combination (docker/requirements/cpu.lock) has a black frame. Needs matplotlib
(the CPU image has it: `make compat-matrix` runs this there).
"""
from __future__ import annotations

import argparse
import string
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from envcheck import compat, versions  # noqa: E402

COLOURS = {"pass": "#4caf50", "warn": "#ffb300", "fail": "#e53935", compat.REFUSED: "#9e9e9e"}
LABELS = {"pass": "pass", "warn": "warn (only torch 1.7.1 fails)", "fail": "fail",
          compat.REFUSED: "refused by the resolver"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=Path, default=REPO / "envcheck" / "data" / "compat-matrix.json")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "compat-matrix.png")
    args = parser.parse_args()

    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    matrix = compat.load(args.matrix)
    records = compat.measured(matrix)
    lock = next((r for r in matrix["combinations"] if r.get("set") == "cpu.lock"), None)
    ms_versions = sorted({r["mindspore"] for r in records}, key=versions.version_key)
    np_versions = sorted({r["numpy"] for r in records}, key=versions.version_key)
    causes = {}   # first error -> letter, in order of appearance (rows top to bottom)

    fig, ax = plt.subplots(figsize=(11, 0.5 * len(ms_versions) + 3.2), dpi=90)
    for row, ms in enumerate(reversed(ms_versions)):
        for col, np_version in enumerate(np_versions):
            here = sorted((r for r in records if r["mindspore"] == ms and r["numpy"] == np_version),
                          key=lambda r: versions.version_key(r["numba"]))
            for half, record in enumerate(here[:2]):
                x = col + 0.5 * half
                ax.add_patch(Rectangle((x, row), 0.5, 1, facecolor=COLOURS[record["status"]],
                                       edgecolor="white", linewidth=1.5))
                label = record["numba"]
                if record["status"] not in ("pass", compat.REFUSED) and record.get("first_error"):
                    letter = causes.setdefault(record["first_error"], string.ascii_lowercase[len(causes) % 26])
                    label += f"\n({letter})"
                ax.text(x + 0.25, row + 0.5, label, ha="center", va="center", fontsize=7.5)
                if lock and all(lock[a] == record[a] for a in compat.AXES):
                    ax.add_patch(Rectangle((x, row), 0.5, 1, fill=False, edgecolor="black", linewidth=2.5, zorder=5))
    ax.set_xlim(0, len(np_versions))
    ax.set_ylim(0, len(ms_versions))
    ax.set_xticks([c + 0.5 for c in range(len(np_versions))], np_versions)
    ax.set_yticks([r + 0.5 for r in range(len(ms_versions))], list(reversed(ms_versions)))
    ax.set_xlabel("numpy   (each cell: numba 0.53.1 left, the newest numba for that numpy right)")
    ax.set_ylabel("mindspore")
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    counts = {s: sum(r["status"] == s for r in records) for s in COLOURS}
    ax.set_title(f"Measured: {len(records)} combinations in fresh Python {matrix.get('python', '3.9')} venvs "
                 f"with torch 1.7.1 and librosa 0.9.2 ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
                 "framed: the pinned set", fontsize=9)
    handles = [Patch(facecolor=c, label=LABELS[s]) for s, c in COLOURS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    notes = [f"({letter}) " + textwrap.shorten(error, 150) for error, letter in causes.items()]
    fig.text(0.01, 0.01, "\n".join(notes), fontsize=7, va="bottom", family="monospace")
    fig.subplots_adjust(left=0.11, right=0.8, top=0.93, bottom=0.08 + 0.022 * len(notes))
    fig.savefig(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB): {len(records)} combinations, "
          f"{len(causes)} distinct first errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
