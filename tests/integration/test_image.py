"""The CPU image: pinned exactly, labelled, non-root, cached, and clear about a broken host."""
import os
import re
import shutil
import subprocess

import pytest

from .conftest import REPO, run


def locked_versions(lock_file):
    pins = {}
    for line in (REPO / "docker" / "requirements" / lock_file).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_pip_freeze_matches_lock_exactly(docker_client, image):
    out = docker_client.containers.run(image, ["pip", "freeze", "--all"], remove=True).decode()
    installed = {}
    for line in out.splitlines():
        name, _, version = line.partition("==")
        installed[name.lower().replace("_", "-")] = version
    assert installed == locked_versions("cpu.lock")


def test_gpu_lock_is_cpu_lock_plus_cuda_libraries():
    cpu, gpu = locked_versions("cpu.lock"), locked_versions("gpu.lock")
    extra = {name for name in gpu if name not in cpu}
    assert extra and all(name.startswith("nvidia-") for name in extra)
    assert {name: gpu[name] for name in cpu} == cpu


def test_labels_and_non_root_user(docker_client, image):
    attrs = docker_client.images.get(image).attrs
    labels = attrs["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"]
    assert re.match(r"^[0-9a-f]{7,}(-dirty)?$|^unknown$", labels["org.opencontainers.image.revision"])
    out = docker_client.containers.run(image, ["id", "-un"], remove=True).decode().strip()
    assert out == "ds2"


def test_entrypoint_sets_threads_from_cpu_quota(docker_client, image):
    out = docker_client.containers.run(image, ["sh", "-c", "echo $OMP_NUM_THREADS"], remove=True,
                                       nano_cpus=1_000_000_000).decode().strip()
    assert out == "1"


def test_container_writes_as_owner_of_runs_folder(docker_client, image, runs_dir):
    docker_client.containers.run(image, ["sh", "-c", "touch /work/runs/probe && id -u"], user="0:0",
                                 remove=True, volumes={str(runs_dir): {"bind": "/work/runs", "mode": "rw"}})
    assert (runs_dir / "probe").stat().st_uid == os.getuid()


def build(tag, context=REPO, **env):
    """docker/build-image.sh of the checkout `context` (the script builds the checkout it lives in)."""
    return run(["bash", str(context / "docker" / "build-image.sh"), "cpu", tag],
               env={**os.environ, **env}, cwd=context)


@pytest.fixture(scope="module")
def current_image(docker_client, image):
    """The image built from the tree as it is now (the layer cache makes this quick after make)."""
    result = build(image)
    assert result.returncode == 0, result.stderr[-3000:]
    return docker_client.images.get(image)


def test_rebuild_without_changes_reuses_every_layer(docker_client, image, current_image):
    before = current_image.id
    result = build(image)
    assert result.returncode == 0, result.stderr[-3000:]
    assert docker_client.images.get(image).id == before, "a rebuild with no change made a new image"


def test_code_change_rebuilds_only_the_code_layers(docker_client, image, current_image, tmp_path):
    copy = tmp_path / "checkout"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns("runs", ".venv*", ".git", "__pycache__"))
    with open(copy / "ds2" / "__init__.py", "a") as f:
        f.write("# a code-only change\n")
    tag = "ds2:test-code-change"
    result = build(tag, context=copy)
    assert result.returncode == 0, result.stderr[-3000:]
    try:
        old = current_image.attrs["RootFS"]["Layers"]
        new = docker_client.images.get(tag).attrs["RootFS"]["Layers"]
        assert new != old, "the code change did not change the image"
        shared = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        # Everything up to and including the venv and system packages is shared; only our code
        # layers (COPY of ds2 and what follows) differ.
        assert len(old) - shared <= 4, f"{len(old) - shared} of {len(old)} layers rebuilt"
    finally:
        docker_client.images.remove(tag, force=True)


def test_missing_engine_is_explained_not_a_traceback(tmp_path):
    result = build("ds2:never", DOCKER_HOST=f"unix://{tmp_path}/no-such.sock")
    assert result.returncode == 1
    assert "engine is not reachable" in result.stderr
    assert "install-engine.sh" in result.stderr and "Traceback" not in result.stderr


def test_missing_docker_command_is_explained(tmp_path):
    result = build("ds2:never", DOCKER=str(tmp_path / "docker"))
    assert result.returncode == 1
    assert "Install Docker" in result.stderr


def test_unreachable_registry_falls_back_to_bootstrapped_base(docker_client, image):
    fallback = os.environ.get("FALLBACK_BASE_IMAGE", "ds2-base:py3.9-bullseye")
    if not docker_client.images.list(name=fallback):
        pytest.skip(f"{fallback} not built on this host (a host with a registry uses the upstream base)")
    result = build(image, BASE_IMAGE="registry.invalid/python:3.9-slim-bullseye")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No container registry is reachable" in result.stderr
    assert f"Using\n  {fallback} instead" in result.stderr or fallback in result.stderr


def test_bad_extra_ca_file_is_refused(tmp_path):
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("not a certificate\n")
    result = build("ds2:never", EXTRA_CA_CERTS=str(not_pem))
    assert result.returncode == 1
    assert "not a readable PEM certificate" in result.stderr
