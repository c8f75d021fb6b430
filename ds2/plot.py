"""curves.png: training loss per step and dev CER / WER per epoch, from metrics.jsonl records."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ds2 import files

# Steps averaged for the smoothed loss line (the raw per-batch loss is drawn faintly behind it).
SMOOTHING_STEPS = 20


def plot_curves(records: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train"]
    dev = [r for r in records if r.get("kind") == "dev"]
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps = np.array([r["step"] for r in train])
        loss = np.array([r["loss"] for r in train], dtype=float)
        ax_loss.plot(steps, loss, color="tab:blue", alpha=0.25, linewidth=0.8)
        if len(loss) >= SMOOTHING_STEPS:
            smooth = np.convolve(loss, np.ones(SMOOTHING_STEPS) / SMOOTHING_STEPS, mode="valid")
            ax_loss.plot(steps[SMOOTHING_STEPS - 1:], smooth, color="tab:blue",
                         label=f"mean of {SMOOTHING_STEPS} steps")
            ax_loss.legend()
        ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("CTC loss per utterance")
    ax_loss.set_title("training loss")
    if dev:
        steps = [r["step"] for r in dev]
        ax_dev.plot(steps, [r["dev_cer"] for r in dev], marker="o", label="CER")
        ax_dev.plot(steps, [r["dev_wer"] for r in dev], marker="s", label="WER")
        ax_dev.legend()
    ax_dev.set_xlabel("step")
    ax_dev.set_ylabel("error rate (greedy)")
    ax_dev.set_ylim(bottom=0)
    ax_dev.set_title("dev")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=100)
    plt.close(fig)
    files.write_bytes(path, image.getvalue())
