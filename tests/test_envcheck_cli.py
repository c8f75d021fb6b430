"""The command line: options, exit codes, the JSON schema, the text report, stage selection."""
from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

import envcheck
from envcheck import cli
from envcheck import diagnose, report
from envcheck.probes import BY_ID, select
from tests.envcheck_helpers import PYTHON, REPO, bare_venv, run_envcheck, write_dist, write_package

PROBE_KEYS = {"id", "title", "status", "summary", "details", "findings", "duration_s", "diagnosis"}


def test_help():
    run = run_envcheck("--help", as_json=False)
    assert run.code == 0 and "--stage" in run.stdout and "--python" in run.stdout


def test_usage_errors_exit_3_not_2():
    for args in (["--stage", "deploy"], ["--only", "no.such.probe"], ["--python", "/nonexistent/python"],
                 ["--timeout", "0"]):
        run = run_envcheck(*args, as_json=False)
        assert run.code == 3, (args, run.stderr)
        assert "error:" in run.stderr


def test_ready_exits_0_and_json_follows_the_schema():
    run = run_envcheck("--only", "python", "--only", "cpu.features")
    assert run.code == 0
    report = run.report
    assert report["schema_version"] == envcheck.SCHEMA_VERSION == 1
    assert set(report) == {"schema_version", "envcheck_version", "stage", "python", "host", "duration_s", "probes",
                           "exit_code"}
    assert report["exit_code"] == 0 and report["python"] == PYTHON and report["stage"] is None
    assert [p["id"] for p in report["probes"]] == ["config", "python", "cpu.features"]
    for probe in report["probes"]:
        assert set(probe) == PROBE_KEYS
        assert probe["status"] in ("pass", "info", "skip", "warn", "fail")


def test_warnings_only_exit_2():
    run = run_envcheck("--only", "threads", env={"OMP_NUM_THREADS": "64"})
    assert run.code == 2 and run.report["exit_code"] == 2


def test_text_report_explains_a_failure_and_its_fix(tmp_path):
    write_package(tmp_path, "Levenshtein", "import os\nos.kill(os.getpid(), 11)\n")
    run = run_envcheck("--stage", "eval", "--only", "import.levenshtein", pythonpath=[tmp_path], as_json=False)
    assert run.code == 1
    assert "FAIL  import.levenshtein" in run.stdout
    assert "crashed with SIGSEGV while importing Levenshtein" in run.stdout
    assert "why:" in run.stdout and "fix:" in run.stdout
    assert "Exit 1: a blocking problem" in run.stdout


def test_envcheck_own_crash_exits_3(monkeypatch, capsys):
    def broken_rules():
        raise diagnose.RuleError("rules/x.json: rule y: missing ['fix']")
    monkeypatch.setattr(diagnose, "load_rules", broken_rules)
    assert cli.main(["--only", "python"]) == 3
    assert "envcheck crashed" in capsys.readouterr().err


def test_envcheck_itself_runs_on_the_standard_library_alone(tmp_path):
    # envcheck's own process in a bare venv: no packaging (its fallback parser evaluates the rules),
    # no PyYAML, no ds2 dependencies. The probes run in the full interpreter.
    bare = bare_venv(tmp_path / "venv")
    write_dist(tmp_path / "site", "numpy", "2.0.2")
    run = run_envcheck("--only", "distributions", "--python", PYTHON, python=bare, pythonpath=[tmp_path / "site"])
    assert run.report is not None, run.stderr
    assert "torch-numpy-2" in run.rules("distributions")


def test_stage_selection():
    def ids(stage, host=False):
        return {p.id for p in select(stage, host)}
    preprocess, train, evaluate, everything = ids("preprocess"), ids("train"), ids("eval"), ids(None)
    assert {"import.numpy", "import.librosa", "import.soundfile", "espeak", "disk"} <= preprocess
    assert not {"import.mindspore", "mindspore.train_step"} & preprocess
    assert {"import.mindspore", "mindspore.train_step", "memory"} <= train
    assert {"import.mindspore", "import.levenshtein"} <= evaluate and "mindspore.train_step" not in evaluate
    assert everything == {p.id for p in BY_ID.values() if not p.host}
    assert "docker" not in everything and "docker" in ids(None, host=True)


def test_a_reader_that_closes_the_pipe_ends_envcheck_quietly():
    # `python -m envcheck | head -1` where head has gone before envcheck writes: the write meets a closed pipe.
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run([PYTHON, "-m", "envcheck", "--only", "python"], cwd=REPO, stdout=write_end,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    os.close(write_end)
    assert proc.returncode == 0, proc.stderr     # the verdict, as if the whole report had been read
    assert proc.stderr == ""


def test_a_full_disk_under_standard_output_is_one_line():
    with open("/dev/full", "w") as full:
        proc = subprocess.run([PYTHON, "-m", "envcheck", "--only", "python"], cwd=REPO, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 3
    assert proc.stderr.splitlines() == ["envcheck: cannot write the report to standard output: No space left on device"]


def test_json_to_a_file_writes_it_whole_and_prints_the_text_report(tmp_path):
    target = tmp_path / "report.json"
    run = run_envcheck("--only", "python", "--json", str(target), as_json=False)
    assert run.code == 0 and "PASS  python" in run.stdout
    assert json.loads(target.read_text())["probes"][1]["id"] == "python"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]   # no temporary file left


@pytest.mark.parametrize("where, said", [("missing/report.json", "does not exist"), (".", "is a directory"),
                                         ("locked/report.json", "is not writable")])
def test_a_bad_json_path_is_one_line_before_any_probe_runs(tmp_path, where, said):
    (tmp_path / "locked").mkdir(mode=0o500)
    if said == "is not writable" and os.access(tmp_path / "locked", os.W_OK):
        pytest.skip("running as root: no folder is read-only to us")
    run = run_envcheck("--only", "python", "--json", str(tmp_path / where), as_json=False)
    assert run.code == 3 and run.stdout == ""
    line, = run.stderr.splitlines()
    assert said in line and "Traceback" not in line


def test_a_write_that_fails_halfway_leaves_no_partial_file(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(report.OutputError, match=f"cannot write the report to {tmp_path / 'r.json'}: No space"):
        report.write_file(str(tmp_path / "r.json"), "{}")
    assert list(tmp_path.iterdir()) == []


def test_a_working_directory_that_was_deleted_is_one_line(tmp_path):
    gone = tmp_path / "gone"
    proc = subprocess.run(["sh", "-c", f'mkdir "$0" && cd "$0" && rmdir "$0" && exec "$1" -m envcheck --only python',
                           str(gone), PYTHON], env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "envcheck: the working directory is gone (No such file or directory): it was deleted or moved after you "
        "changed into it; cd into a folder that exists and run it again"]
