"""Slow envcheck tests with the real stack: a full run in the pinned environment, MindSpore's own
run_check() failing on a missing GPU, and a real virtual environment with MindSpore 2.8.0 + numpy 1.20.0."""
from __future__ import annotations

import glob
import shutil
import subprocess
import sys

import pytest

from tests.envcheck_helpers import run_envcheck

pytestmark = pytest.mark.slow


def test_full_run_in_the_pinned_environment_is_ready():
    run = run_envcheck()
    failed = {p["id"]: p["summary"] for p in run.report["probes"] if p["status"] == "fail"}
    assert failed == {}
    assert run.code in (0, 2)
    assert run.probe("mindspore.train_step")["status"] == "pass"
    assert run.probe("import.together")["status"] == "pass"
    assert run.probe("import.together-reversed")["status"] == "pass"
    if not glob.glob("/dev/nvidia[0-9]*"):
        assert run.probe("gpu.devices")["status"] == "info"  # no GPU on a CPU run is not a warning


@pytest.mark.skipif(bool(glob.glob("/dev/nvidia[0-9]*")), reason="this machine has a GPU")
def test_real_run_check_fails_quietly_on_a_missing_gpu(tmp_path):
    config = tmp_path / "gpu.yaml"
    config.write_text("train:\n  device: GPU\n")
    run = run_envcheck("--stage", "train", "--only", "mindspore.run_check", "--config", str(config))
    probe = run.probe("mindspore.run_check")
    assert probe["status"] == "fail", probe["summary"]
    assert probe["details"]["returned"] == "None"
    assert "Unsupported device target GPU" in probe["details"]["device_error"]
    assert "mindspore-run-check-lies" in run.rules("mindspore.run_check")


MINDSPORE_28 = ("numpy==1.20.0", "mindspore==2.8.0")


@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv to build the virtual environment")
def test_mindspore_2_8_with_numpy_1_20_in_a_real_venv(tmp_path):
    venv = tmp_path / "ms28"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run(["uv", "venv", "-q", "-p", base, str(venv)], check=True, capture_output=True)
    install = subprocess.run(["uv", "pip", "install", "-q", "--native-tls", "--python", str(venv / "bin" / "python"),
                              *MINDSPORE_28], capture_output=True, text=True, timeout=900)
    if install.returncode != 0:
        pytest.skip(f"cannot install {' '.join(MINDSPORE_28)} (package index unreachable?): "
                    f"{install.stderr.strip()[-300:]}")
    run = run_envcheck("--stage", "train", "--python", str(venv / "bin" / "python"),
                       "--only", "import.mindspore", "--only", "distributions", "--only", "mindspore.train_step")
    assert run.code == 1
    probe = run.probe("import.mindspore")
    assert "module 'numpy.typing' has no attribute 'NDArray'" in probe["summary"]
    diagnosis = run.diagnosis("import.mindspore", "mindspore-needs-numpy-1.21")
    fix = " ".join(diagnosis["fix"])
    assert "mindspore==2.7.2" in fix                      # way out 1
    assert "numpy==1.21.6" in fix and "numba" in fix      # way out 2, and what it does to numba
    assert "numpy.typing.NDArray" in diagnosis["explanation"]
    # pip check finds nothing: MindSpore 2.8.0 declares numpy>=1.20.0. The rule flags it anyway.
    assert run.probe("distributions")["details"]["problems"] == []
    assert run.probe("distributions")["status"] == "fail"
