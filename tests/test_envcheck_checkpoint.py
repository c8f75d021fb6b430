"""envcheck --checkpoint: real checkpoints written with MindSpore, checked by `python -m envcheck` in a
fresh process, the way it runs before a stage."""
from __future__ import annotations

import re
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from envcheck import report
from envcheck.probes import select
from envcheck.result import FAIL, ProbeResult
from tests.envcheck_helpers import REPO, run_envcheck

ms = pytest.importorskip("mindspore")

from ds2.checkpoint import storage  # noqa: E402
from ds2.config import load_config, to_dict  # noqa: E402
from ds2.step import build_training_state  # noqa: E402
from tests.helpers import save_training_state  # noqa: E402

TINY = ["model.conv_channels=4", "model.rnn_hidden=8", "model.rnn_layers=2"]
TINY_OPTIONS = [word for override in TINY for word in ("--set", override)]


def training_state(overrides):
    """Config, model and optimizer as ds2 train builds them for preset small with these overrides."""
    cfg = load_config("small", None, overrides)
    model, _, optimizer, _ = build_training_state(cfg, compile_step=False)
    return cfg, model, optimizer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One envcheck run per checkpoint, started together: each spends most of its time importing MindSpore."""
    work = tmp_path_factory.mktemp("checkpoints")
    cfg, model, optimizer = training_state(TINY)
    paths = {name: work / f"{name}.ckpt" for name in ("own", "old-adam", "other-hidden", "truncated", "lightning")}
    storage.save(paths["own"], model, optimizer, {"config": to_dict(cfg), "step": 7})
    save_training_state(paths["old-adam"], model, optimizer, power_shape=(1,), with_global_step=False)
    _, other_model, _ = training_state(TINY + ["model.rnn_hidden=6"])
    ms.save_checkpoint(other_model, str(paths["other-hidden"]))
    whole = paths["own"].read_bytes()
    paths["truncated"].write_bytes(whole[:len(whole) // 2])
    with zipfile.ZipFile(paths["lightning"], "w") as archive:  # what a PyTorch Lightning .ckpt is: a zip
        archive.writestr("lightning/data.pkl", b"\x80\x02}q\x00.")
    paths["missing"] = work / "missing.ckpt"

    arguments = {
        # No --set: ds2 train --resume builds the model from the config stored in its checkpoint; so does envcheck.
        "own": ["--stage", "train"],
        "old-adam": TINY_OPTIONS,
        "other-hidden": ["--stage", "eval", *TINY_OPTIONS],
        "truncated": TINY_OPTIONS,
        "lightning": TINY_OPTIONS,
        "missing": TINY_OPTIONS,
    }
    with ThreadPoolExecutor(len(arguments)) as pool:
        futures = {name: pool.submit(run_envcheck, "--only", "checkpoint.load", "--checkpoint", str(paths[name]), *args)
                   for name, args in arguments.items()}
    return {name: (future.result(), str(paths[name])) for name, future in futures.items()}


def test_own_checkpoint_passes(runs):
    run, _ = runs["own"]
    probe = run.probe("checkpoint.load")
    assert probe["status"] == "pass", probe["summary"]
    assert run.code == 0
    assert probe["summary"].endswith("optimizer state loaded (62 entries); ds2 train --resume takes it as it is")
    assert probe["details"]["table"] == "(every entry loaded under its own name and shape)"
    assert probe["details"]["model_config"] == "the config stored in the checkpoint"
    # The probe process does not have the repository root on sys.path: ds2 came from the root envcheck passed.
    assert probe["details"]["ds2"] == str(REPO / "ds2")


def test_old_adam_layout_warns_with_the_rule_and_what_the_loaders_do(runs):
    run, path = runs["old-adam"]
    probe = run.probe("checkpoint.load")
    assert probe["status"] == "warn", probe["summary"]
    assert run.code == 2
    table = probe["details"]["table"]
    assert re.search(r"^reshaped\s+optimizer\s+beta1_power\s+beta1_power\s+\(1,\)\s+\(\)$", table, re.MULTILINE), table
    assert re.search(r"^MISSING\s+optimizer\s+-\s+global_step\s.*optional", table, re.MULTILINE), table

    shape = run.diagnosis("checkpoint.load", "checkpoint-adam-power-shape")
    assert shape["title"].endswith("(1,) instead of ()")
    # ds2's own loader (train --resume, eval) refuses the file as it is; ds2 convert keeps all of it.
    assert ("entries reshaped: beta1_power, beta2_power; ds2 train --resume does not take it as it is (no "
            "'ds2_meta' entry: not a ds2 training checkpoint); ds2 convert writes a ds2 checkpoint from it with "
            "the weights and the optimizer state") == probe["summary"]
    conversion = run.diagnosis("checkpoint.load", "checkpoint-needs-conversion")
    assert conversion["fix"][0] == " ".join(["ds2 convert --preset small", *TINY_OPTIONS, path])


def test_checkpoint_of_another_hidden_size_fails_with_the_mismatch_table(runs):
    run, _ = runs["other-hidden"]
    probe = run.probe("checkpoint.load")
    assert probe["status"] == "fail", probe["summary"]
    assert run.code == 1
    assert "does not fit the model" in probe["summary"] and "nothing was loaded" in probe["summary"]
    assert "model built from the configured preset" in probe["summary"]
    rows = [row for row in probe["details"]["table"].splitlines() if row.startswith("MISMATCHED")]
    assert any("rnns.0.lstm.weight_hh" in row and "(24,6)" in row and "(32,8)" in row
               and "check model.rnn_hidden" in row for row in rows), rows
    assert "checkpoint-refused" in run.rules("checkpoint.load")


def test_truncated_file_is_named_truncated(runs):
    run, path = runs["truncated"]
    probe = run.probe("checkpoint.load")
    assert probe["status"] == "fail" and run.code == 1
    assert probe["summary"].startswith(f"{path} is truncated: after "), probe["summary"]
    assert "complete entries it ends inside entry" in probe["summary"]
    assert "checkpoint-truncated" in run.rules("checkpoint.load")


def test_file_mindspore_cannot_parse_fails_with_its_message(runs):
    run, path = runs["lightning"]
    probe = run.probe("checkpoint.load")
    assert probe["status"] == "fail" and run.code == 1
    assert probe["summary"].startswith(f"MindSpore cannot read {path}: ValueError:"), probe["summary"]
    assert "checkpoint-unreadable" in run.rules("checkpoint.load")


def test_missing_file_is_a_fail_like_a_broken_config_not_a_usage_error(runs):
    run, path = runs["missing"]
    probe = run.probe("checkpoint.load")
    assert probe["status"] == "fail" and run.code == 1
    assert probe["summary"] == f"no file at {path}"
    assert "checkpoint-missing" in run.rules("checkpoint.load")


def test_checkpoint_with_stage_preprocess_is_a_usage_error():
    run = run_envcheck("--stage", "preprocess", "--checkpoint", "any.ckpt", as_json=False)
    assert run.code == 3 and "--checkpoint applies to --stage train or eval" in run.stderr


def test_the_probe_runs_only_with_a_checkpoint():
    def ids(stage, checkpoint):
        return {p.id for p in select(stage, False, checkpoint)}
    assert all("checkpoint.load" in ids(stage, True) for stage in ("train", "eval", None))
    assert "checkpoint.load" not in ids("preprocess", True)
    assert all("checkpoint.load" not in ids(stage, False) for stage in ("train", "eval", None))


def test_text_report_shows_the_table_of_a_failed_probe():
    table = "\n".join(["status      part   checkpoint entry", *(f"MISMATCHED  model  w{i}" for i in range(40))])
    result = ProbeResult("checkpoint.load", "title", FAIL, "does not fit", {"table": table})
    text = report.to_text([result], "eval", "python", 1.0)
    assert "      status      part   checkpoint entry\n      MISMATCHED  model  w0\n" in text
    assert f"... and {41 - report.TABLE_ROWS} more rows" in text
