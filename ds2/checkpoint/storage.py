"""Training checkpoints on disk: one MindSpore .ckpt file per save, written atomically, and the one
restore that sets a ds2 checkpoint's values into a model (ds2 train --resume, ds2 eval, transcribe).

A checkpoint holds everything needed to continue or to evaluate:
- the model's parameters and BatchNorm statistics, under the model's own names;
- the optimizer's state (moments, step counters) under "optimizer.<name>";
- a JSON string under META_KEY: the resolved config, the schedule step, the data position
  (epoch, batch index of the next batch), metrics, and the environment that wrote it.

Files live in <run_dir>/checkpoints/: step-<step>.ckpt (the newest `keep_last` are kept) and
best.ckpt (a hard link to the step file with the lowest dev WER so far, ties broken by dev CER,
or a copy where links are not possible). A save goes through ds2.files: MindSpore writes into a private
staging folder beside the checkpoint, whence the file is fsynced and renamed over the final name, so a
crash (even SIGKILL) or a full disk leaves either the old or the new file, never a partial one, and no
MindSpore .tmp file in checkpoints/. Weights holding a NaN or an infinity are refused (NonFiniteWeights),
never saved. Each checkpoint has a sidecar <name>.sha256, written before the rename; load
verifies it, so a file truncated or damaged later (copying, a full disk) is detected
(CorruptCheckpoint) and `ds2 train --resume` falls back to the previous checkpoint. A checkpoint whose
sidecar is lost is still checked: MindSpore writes a CRC-32 of the whole file at its end (crc_check),
which load verifies; a file with neither (written before ds2 saved the CRC) is loaded with a warning.
Every stored floating-point value must be finite, and the stored meta must be a JSON object.

restore() takes ds2's own checkpoints only: every name and shape exactly as the model and optimizer
have them. Checkpoints of other versions and code bases go through ds2.checkpoint.reconcile (ds2
convert), which writes a ds2 checkpoint that restore() takes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ds2 import files
from ds2.errors import DataError, UserError, first_line

META_KEY = "ds2_meta"
OPTIMIZER_PREFIX = "optimizer."
STEP_FILE = re.compile(r"^step-(\d+)\.ckpt$")
BEST_NAME = "best.ckpt"
# MindSpore's save_checkpoint(crc_check=True) ends the file with b"crc_num" and the CRC-32 of the rest in
# 10 big-endian bytes; load_checkpoint(crc_check=True) verifies it.
CRC_MARKER = b"crc_num"
CRC_TRAILER_BYTES = len(CRC_MARKER) + 10
# What to do about a checkpoint that cannot be trusted.
CHECKPOINT_FIX = "use another checkpoint (--checkpoint last, or a step-*.ckpt), or train again"
SHA256_HEX_DIGITS = 64


class CorruptCheckpoint(DataError):
    """The file is truncated, damaged, or not readable as a MindSpore checkpoint."""


class NonFiniteWeights(UserError):
    """The weights to be saved hold a NaN or an infinity: no checkpoint is written."""


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


def current_umask() -> int:
    """The process's umask (reading it means setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def non_finite_entries(entries: List[Dict[str, Any]]) -> List[str]:
    """Names of the entries whose values hold a NaN or an infinity."""
    import numpy as np

    bad = []
    for entry in entries:
        values = entry["data"].asnumpy()
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            bad.append(entry["name"])
    return bad


def save(path, model, optimizer, meta: Dict[str, Any]) -> None:
    """Write model + optimizer state + meta to `path` atomically (ds2.files), refusing non-finite values."""
    import mindspore as ms

    path = Path(path)
    entries = [{"name": name, "data": param} for name, param in model.parameters_and_names()]
    model_ids = {id(param) for _, param in model.parameters_and_names()}
    if optimizer is not None:
        # The optimizer also lists the model's parameters; store only its own state.
        entries += [{"name": OPTIMIZER_PREFIX + name, "data": param}
                    for name, param in optimizer.parameters_and_names() if id(param) not in model_ids]
    bad = non_finite_entries(entries)
    if bad:
        raise NonFiniteWeights(f"not writing {path}: {len(bad)} parameters hold NaN or infinite values (e.g. "
                               f"{', '.join(bad[:3])}); lower train.lr or train.grad_clip and resume from the last "
                               f"checkpoint")
    # MindSpore writes the file itself (and a .tmp of its own while it does): into a private folder beside
    # the checkpoint, whence the file is renamed into place.
    with files.staging(path) as work:
        written = work / path.name
        # A failed save is the one line below: MindSpore's own CRITICAL log line about it is left out.
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        try:
            ms.save_checkpoint(entries, str(written), append_dict={META_KEY: files.json_text(meta)},
                               crc_check=True)
        except OSError as exc:
            raise files.write_error(path, exc) from None
        except RuntimeError as exc:  # MindSpore reports a failed write (a full disk) as a RuntimeError
            raise files.WriteError(f"cannot write {path.name} in {path.parent}/ ({first_line(exc)}): check the "
                                   f"disk has room and the folder is writable, then resume") from None
        finally:
            logging.disable(previous)
        # The checksum goes first: a crash between the two renames leaves a sidecar without its
        # checkpoint (ignored), never a checkpoint with a stale checksum.
        files.write_text(checksum_path(path), f"{file_sha256(written)}  {path.name}\n")
        files.publish_file(written, path)


def has_crc(path: Path) -> bool:
    """True when the file ends with MindSpore's CRC-32 trailer (saved with crc_check=True)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < CRC_TRAILER_BYTES:
            return False
        f.seek(-CRC_TRAILER_BYTES, os.SEEK_END)
        return f.read(len(CRC_MARKER)) == CRC_MARKER


def read_sidecar(sidecar: Path) -> str:
    """The SHA-256 a checksum sidecar holds ("<64 hex digits>  <name>"), or CorruptCheckpoint."""
    try:
        fields = sidecar.read_bytes().split()
    except OSError as exc:
        raise CorruptCheckpoint(sidecar, f"cannot read it ({exc.strerror or exc})", "check its permissions") from None
    digest = fields[0].decode("ascii", errors="replace").lower() if fields else ""
    if len(digest) != SHA256_HEX_DIGITS or any(c not in "0123456789abcdef" for c in digest):
        raise CorruptCheckpoint(sidecar, "not a SHA-256 checksum line",
                                "delete it to load the checkpoint with its own CRC check only")
    return digest


def check_values(path: Path, values: Dict[str, Any]) -> None:
    """CorruptCheckpoint naming the first stored floating-point value that is not finite."""
    import numpy as np

    for name, value in values.items():
        asnumpy = getattr(value, "asnumpy", None)
        if asnumpy is None:
            continue
        array = asnumpy()
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise CorruptCheckpoint(path, f"{name} holds values that are not finite numbers (NaN or infinity)",
                                    CHECKPOINT_FIX, place=f"entry {name}")


def _mindspore_load(path: Path, crc_check: bool = False) -> Dict[str, Any]:
    """ms.load_checkpoint, with anything it raises on a damaged file made a CorruptCheckpoint."""
    import mindspore as ms

    try:
        return ms.load_checkpoint(str(path), crc_check=crc_check)
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, OverflowError, EOFError) as exc:
        raise CorruptCheckpoint(path, f"MindSpore cannot read it ({first_line(exc)})",
                                f"{CHECKPOINT_FIX}; python -m envcheck --checkpoint {path} says more") from None


def _meta(path: Path, meta_text: Any) -> Dict[str, Any]:
    try:
        meta = json.loads(meta_text)
    except (TypeError, ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict):
        raise CorruptCheckpoint(path, f"its {META_KEY!r} entry is not a JSON object", CHECKPOINT_FIX)
    return meta


def load(path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(parameters by name, meta) of a checkpoint written by `save`, verified: by its sidecar's SHA-256
    when there is one, else by its CRC-32; every floating-point value finite."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: give an existing file, or best / last of the run in run_dir")
    sidecar = checksum_path(path)
    if sidecar.is_file():
        if file_sha256(path) != read_sidecar(sidecar):
            raise CorruptCheckpoint(path, f"SHA-256 does not match {sidecar.name} (truncated or damaged)",
                                    CHECKPOINT_FIX)
        values = _mindspore_load(path)
    elif has_crc(path):
        values = _mindspore_load(path, crc_check=True)
    else:
        values = _mindspore_load(path)
        print(f"ds2: {path} has no {sidecar.name} and no CRC: it was loaded unverified", file=sys.stderr)
    meta_text = values.pop(META_KEY, None)
    if meta_text is None:
        raise CorruptCheckpoint(path, f"no {META_KEY!r} entry: cut off, or not a ds2 training checkpoint",
                                f"{CHECKPOINT_FIX}; a checkpoint of another code base goes through ds2 convert {path}")
    meta = _meta(path, meta_text)
    check_values(path, values)
    return values, meta


def read_checkpoint(path) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """(entries by name, ds2 meta or None) of any MindSpore .ckpt file, ds2's or not. MindSpore's own error
    when it cannot parse it (its CRC is checked when it has one): envcheck's checkpoint probe reports it as
    it is, and ds2 convert in one line; CorruptCheckpoint for a meta that is not JSON or a non-finite value."""
    import mindspore as ms

    path = Path(path)
    values = ms.load_checkpoint(str(path), crc_check=has_crc(path))
    meta_text = values.pop(META_KEY, None)
    meta = _meta(path, meta_text) if isinstance(meta_text, str) else None
    check_values(path, values)
    return values, meta


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


def run_folder(checkpoint_path, fallback) -> Path:
    """The run a checkpoint belongs to: the folder holding its checkpoints/ folder, else `fallback`."""
    folder = Path(checkpoint_path).resolve().parent
    return folder.parent if folder.name == "checkpoints" else Path(fallback)


def step_path(run_dir, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:07d}.ckpt"


def prune(run_dir, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints (best.ckpt is a separate link)."""
    for old in step_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        old.unlink()
        checksum_path(old).unlink(missing_ok=True)


def mark_best(run_dir, source: Path) -> None:
    """Make best.ckpt the same file as `source` (a hard link, or a copy), its sidecar first, atomically."""
    best = checkpoint_dir(run_dir) / BEST_NAME
    if checksum_path(source).is_file():
        files.link_or_copy(checksum_path(source), checksum_path(best))
    files.link_or_copy(source, best)


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
