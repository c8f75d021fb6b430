"""A probe that crashes, hangs, is killed or exits early becomes a diagnosed result, never an envcheck crash."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.envcheck_helpers import PYTHON, REPO, bare_venv, run_envcheck, write_package

LEVENSHTEIN = ("--stage", "eval", "--only", "import.levenshtein")


def test_segfault_during_import_names_signal_module_and_traceback(tmp_path):
    write_package(tmp_path, "Levenshtein", """
        import ctypes
        ctypes.string_at(0)  # reads address 0: SIGSEGV inside the import
    """)
    run = run_envcheck(*LEVENSHTEIN, pythonpath=[tmp_path])
    assert run.code == 1, run.stderr
    probe = run.probe("import.levenshtein")
    assert probe["status"] == "fail"
    assert probe["details"]["signal"] == "SIGSEGV"
    assert probe["details"]["last_import"] == "Levenshtein"
    assert "while importing Levenshtein" in probe["summary"]
    assert "Levenshtein/__init__.py" in probe["details"]["traceback"]
    assert "crash-during-import" in run.rules("import.levenshtein")
    assert "import Levenshtein" in " ".join(run.diagnosis("import.levenshtein", "crash-during-import")["fix"])


def test_hang_becomes_timeout_with_the_waiting_stack(tmp_path):
    write_package(tmp_path, "Levenshtein", """
        import time
        time.sleep(120)
    """)
    run = run_envcheck(*LEVENSHTEIN, "--timeout", "3", pythonpath=[tmp_path])
    probe = run.probe("import.levenshtein")
    assert probe["status"] == "fail"
    assert probe["details"]["outcome"] == "timeout"
    assert "time.sleep" in probe["details"]["traceback"] or "__init__.py" in probe["details"]["traceback"]
    assert probe["duration_s"] < 20
    assert "probe-timeout" in run.rules("import.levenshtein")


def test_sigkill_is_diagnosed_as_the_oom_killer(tmp_path):
    write_package(tmp_path, "Levenshtein", """
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer sends
    """)
    run = run_envcheck(*LEVENSHTEIN, pythonpath=[tmp_path])
    assert run.probe("import.levenshtein")["details"]["signal"] == "SIGKILL"
    assert "killed-by-sigkill" in run.rules("import.levenshtein")


def test_sigill_points_at_cpu_instructions(tmp_path):
    write_package(tmp_path, "Levenshtein", """
        import os, signal
        os.kill(os.getpid(), signal.SIGILL)
    """)
    run = run_envcheck(*LEVENSHTEIN, pythonpath=[tmp_path])
    assert run.probe("import.levenshtein")["details"]["signal"] == "SIGILL"
    assert "illegal-instruction" in run.rules("import.levenshtein")


def test_abort_is_reported(tmp_path):
    write_package(tmp_path, "Levenshtein", """
        import os
        os.abort()
    """)
    run = run_envcheck(*LEVENSHTEIN, pythonpath=[tmp_path])
    assert run.probe("import.levenshtein")["details"]["signal"] == "SIGABRT"
    assert "aborted" in run.rules("import.levenshtein")


def test_exit_without_result(tmp_path):
    write_package(tmp_path, "Levenshtein", """
        import os
        os._exit(3)
    """)
    run = run_envcheck(*LEVENSHTEIN, pythonpath=[tmp_path])
    probe = run.probe("import.levenshtein")
    assert probe["details"]["outcome"] == "exit" and probe["details"]["returncode"] == 3
    assert "exit-without-result" in run.rules("import.levenshtein")


def test_crash_in_a_step_after_imports(tmp_path):
    # A MindSpore whose set_context segfaults: the training-step probe dies after its imports.
    write_package(tmp_path, "mindspore", """
        import ctypes
        GRAPH_MODE = 0
        def set_context(**kwargs):
            ctypes.string_at(0)
    """, files={"nn.py": "", "ops.py": ""})
    run = run_envcheck("--stage", "train", "--only", "mindspore.train_step", pythonpath=[tmp_path])
    probe = run.probe("mindspore.train_step")
    assert probe["details"]["signal"] == "SIGSEGV"
    assert probe["details"]["last_event"] == "during build network"
    assert "crash-during-step" in run.rules("mindspore.train_step")


def test_modules_that_fail_only_together_are_isolated_to_a_pair(tmp_path):
    # torch sets process-wide state that Levenshtein cannot live with: each imports alone, and
    # Levenshtein fails when torch came first -- only in the reversed order.
    write_package(tmp_path, "torch", """
        import os
        os.environ["ENVCHECK_TEST_CLAIMED_BY"] = "torch"
        __version__ = "0.0+fake"
        class version:
            cuda = None
        class _Tensor:
            def __init__(self, value):
                self.value = value
            def sum(self):
                return _Tensor(self.value.sum())
            def item(self):
                return float(self.value)
        def from_numpy(array):
            return _Tensor(array)
    """)
    write_package(tmp_path, "Levenshtein", """
        import os
        if os.environ.get("ENVCHECK_TEST_CLAIMED_BY"):
            raise ImportError("process state already claimed by " + os.environ["ENVCHECK_TEST_CLAIMED_BY"])
        def distance(a, b):
            row = list(range(len(b) + 1))
            for i, ca in enumerate(a, 1):
                previous, row[0] = row[0], i
                for j, cb in enumerate(b, 1):
                    previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
            return row[-1]
    """)
    run = run_envcheck("--only", "import.levenshtein", "--only", "import.torch", "--only", "import.together*",
                       pythonpath=[tmp_path])
    assert run.probe("import.levenshtein")["status"] == "pass"
    assert run.probe("import.torch")["status"] == "pass"
    assert run.probe("import.together")["status"] == "pass"
    reversed_probe = run.probe("import.together-reversed")
    assert reversed_probe["status"] == "fail"
    assert reversed_probe["details"]["culprits"] == ["torch"]
    assert run.probe("import.torch+levenshtein")["status"] == "fail"
    assert "import-interaction" in run.rules("import.together-reversed")


def test_a_dependency_missing_inside_an_import(tmp_path):
    write_package(tmp_path, "Levenshtein", "import rapidfuzz_that_is_not_installed\n")
    run = run_envcheck(*LEVENSHTEIN, pythonpath=[tmp_path])
    probe = run.probe("import.levenshtein")
    assert probe["details"]["missing_module"] == "rapidfuzz_that_is_not_installed"
    assert "module-not-installed" in run.rules("import.levenshtein")


def test_interpreter_without_numpy_reports_missing_modules_not_a_crash(tmp_path):
    python = bare_venv(tmp_path / "venv")
    run = run_envcheck("--stage", "preprocess", "--python", python)
    assert run.code == 1, run.stderr
    numpy = run.probe("import.numpy")
    assert numpy["status"] == "fail" and "not installed" in numpy["summary"]
    assert "module-not-installed" in run.rules("import.numpy")
    # The distributions probe ran there without `packaging`, on envcheck's own parser.
    assert run.probe("distributions")["details"]["parser"] == "envcheck.versions fallback"
    assert run.probe("python")["details"]["executable"].startswith(str(tmp_path))


def test_ctrl_c_stops_envcheck_and_its_probes(tmp_path):
    write_package(tmp_path, "Levenshtein", """
        import os, time
        with open(os.environ["ENVCHECK_TEST_PIDFILE"], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(120)
    """)
    pidfile = tmp_path / "probe.pid"
    env = dict(os.environ, PYTHONPATH=str(tmp_path), ENVCHECK_TEST_PIDFILE=str(pidfile))
    proc = subprocess.Popen([PYTHON, "-m", "envcheck", *LEVENSHTEIN], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    time.sleep(0.5)
    assert not os.path.exists(f"/proc/{pidfile.read_text()}") or \
        open(f"/proc/{pidfile.read_text()}/stat").read().split()[2] == "Z"
