"""torch.exit probe: one torch backward pass in a fresh process, then its exit status."""
import importlib.util

import pytest

from tests.test_envcheck_support import run_envcheck, write_package


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_cuda_build_of_torch_without_a_driver_segfaults_at_exit():
    """The pinned torch 1.7.1 is the CUDA build; there is no NVIDIA driver where the tests run."""
    run = run_envcheck("--only", "torch.exit")
    probe = run.probe("torch.exit")
    assert probe["status"] == "info", probe      # ds2 never runs a torch backward pass
    assert any("work finished, then SIGSEGV at exit" in o for o in probe["details"]["outcomes"])
    assert "torch-backward-crashes-at-exit" in probe["findings"]
    assert "os._exit(0)" in probe["summary"]
    assert run.code == 0


def test_clean_exit_passes(tmp_path):
    """A stand-in torch whose backward pass is plain Python exits cleanly every time."""
    write_package(tmp_path, "torch", """
        class _Tensor:
            def __matmul__(self, other): return self
            def sum(self): return self
            def backward(self): pass
        def ones(*shape, requires_grad=False): return _Tensor()
        """)
    run = run_envcheck("--only", "torch.exit", pythonpath=[tmp_path])
    probe = run.probe("torch.exit")
    assert probe["status"] == "pass", probe
    assert probe["details"]["outcomes"] == ["exit 0"] * 3
    assert run.code == 0
