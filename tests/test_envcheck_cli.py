"""The command line: options, exit codes, the JSON schema, the text report, stage selection."""
from __future__ import annotations

import envcheck
from envcheck import __main__ as cli
from envcheck import diagnose
from envcheck.probes import BY_ID, select
from tests.envcheck_helpers import PYTHON, bare_venv, run_envcheck, write_dist, write_package

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
