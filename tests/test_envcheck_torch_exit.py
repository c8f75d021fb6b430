"""torch.exit probe: one torch backward pass in fresh processes (alone, beside mindspore, beside numba),
then each process's exit status."""
import importlib.util

import pytest

from tests.envcheck_helpers import run_envcheck, write_package

FAKE_TORCH = """
    class _Tensor:
        def __matmul__(self, other): return self
        def sum(self): return self
        def backward(self): {backward}
    def ones(*shape, requires_grad=False): return _Tensor()
    """
# Stands in for the real teardown crash: the process kills itself with SIGSEGV while exiting.
CRASH_AT_EXIT = "import atexit, os, signal; atexit.register(lambda: os.kill(os.getpid(), signal.SIGSEGV))"


def stand_ins(root, backward):
    write_package(root, "torch", FAKE_TORCH.format(backward=backward))
    for name in ("mindspore", "numba"):
        write_package(root, name, "")
    return [root]


def test_clean_exits_pass(tmp_path):
    run = run_envcheck("--only", "torch.exit", pythonpath=stand_ins(tmp_path, "pass"))
    probe = run.probe("torch.exit")
    assert probe["status"] == "pass", probe
    assert probe["details"]["outcomes"] == {"torch": "exit 0", "torch+mindspore": "exit 0", "torch+numba": "exit 0"}
    assert run.code == 0


def test_hang_at_exit_counts_like_a_crash(tmp_path, monkeypatch):
    from envcheck.probes import torch_exit
    hang = "import atexit, time; atexit.register(lambda: time.sleep(60))"
    stand_ins(tmp_path, hang)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(torch_exit, "EXIT_TIMEOUT_S", 3)
    assert torch_exit.outcome(torch_exit.COMBINATIONS["torch"][1]) == "work finished, then hung at exit (killed after 3 s)"


def test_slow_work_is_waited_for_and_only_the_exit_is_timed(tmp_path, monkeypatch):
    # On a loaded machine the imports alone can take longer than a clean exit is allowed to.
    from envcheck.probes import torch_exit
    stand_ins(tmp_path, "import time; time.sleep(5)")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(torch_exit, "EXIT_TIMEOUT_S", 2)
    assert torch_exit.outcome(torch_exit.COMBINATIONS["torch"][1]) == "exit 0"
    monkeypatch.setattr(torch_exit, "WORK_TIMEOUT_S", 1)
    assert torch_exit.outcome(torch_exit.COMBINATIONS["torch"][1]) == "no result within 1 s"


def test_crash_at_exit_is_reported_with_the_way_out(tmp_path):
    run = run_envcheck("--only", "torch.exit", pythonpath=stand_ins(tmp_path, CRASH_AT_EXIT))
    probe = run.probe("torch.exit")
    assert probe["status"] == "info", probe          # ds2 never runs a torch backward pass
    assert probe["details"]["outcomes"]["torch"] == "work finished, then SIGSEGV at exit"
    assert probe["findings"] == ["torch-backward-crashes-at-exit"] and "os._exit(0)" in probe["summary"]
    assert run.code == 0


@pytest.mark.skipif(importlib.util.find_spec("torch") is None or importlib.util.find_spec("mindspore") is None,
                    reason="needs the pinned torch and mindspore")
def test_pinned_torch_beside_mindspore_crashes_at_exit():
    """Measured in the CPU image and on the development host: torch 1.7.1 + mindspore 2.7.2."""
    probe = run_envcheck("--only", "torch.exit").probe("torch.exit")
    assert probe["details"]["outcomes"]["torch+mindspore"].startswith("work finished, then "), probe
    assert probe["status"] == "info"
