"""--host: the Docker engine, Compose v2 and the NVIDIA runtime. An unreachable engine and a missing
docker are real states; a CLI without Compose or NVIDIA runtime is a docker script on PATH that
answers as the real CLI does, run from a bare venv (no Docker SDK) so the CLI is what gets asked."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.envcheck_helpers import bare_venv, run_envcheck, write_tool

HOST_ONLY = ("--host", "--only", "docker")
CLI_WITHOUT_COMPOSE_OR_NVIDIA = """
case "$1" in
  info) echo '{"ServerVersion":"28.0.1","Runtimes":{"runc":{"path":"runc"}},"DefaultRuntime":"runc","CgroupVersion":"1"}' ;;
  compose) echo "docker: 'compose' is not a docker command." >&2; echo "See 'docker --help'" >&2; exit 1 ;;
  *) exit 1 ;;
esac
"""


def engine_reachable() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


# A real docker client pointed at a socket nobody listens on: the host side of `make test` runs
# this (the CPU image has no docker client).
@pytest.mark.integration
@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI (runs on the host)")
def test_engine_not_reachable(tmp_path):
    run = run_envcheck(*HOST_ONLY, env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    probe = run.probe("docker")
    assert probe["status"] == "fail"
    assert "docker-unreachable" in run.rules("docker")


def test_no_docker_at_all(tmp_path):
    python = bare_venv(tmp_path / "venv")
    run = run_envcheck(*HOST_ONLY, "--python", python, env={"PATH": str(tmp_path / "empty")})
    assert run.probe("docker")["status"] == "fail"
    assert "docker-cli-missing" in run.rules("docker")


def test_cli_without_compose_plugin(tmp_path):
    python = bare_venv(tmp_path / "venv")
    write_tool(tmp_path / "bin", "docker", CLI_WITHOUT_COMPOSE_OR_NVIDIA)
    run = run_envcheck(*HOST_ONLY, "--python", python, env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"})
    probe = run.probe("docker")
    assert probe["status"] == "warn" and probe["details"]["server_version"] == "28.0.1"
    assert "compose-v2-missing" in run.rules("docker")


def test_device_gpu_without_nvidia_runtime(tmp_path):
    python = bare_venv(tmp_path / "venv")
    write_tool(tmp_path / "bin", "docker", CLI_WITHOUT_COMPOSE_OR_NVIDIA)
    config = tmp_path / "gpu.yaml"
    config.write_text("train:\n  device: GPU\n")
    run = run_envcheck(*HOST_ONLY, "--config", str(config), "--python", python,
                       env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"})
    assert run.probe("docker")["status"] == "fail"
    assert "nvidia-runtime-missing" in run.rules("docker")


@pytest.mark.integration
@pytest.mark.skipif(not engine_reachable(), reason="needs a running Docker engine")
def test_reachable_engine_reports_its_version():
    run = run_envcheck(*HOST_ONLY)
    probe = run.probe("docker")
    assert probe["status"] in ("pass", "warn"), probe["summary"]
    assert probe["details"]["server_version"]
