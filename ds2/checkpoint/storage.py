"""Training checkpoints on disk: one MindSpore .ckpt file per save, written atomically, and the one
restore that sets a ds2 checkpoint's values into a model (ds2 train --resume, ds2 eval, transcribe).

A checkpoint holds everything needed to continue or to evaluate:
- the model's parameters and BatchNorm statistics, under the model's own names;
- the optimizer's state (moments, step counters) under "optimizer.<name>";
- a JSON string under META_KEY: the resolved config, the schedule step, the data position
  (epoch, batch index of the next batch), metrics, and the environment that wrote it.

Files live in <run_dir>/checkpoints/: step-<step>.ckpt (the newest `keep_last` are kept) and
best.ckpt (a hard link to the step file with the lowest dev WER so far, ties broken by dev CER,
or a copy where links are not possible). A save goes to a temporary file in the same directory, is fsynced, then
renamed over the final name, so a crash (even SIGKILL) leaves either the old or the new file,
never a partial one. Each checkpoint has a sidecar <name>.sha256, written before the rename; load
verifies it, so a file truncated or damaged later (copying, a full disk) is detected
(CorruptCheckpoint) and `ds2 train --resume` falls back to the previous checkpoint.

restore() takes ds2's own checkpoints only: every name and shape exactly as the model and optimizer
have them. Checkpoints of other versions and code bases go through ds2.checkpoint.reconcile (ds2
convert), which writes a ds2 checkpoint that restore() takes.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ds2.errors import UserError, first_line

META_KEY = "ds2_meta"
OPTIMIZER_PREFIX = "optimizer."
STEP_FILE = re.compile(r"^step-(\d+)\.ckpt$")
BEST_NAME = "best.ckpt"


class CorruptCheckpoint(UserError, ValueError):
    """The file is truncated, damaged, or not readable as a MindSpore checkpoint."""


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def environment() -> Dict[str, str]:
    """Versions and machine facts stored with every checkpoint (for diagnosing mismatches)."""
    import numpy
    import mindspore

    return {
        "python": sys.version.split()[0],
        "mindspore": mindspore.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or cpu_model(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _fsync_directory(directory: Path) -> None:
    fd = os.open(str(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(path, model, optimizer, meta: Dict[str, Any]) -> None:
    """Write model + optimizer state + meta to `path` atomically."""
    import mindspore as ms

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [{"name": name, "data": param} for name, param in model.parameters_and_names()]
    model_ids = {id(param) for _, param in model.parameters_and_names()}
    if optimizer is not None:
        # The optimizer also lists the model's parameters; store only its own state.
        entries += [{"name": OPTIMIZER_PREFIX + name, "data": param}
                    for name, param in optimizer.parameters_and_names() if id(param) not in model_ids]
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".ckpt")
    os.close(handle)
    try:
        ms.save_checkpoint(entries, tmp_name, append_dict={META_KEY: json.dumps(meta)})
        with open(tmp_name, "rb") as written:
            os.fsync(written.fileno())
        # The checksum goes first: a crash between the two renames leaves a sidecar without its
        # checkpoint (ignored), never a checkpoint with a stale checksum.
        sidecar_tmp = Path(tmp_name + ".sha256")
        sidecar_tmp.write_text(f"{file_sha256(tmp_name)}  {path.name}\n")
        os.replace(sidecar_tmp, checksum_path(path))
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)


def load(path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(parameters by name, meta) of a checkpoint written by `save`."""
    import mindspore as ms

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: give an existing file, or best / last of the run in run_dir")
    sidecar = checksum_path(path)
    if sidecar.is_file():
        expected = sidecar.read_text().split()[0]
        if file_sha256(path) != expected:
            raise CorruptCheckpoint(f"{path}: SHA-256 does not match {sidecar.name} (truncated or damaged)")
    try:
        values = ms.load_checkpoint(str(path))
    except (RuntimeError, ValueError) as exc:
        raise CorruptCheckpoint(f"{path}: MindSpore cannot read it ({first_line(exc)}); "
                                f"check it with python -m envcheck --checkpoint {path}") from exc
    meta_text = values.pop(META_KEY, None)
    if meta_text is None:
        raise UserError(f"{path} has no {META_KEY!r} entry: not a ds2 training checkpoint; convert it first "
                        f"with ds2 convert {path}")
    return values, json.loads(meta_text)


def read_checkpoint(path) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """(entries by name, ds2 meta or None) of any MindSpore .ckpt file, ds2's or not; MindSpore's
    own error when it cannot parse it."""
    import mindspore as ms

    values = ms.load_checkpoint(str(path))
    meta_text = values.pop(META_KEY, None)
    return values, (json.loads(meta_text) if isinstance(meta_text, str) else None)


def restore(values: Dict[str, Any], model, optimizer=None) -> None:
    """Copy stored values into model (and optimizer). Every parameter must be present, same shape."""
    targets: List[Tuple[str, Any]] = list(model.parameters_and_names())
    if optimizer is not None:
        model_ids = {id(param) for _, param in targets}
        targets += [(OPTIMIZER_PREFIX + name, param) for name, param in optimizer.parameters_and_names()
                    if id(param) not in model_ids]
    missing = [name for name, _ in targets if name not in values]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} parameters, e.g. {missing[:3]}")
    for name, param in targets:
        stored = values[name]
        if tuple(stored.shape) != tuple(param.shape):
            raise ValueError(f"{name}: checkpoint shape {tuple(stored.shape)}, model shape {tuple(param.shape)}")
        param.set_data(stored.astype(param.dtype))


def step_checkpoints(run_dir) -> List[Path]:
    """step-N.ckpt files of a run, oldest first."""
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def step_path(run_dir, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:07d}.ckpt"


def prune(run_dir, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints (best.ckpt is a separate link)."""
    for old in step_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        old.unlink()
        checksum_path(old).unlink(missing_ok=True)


def mark_best(run_dir, source: Path) -> None:
    """Make best.ckpt the same file as `source`, atomically."""
    best = checkpoint_dir(run_dir) / BEST_NAME
    tmp = best.with_name(".tmp-" + BEST_NAME)
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:  # file systems without hard links
        shutil.copyfile(source, tmp)
    if checksum_path(source).is_file():
        shutil.copyfile(checksum_path(source), checksum_path(tmp))
        os.replace(checksum_path(tmp), checksum_path(best))
    os.replace(tmp, best)
    _fsync_directory(best.parent)


def resolve(run_dir, which: str) -> Path:
    """'last' -> newest step checkpoint, 'best' -> best.ckpt, anything else -> that path."""
    if which == "last":
        found = step_checkpoints(run_dir)
        if not found:
            raise UserError(f"no step checkpoints in {checkpoint_dir(run_dir)}: train first (ds2 train, make train), "
                            f"or point --set run_dir=... at the run")
        return found[-1]
    if which == "best":
        best = checkpoint_dir(run_dir) / BEST_NAME
        if not best.is_file():
            if not step_checkpoints(run_dir):
                raise UserError(f"no checkpoints in {checkpoint_dir(run_dir)}: train first (ds2 train, make train), "
                                f"or point --set run_dir=... at the run")
            raise UserError(f"no {BEST_NAME} in {checkpoint_dir(run_dir)} yet (it is written after the first dev "
                            f"evaluation, at the end of an epoch); use --checkpoint last")
        return best
    return Path(which)


def best_metric(run_dir) -> Optional[Dict[str, float]]:
    """{"dev_wer": .., "dev_cer": ..} stored in best.ckpt, or None if there is none yet."""
    best = checkpoint_dir(run_dir) / BEST_NAME
    if not best.is_file():
        return None
    try:
        stored = load(best)[1].get("metrics", {})
    except CorruptCheckpoint as exc:
        # best.ckpt is a hard link to a step checkpoint, so damage to either shows here. Without its
        # metrics the next dev evaluation becomes best.ckpt again.
        print(f"ds2: {exc}; the next dev evaluation replaces it", file=sys.stderr)
        return None
    if "dev_wer" not in stored:
        return None
    return {"dev_wer": stored["dev_wer"], "dev_cer": stored.get("dev_cer", float("inf"))}


def is_better(candidate: Dict[str, float], best: Optional[Dict[str, float]]) -> bool:
    """True when `candidate` should become best.ckpt: lower dev WER, ties broken by lower dev CER.

    WER is what users report and compare; on a small dev set many epochs share a WER, and CER
    then still tells a better model from a worse one.
    """
    if "dev_wer" not in candidate:
        return False
    if best is None:
        return True
    return (candidate["dev_wer"], candidate.get("dev_cer", float("inf"))) < \
        (best["dev_wer"], best.get("dev_cer", float("inf")))
