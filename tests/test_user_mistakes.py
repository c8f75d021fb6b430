"""Every command fed wrong input answers with one line that names the fix and a non-zero exit, never a
traceback: missing files, wrong types, unknown keys, empty and broken manifests, damaged checkpoints."""
import json
import socket
import stat
from pathlib import Path

import pytest

from ds2.__main__ import main as ds2_main
from envcheck.cli import main as envcheck_main


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Files the wrong inputs point at."""
    root = tmp_path_factory.mktemp("mistakes")
    (root / "empty.json").write_text(json.dumps({"root_path": str(root), "samples": []}))
    (root / "broken.json").write_text('{"samples": [')
    (root / "bad.yaml").write_text("train:\n  lr: [1\n")
    (root / "notes.txt").write_text("not a manifest\n")
    (root / "garbage.ckpt").write_bytes(b"\x0a\x05hello this is not a checkpoint")
    damaged = root / "damaged-run" / "checkpoints"
    damaged.mkdir(parents=True)
    (damaged / "step-0000004.ckpt").write_bytes(b"\x0a\x03abc")
    (damaged / "step-0000004.ckpt.sha256").write_text("0" * 64 + "  step-0000004.ckpt\n")
    crash = root / "crashing-python"
    crash.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crash.chmod(crash.stat().st_mode | stat.S_IXUSR)
    return root


@pytest.fixture(scope="module")
def busy_port():
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def ds2_cases(w, busy_port=0):
    """(command line, what the one line must say)."""
    data = ["--set", f"data.data_dir={w / 'data'}", "--set", f"run_dir={w / 'run'}"]
    manifest_source = data + ["--set", "data.source=manifest"]
    return [
        (["preprocess", "--set", "train.epoch=2"], "did you mean train.epochs?"),
        (["train", "--set", "trian.lr=1"], "did you mean train.lr?"),
        (["preprocess", "--set", "train.lr=fast"], "train.lr: expected a number"),
        (["preprocess", "--set", "train.num_buckets=0"], "below the minimum 1"),
        (["train", "--set", "train.device=tpu"], "not one of CPU, GPU"),
        (["eval", "--set", "model.labels=ABC"], "labels must start with the CTC blank"),
        (["preprocess", "--preset", "big"], "unknown preset 'big'"),
        (["preprocess", "--config", str(w / "missing.yaml")], "does not exist"),
        (["preprocess", "--config", str(w / "bad.yaml")], "not valid YAML"),
        (["preprocess", "--workers", "-1"], "expected 0 or more"),
        (["train", "--max-steps", "many"], "expected a whole number"),
        (["eval", "--beam", "-4"], "expected 0 or more"),
        (["preprocess"] + manifest_source + ["--set", f"data.train_manifest={w / 'missing.json'}"], "is not a file"),
        (["preprocess"] + manifest_source + ["--set", f"data.train_manifest={w / 'broken.json'}"], "broken.json (line 1, column"),
        (["preprocess"] + manifest_source + ["--set", f"data.train_manifest={w / 'notes.txt'}"], "unknown manifest type"),
        (["preprocess"] + manifest_source + ["--set", f"data.train_manifest={w / 'empty.json'}"], "no usable utterances in train"),
        (["preprocess"] + data + ["--set", "data.source=librispeech", "--set", "data.librispeech_dir=/no/such/dir"],
         "is not a directory"),
        (["preprocess"] + data + ["--set", "data.source=librispeech", "--set", "data.train_subsets=train-clean-10"],
         "did you mean train-clean-100?"),
        (["preprocess"] + data + ["--set", "features.window=nope"], "not a window SciPy knows"),
        (["train"] + data, "run `ds2 preprocess` (make preprocess) first"),
        (["train", "--set", f"run_dir={w / 'damaged-run'}"], "already has checkpoints; use --resume"),
        (["train", "--resume", "--set", f"run_dir={w / 'damaged-run'}"], "no readable checkpoint"),
        (["eval"] + data, "train first"),
        (["eval", "--checkpoint", str(w / "missing.ckpt")] + data, "no checkpoint at"),
        (["eval", "--checkpoint", str(w / "garbage.ckpt")] + data, "MindSpore cannot read it"),
        (["eval", "--checkpoint", "last", "--set", f"run_dir={w / 'damaged-run'}"], "does not match"),
        (["transcribe", "--checkpoint", str(w / "missing.ckpt"), str(w / "a.wav")], "no checkpoint at"),
        (["manifest", "to-csv", str(w / "missing.json"), str(w / "out.csv")], "missing.json: cannot read it"),
        (["manifest", "to-json", str(w / "notes.txt"), str(w / "out.json")], "unknown manifest type"),
        (["convert", str(w / "missing.pth")], "no file"),
        (["convert", str(w / "notes.txt"), "--output", str(w / "converted.ckpt")], "notes.txt"),
        (["preprocess", "--splits", "tset"], "expected splits among train,dev,test"),
        (["eval", "--alpha", "much"], "invalid float value"),
        (["lm"] + data, "run `ds2 preprocess` (make preprocess) first"),
        (["lm", "--order", "0"] + data, "lm.order: 0 is below the minimum 1"),
        (["lm", "--official", "5-gram.arpa.gz"] + data, "choose from"),
        (["lm", "--official", "--output", str(w / "x.arpa")] + data, "--output is for a model built from transcripts"),
        (["tune-lm"] + data, "build it with ds2 lm (make lm)"),
        (["tune-lm", "--alphas", "0,x"], "expected numbers separated by commas"),
        (["tune-lm", "--no-lm"] + data, "unrecognized arguments"),
        (["export", "--checkpoint", str(w / "missing.ckpt")] + data, "no checkpoint at"),
        (["export", "--checkpoint", str(w / "garbage.ckpt")] + data, "MindSpore cannot read it"),
        (["export", "--format", "tflite"], "invalid choice"),
        (["export", "--verify", "all"], "expected a whole number"),
        (["serve", "--checkpoint", str(w / "missing.ckpt")] + data, "no checkpoint at"),
        (["serve"] + data, "train first"),
        (["serve", "--port", "70000"], "serve.port: 70000 is above the maximum 65535"),
        (["serve", "--port", "http"], "serve.port: expected an integer"),
        (["serve", "--port", str(busy_port)], f"cannot listen on 127.0.0.1:{busy_port}"),
        (["serve", "--set", "serve.max_wait_ms=-5"], "below the minimum 0"),
        (["serve", "--set", "serve.max_batch_size=0"], "below the minimum 1"),
        (["frobnicate"], "invalid choice"),
    ]


def envcheck_cases(w):
    return [
        (["--set", "train.epoch=2"], "did you mean train.epochs?"),
        (["--config", str(w / "missing.yaml")], "does not exist"),
        (["--preset", "big", "--only", "python"], "unknown preset 'big'"),
        (["--python", str(w / "no-python")], "not an executable file"),
        (["--python", str(w / "crashing-python")], "crashed at startup with SIGSEGV"),
        (["--python", "/bin/false"], "fails at startup"),
        (["--timeout", "0"], "--timeout must be positive"),
        (["--only", "no-such-probe"], "matches no probe"),
        (["--stage", "preprocess", "--checkpoint", str(w / "garbage.ckpt")], "applies to --stage train or eval"),
        (["--stage", "fly"], "invalid choice"),
        (["--only", "python", "--json", str(w / "no-such-folder" / "report.json")], "does not exist"),
        (["--only", "python", "--json", str(w)], "is a directory"),
    ]


def one_line_error(capsys, code, expected):
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), f"exit {code}\n{out}\n{err}"
    assert "Traceback" not in out + err, out + err
    assert len(lines) == 1 and expected in lines[0], f"stderr:\n{err}\nstdout (tail):\n{out[-2000:]}"


def test_every_ds2_command_answers_wrong_input_with_one_line(work, busy_port, capsys):
    for argv, expected in ds2_cases(work, busy_port):
        try:
            code = ds2_main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        one_line_error(capsys, code, expected)


def test_every_envcheck_option_answers_wrong_input_with_one_line(work, capsys):
    for argv, expected in envcheck_cases(work):
        one_line_error(capsys, envcheck_main(argv), expected)


def test_envcheck_names_a_damaged_checkpoint_in_one_fail_line(work, capsys):
    code = envcheck_main(["--stage", "eval", "--only", "checkpoint.load", "--checkpoint",
                          str(work / "damaged-run" / "checkpoints" / "step-0000004.ckpt")])
    out, err = capsys.readouterr()
    fail = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert code == 1 and "Traceback" not in out + err
    assert len(fail) == 1 and "step-0000004.ckpt" in fail[0]


def test_a_deleted_working_directory_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert ds2_main(["preprocess", "--preset", "small"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("ds2 preprocess: the working directory is gone (") and error.count("\n") == 1
    assert "cd into a folder that exists" in error


def test_the_sweep_covers_every_command():
    from ds2.__main__ import COMMANDS

    assert set(COMMANDS) <= {argv[0] for argv, _ in ds2_cases(Path("/w"))}
