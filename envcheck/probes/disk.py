"""Free disk where the stages write: the data directory (corpus, manifests, feature cache) and the
run directory (checkpoints, metrics, plots).

Space needed, estimated from ds2's config:
    data, synthetic corpus   utterances x 4 s x (32 kB/s of 16-bit audio + 64.4 kB/s of float32
                             features: 100 frames/s x 161 bins x 4 bytes)
    data, LibriSpeech        hours of the chosen subsets x (63 MB/h of FLAC, twice when the archives are
                             downloaded and extracted here, + 232 MB/h of features)
    runs                     (keep_last + 1) checkpoints of 3 x 4 bytes per parameter (weights and Adam's
                             moments) + 200 MB for logs, metrics and plots
A directory that does not exist yet is judged by its nearest existing parent.
"""
from __future__ import annotations

import os
import shutil

from envcheck.result import FAIL, PASS, WARN, worse
from envcheck.settings import config_value, configured

MB, GIB = 1000 ** 2, 1024 ** 3
LIBRISPEECH_HOURS = {
    "train-clean-100": 100.6, "train-clean-360": 363.6, "train-other-500": 496.7,
    "dev-clean": 5.4, "dev-other": 5.3, "test-clean": 5.4, "test-other": 5.1,
}
FLAC_BYTES_PER_HOUR = 63 * MB
FEATURE_BYTES_PER_SECOND = 100 * 161 * 4
AUDIO_BYTES_PER_SECOND = 16000 * 2
SYNTH_SECONDS_PER_UTTERANCE = 4.0


def data_bytes(settings: dict) -> int:
    source = config_value(settings, "data.source", "synth")
    if source == "synth":
        utterances = sum(int(config_value(settings, f"data.synth_{part}", 0)) for part in ("train", "dev", "test"))
        return int(utterances * SYNTH_SECONDS_PER_UTTERANCE * (AUDIO_BYTES_PER_SECOND + FEATURE_BYTES_PER_SECOND))
    if source == "librispeech":
        subsets = [s for key in ("train_subsets", "dev_subsets", "test_subsets")
                   for s in config_value(settings, f"data.{key}", []) or []]
        hours = sum(LIBRISPEECH_HOURS.get(s, 0.0) for s in subsets)
        audio_copies = 1 if config_value(settings, "data.librispeech_dir") else 2
        return int(hours * (audio_copies * FLAC_BYTES_PER_HOUR + 3600 * FEATURE_BYTES_PER_SECOND))
    return GIB  # given manifests: the audio is elsewhere; room for the feature cache


def run_bytes(settings: dict) -> int:
    """Checkpoints (weights and Adam's two moments, train.keep_last of them and best.ckpt) and logs."""
    from ds2.shapes import parameter_count

    cfg = configured(settings)
    if cfg is None:
        return GIB
    params = parameter_count(cfg.model, cfg.features.n_bins)
    return params * 4 * 3 * (cfg.train.keep_last + 1) + 200 * MB


def _existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _check(label: str, path: str, need: int) -> dict:
    existing = _existing(path)
    free = shutil.disk_usage(existing).free
    return {"what": label, "path": path, "checked": existing, "free_bytes": free, "need_bytes": need,
            "writable": os.access(existing, os.W_OK), "free": f"{free / GIB:.1f} GiB",
            "need": f"{need / GIB:.1f} GiB"}


def run(settings: dict) -> dict:
    stage = settings.get("stage")
    checks = [
        _check("data", config_value(settings, "data.data_dir", "runs/data"), data_bytes(settings)),
        _check("runs", config_value(settings, "run_dir", "runs"), run_bytes(settings)),
    ]
    # The directory the stage writes to blocks it when short; the other only warns.
    blocking = {"preprocess": {"data"}, "train": {"runs"}, "eval": {"runs"}, None: {"data", "runs"}}[stage]
    details = {"checks": checks}
    problems, status, findings = [], PASS, []
    for c in checks:
        if not c["writable"]:
            problems.append(f"{c['what']} directory {c['path']} is not writable (checked {c['checked']})")
            findings.append("dir-not-writable")
        elif c["free_bytes"] < c["need_bytes"]:
            problems.append(f"{c['what']} directory {c['path']}: {c['free']} free, needs about {c['need']}")
            findings.append("disk-low")
        else:
            continue
        status = worse(status, FAIL if c["what"] in blocking else WARN)
    if problems:
        details["problem"] = "; ".join(problems)
        return {"status": status, "summary": "; ".join(problems), "details": details, "findings": findings}
    return {"status": PASS, "summary": "; ".join(f"{c['what']} {c['path']}: {c['free']} free, needs about {c['need']}"
                                                   for c in checks), "details": details}
