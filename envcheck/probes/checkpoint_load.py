"""checkpoint.load: does the file given with --checkpoint load into the model the stage builds?

It runs in the interpreter under test, like every probe: reading a checkpoint and building the model
need that interpreter's MindSpore. In order:

1. The file exists, opens, is not empty and is not cut short. A MindSpore .ckpt is a sequence of
   protobuf entries, each the key byte 0x0A, a varint length and that many bytes (one entry per
   parameter slice, see mindspore/train/serialization.py). A file that ends inside an entry is
   truncated; MindSpore says only that it "may be corrupted". This step needs the standard library
   alone, so a broken file is reported before MindSpore is imported.
2. ds2 is imported: the interpreter's own, else the one beside envcheck (envcheck/child.py).
3. The model is built as the stage builds it: from the config stored in a ds2 checkpoint plus the
   --set overrides (what ds2 train --resume and ds2 eval do), else from the configured preset,
   --config and --set (what ds2 convert does). Except for stage eval, also the optimizer, as ds2
   train builds it (ds2.step.build_training_state): without --stage the file is checked for the
   stricter use, resuming training.
4. ds2.checkpoint.reconcile.reconcile decides what of the file goes where; its table is details["table"].
5. ds2's own loader, ds2.checkpoint.storage.restore (ds2 train --resume, ds2 eval), runs on the throwaway
   model: it takes only ds2 checkpoints whose names and shapes are exactly the model's.

FAIL: the file is missing, truncated or unreadable, or its model weights do not fit. WARN: an entry
had to be reshaped, the optimizer state would restart, or ds2's own loader would not take the file
as it is (ds2 convert writes a ds2 checkpoint from it). PASS otherwise.
"""
from __future__ import annotations

import os
import shlex
import traceback
from typing import Optional, Tuple

from envcheck import progress
from envcheck.probes import EVAL
from envcheck.probes import imports
from envcheck.result import FAIL, PASS, WARN
from envcheck.settings import config_value, configured

ENTRY_KEY = 0x0A      # protobuf field 1, length-delimited: a checkpoint entry, and an entry's name inside it
HEAD_BYTES = 512      # read at the start of each entry: its key, its length and its name


def _varint(data: bytes, pos: int) -> Tuple[Optional[int], int]:
    """(value, position after it) of the protobuf varint at data[pos]; (None, pos) where data ends first."""
    value, shift = 0, 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return None, pos


def _entry_name(head: bytes, start: int) -> str:
    """' (NAME)' of the entry whose bytes begin at head[start], when its name field is there; else ''."""
    if start >= len(head) or head[start] != ENTRY_KEY:
        return ""
    length, name_start = _varint(head, start + 1)
    if length is None or name_start + length > len(head):
        return ""
    return " (" + head[name_start:name_start + length].decode("utf-8", "replace") + ")"


def truncation(path: str) -> str:
    """Where a checkpoint file is cut short, or "" when it is not.

    Only a file that begins with at least one complete entry is judged: anything else (another
    format, an encrypted file, a cut inside the first entry) is left to MindSpore's reader.
    """
    size = os.path.getsize(path)
    offset, complete = 0, 0
    with open(path, "rb") as f:
        while offset < size:
            f.seek(offset)
            head = f.read(HEAD_BYTES)
            if head[0] != ENTRY_KEY:
                return ""
            length, start = _varint(head, 1)
            if length is None or offset + start + length > size:
                if complete == 0:
                    return ""
                name = "" if length is None else _entry_name(head, start)
                return f"after {complete} complete entries it ends inside entry {complete + 1}{name}, at byte {size}"
            offset += start + length
            complete += 1
    return ""


def _file_problem(path: str) -> Optional[Tuple[str, str]]:
    """(finding, summary) when the path is not a readable, non-empty file; None when it is."""
    if not os.path.exists(path):
        return "checkpoint-missing", f"no file at {path}"
    if not os.path.isfile(path):
        return "checkpoint-missing", f"{path} is not a file"
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        return "checkpoint-unreadable", f"cannot open {path}: {exc.strerror or exc}"
    if os.path.getsize(path) == 0:
        return "checkpoint-truncated", f"{path} is empty (0 bytes)"
    return None


def _convert_command(settings: dict, path: str) -> str:
    """The ds2 convert command for this file, with the options envcheck was given (the stage's)."""
    words = ["ds2", "convert", "--preset", settings["preset"]]
    if settings.get("config_path"):
        words += ["--config", settings["config_path"]]
    for override in settings.get("overrides") or []:
        words += ["--set", override]
    return " ".join(shlex.quote(word) for word in words + [path])


def _own_loader_refusal(storage, values: dict, meta: Optional[dict], model, optimizer) -> str:
    """Why ds2 train --resume / ds2 eval would not load the file as it is; "" when they would.

    They read it with ds2.checkpoint.storage.load, which wants the meta entry, and set it with
    ds2.checkpoint.storage.restore, which wants every name and shape exactly; restore runs on the throwaway
    model here, so what it says is what the stage would say.
    """
    if meta is None:
        return f"no {storage.META_KEY!r} entry: not a ds2 training checkpoint"
    try:
        storage.restore(values, model, optimizer)
    except Exception as exc:  # ds2 raises ValueError; MindSpore before 2.7 raised on a shape change itself
        return f"{type(exc).__name__}: {exc}"
    return ""


def run(settings: dict) -> dict:
    path = settings["checkpoint"]
    details = {"checkpoint": path,
               "run_checkpoints": os.path.join(config_value(settings, "run_dir", "runs"), "checkpoints"),
               "convert_command": _convert_command(settings, path)}

    progress.mark("check the file")
    problem = _file_problem(path)
    if problem:
        finding, summary = problem
        return {"status": FAIL, "summary": summary, "details": details, "findings": [finding]}
    cut = truncation(path)
    if cut:
        return {"status": FAIL, "summary": f"{path} is truncated: {cut}", "details": details,
                "findings": ["checkpoint-truncated"]}

    progress.mark("import ds2 and mindspore")
    try:
        import ds2
        from ds2.checkpoint import reconcile, storage
        from ds2.config import ConfigError, with_overrides
        from ds2.model import DeepSpeech2
        from ds2.step import build_training_state
    except BaseException as exc:
        return imports.import_failure("ds2", exc, "cannot import ds2's model and loader: ")
    details["ds2"] = os.path.dirname(os.path.abspath(ds2.__file__))

    progress.mark("read the checkpoint")
    try:
        values, meta = storage.read_checkpoint(path)
    except Exception as exc:  # MindSpore raises ValueError for anything it cannot parse
        details["error"] = f"{type(exc).__name__}: {exc}"
        return {"status": FAIL, "summary": f"MindSpore cannot read {path}: {details['error']}", "details": details,
                "findings": ["checkpoint-unreadable"], "output": traceback.format_exc()}

    overrides = settings.get("overrides") or []
    stored_config = (meta or {}).get("config")
    if stored_config:
        try:
            cfg = with_overrides(stored_config, overrides)
        except ConfigError as exc:
            return {"status": FAIL, "summary": f"the config stored in {path} does not load: {exc}", "details": details,
                    "findings": ["checkpoint-no-config"]}
        details["model_config"] = "the config stored in the checkpoint" + "".join(f" + {o}" for o in overrides)
    elif settings.get("config"):
        cfg = configured(settings)
        details["model_config"] = "the configured preset, --config and --set (the checkpoint stores no ds2 config)"
    else:
        return {"status": FAIL, "summary": "cannot build the model to check against: the ds2 configuration did "
                "not load (see the config line)", "details": details, "findings": ["checkpoint-no-config"]}

    progress.mark("build the model")
    if settings.get("stage") == EVAL:
        model, optimizer = DeepSpeech2(cfg.model, cfg.features.n_bins), None   # as ds2 eval builds it
    else:
        model, _, optimizer, _ = build_training_state(cfg, compile_step=False)   # as ds2 train builds them
    loader = "ds2 eval" if optimizer is None else "ds2 train --resume"

    progress.mark("reconcile")
    labels = (stored_config or {}).get("model", {}).get("labels")  # the file's label order, as load_into reads it
    report = reconcile.reconcile(values, model, optimizer, labels)
    table = report.format_table()
    details.update(layout=report.layout, reconcile=report.summary(), table=table, loader=loader,
                   reshaped=[e.model_name for e in report.reshaped], optimizer_restart=report.optimizer_restart)
    output = report.summary() + "\n" + table
    if report.refused:
        return {"status": FAIL, "summary": f"{report.summary()}; model built from {details['model_config']}",
                "details": details, "findings": ["checkpoint-refused"], "output": output}

    progress.mark("ds2's own loader")
    refusal = _own_loader_refusal(storage, values, meta, model, optimizer)
    details["loader_refusal"] = refusal
    notes, findings = [], []
    if report.reshaped:
        notes.append(f"entries reshaped: {', '.join(details['reshaped'])}")
        findings.append("checkpoint-reshaped")
    if report.optimizer_restart:
        notes.append(f"the optimizer state would restart ({report.optimizer_restart})")
        findings.append("checkpoint-optimizer-restart")
    if refusal:
        keeps = ("the weights" if optimizer is None else
                 "the weights and a fresh optimizer state" if report.optimizer_restart else
                 "the weights and the optimizer state")
        notes.append(f"{loader} does not take it as it is ({refusal}); ds2 convert writes a ds2 checkpoint from it "
                     f"with {keeps}")
        findings.append("checkpoint-needs-conversion")
        output += "\n" + refusal
    if not findings:
        return {"status": PASS, "summary": f"{report.summary()}; {loader} takes it as it is", "details": details,
                "output": output}
    if not refusal:
        notes.append(f"{loader} takes it as it is")
    return {"status": WARN, "summary": "; ".join(notes), "details": details, "findings": findings, "output": output}
