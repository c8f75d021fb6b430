"""Fixtures for tests that drive the Docker images from the host (marker: integration).

They need a Docker engine, the `docker` Python SDK and a built image (`make test` builds it first).
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def dotenv(name):
    """A default from the checkout's .env, the file Compose, the Makefile and build-image.sh read."""
    for line in (REPO / ".env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key == name:
            return value
    raise KeyError(f"{name} is not set in .env")



def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def docker_client():
    docker = pytest.importorskip("docker", reason="the Docker SDK is installed by `make test` in .venv-host")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # the SDK raises several types for 'no engine'
        pytest.fail(
            f"No Docker engine is reachable ({exc}). Start it with 'sudo bash docker/install-engine.sh' "
            "(or 'sudo systemctl start docker') and run the tests again.", pytrace=False)
    return client


@pytest.fixture(scope="session")
def image(docker_client):
    import docker
    try:
        image = os.environ.get("DS2_IMAGE") or dotenv("DS2_IMAGE_CPU")
        docker_client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"The image {image} is missing. Build it with 'make image-cpu' (make test does this).",
                    pytrace=False)
    return image


@pytest.fixture
def runs_dir(tmp_path):
    """A host folder for one test's runs volume, owned by the user running the tests."""
    path = tmp_path / "runs"
    path.mkdir()
    yield path
    # Files written by the container belong to us (the entrypoint drops to our uid), so this works.
    shutil.rmtree(path, ignore_errors=True)


def run(cmd, **kwargs):
    """subprocess.run with text output captured; the caller asserts on it."""
    kwargs.setdefault("cwd", REPO)
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)
