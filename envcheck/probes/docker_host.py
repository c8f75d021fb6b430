"""The Docker host (--host): engine reachable and its version, Compose v2, NVIDIA container runtime.

Uses the Docker SDK for Python (`docker`) when it is importable, else the docker CLI. Compose v2 is a
CLI plugin, so it is always asked through `docker compose version`.
"""
from __future__ import annotations

import json
import shutil
import subprocess

from envcheck.settings import configured_device

NVIDIA_TOOLS = ("nvidia-container-runtime", "nvidia-container-runtime-hook", "nvidia-ctk")


def _engine_with_sdk():
    import docker  # raises ImportError when the SDK is not installed
    if not hasattr(docker, "from_env"):  # a folder named docker (a checkout's docker/) taken for a namespace package
        raise ImportError(f"no Docker SDK: docker is {list(getattr(docker, '__path__', []))}")
    client = docker.from_env(timeout=20)
    version = client.version()
    info = client.info()
    return {"via": "docker SDK " + getattr(docker, "__version__", "?"), "server_version": version.get("Version"),
            "api_version": version.get("ApiVersion"), "runtimes": sorted((info.get("Runtimes") or {}).keys()),
            "default_runtime": info.get("DefaultRuntime"), "cgroup_version": info.get("CgroupVersion")}


def _engine_with_cli(cli: str):
    proc = subprocess.run([cli, "info", "--format", "{{json .}}"], capture_output=True, text=True, timeout=30)
    info = {}
    if proc.stdout.strip().startswith("{"):
        info = json.loads(proc.stdout)
    if proc.returncode != 0 or not info.get("ServerVersion"):
        errors = info.get("ServerErrors") or [proc.stderr.strip() or "no server information"]
        raise RuntimeError("; ".join(str(e) for e in errors))
    return {"via": f"docker CLI ({cli})", "server_version": info.get("ServerVersion"),
            "runtimes": sorted((info.get("Runtimes") or {}).keys()), "default_runtime": info.get("DefaultRuntime"),
            "cgroup_version": info.get("CgroupVersion")}


def _compose_version(cli):
    if cli is None:
        return None, "no docker CLI"
    proc = subprocess.run([cli, "compose", "version", "--short"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return None, (proc.stderr or proc.stdout).strip()
    return proc.stdout.strip(), ""


def run(settings: dict) -> dict:
    device = configured_device(settings)
    cli = shutil.which("docker")
    details = {"cli": cli, "device": device}
    engine, errors = None, []
    try:
        engine = _engine_with_sdk()
    except ImportError:
        details["sdk"] = "not installed"
    except Exception as exc:  # the SDK's connection and API errors
        errors.append(f"docker SDK: {type(exc).__name__}: {exc}")
    if engine is None and cli is not None:
        try:
            engine = _engine_with_cli(cli)
        except (OSError, subprocess.TimeoutExpired, RuntimeError, ValueError) as exc:
            errors.append(f"docker CLI: {exc}")
    if engine is None:
        details["error"] = "; ".join(errors) or "neither the docker SDK nor the docker CLI is installed"
        finding = "docker-cli-missing" if cli is None and not errors else "docker-unreachable"
        return {"status": "fail", "summary": f"Docker engine not reachable: {details['error']}", "details": details,
                "findings": [finding], "output": details["error"]}
    details.update(engine)
    compose, compose_error = _compose_version(cli)
    details["compose_version"] = compose
    nvidia_tools = [tool for tool in NVIDIA_TOOLS if shutil.which(tool)]
    details["nvidia_tools"] = nvidia_tools
    has_nvidia = "nvidia" in engine.get("runtimes", []) or bool(nvidia_tools)
    summary = f"engine {engine['server_version']} ({engine['via']}), runtimes {', '.join(engine['runtimes'])}"
    problems, findings, status = [], [], "pass"
    if compose is None:
        problems.append(f"Compose v2 plugin missing (`docker compose version`: {compose_error[:200]})")
        findings.append("compose-missing")
        status = "warn"
    else:
        summary += f", Compose {compose}"
    if not has_nvidia:
        if device == "GPU":
            problems.append("no NVIDIA container runtime, but the configured device is GPU")
            findings.append("nvidia-runtime-missing")
            status = "fail"
        else:
            summary += "; no NVIDIA container runtime (not needed: device CPU)"
    if problems:
        details["problem"] = "; ".join(problems)
        return {"status": status, "summary": summary + "; " + "; ".join(problems), "details": details,
                "findings": findings}
    return {"status": "pass", "summary": summary, "details": details}
