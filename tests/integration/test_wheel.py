"""envcheck where users break: the project's wheel, built offline in the image with its locked setuptools,
installed into a bare venv of the host's Python (another one than the image's), gives the `envcheck` and
`ds2` commands, and `envcheck` there reports what `python -m envcheck` from the checkout reports."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

# What the wheel is built from: the project's metadata and its packages, not the runs folder or the host venv.
SOURCES = ("pyproject.toml", "ds2", "envcheck")


@pytest.fixture(scope="module")
def wheel(docker_client, image, tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    sources = " ".join(f"/src/{name}" for name in SOURCES)
    # --network none: the build must need nothing from an index (setuptools and wheel come from the image's lock).
    docker_client.containers.run(
        image, ["sh", "-c", f'mkdir "$HOME/build" && cp -r {sources} "$HOME/build/" && '
                            'python -m pip wheel -q --no-deps --no-build-isolation --no-index -w /out "$HOME/build"'],
        volumes={str(REPO): {"bind": "/src", "mode": "ro"}, str(out): {"bind": "/out", "mode": "rw"}},
        user=f"{os.getuid()}:{os.getgid()}", network_mode="none", remove=True)
    wheels = list(out.glob("ds2-*-py3-none-any.whl"))
    assert len(wheels) == 1, list(out.iterdir())
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A fresh venv of the host's Python with nothing but the wheel (pip from ensurepip: offline)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    path = tmp_path_factory.mktemp("venv") / "bare"
    subprocess.run([base, "-m", "venv", str(path)], check=True, capture_output=True)
    subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)],
                   check=True, capture_output=True)
    return path


def _verdicts(report: dict):
    return [(p["id"], p["status"], sorted(d["rule_id"] for d in p["diagnosis"])) for p in report["probes"]]


def test_the_wheel_holds_the_rules_and_the_matrix_and_no_dependencies(wheel):
    import zipfile
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    rules = {f"envcheck/rules/{p.name}" for p in (REPO / "envcheck" / "rules").glob("*.json")}
    assert rules and rules <= names
    assert "envcheck/data/compat-matrix.json" in names
    assert not [line for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    assert re.search(r"^envcheck = envcheck.__main__:main$", entry_points, re.M)
    assert re.search(r"^ds2 = ds2.__main__:main$", entry_points, re.M)


def test_installed_envcheck_reports_what_the_checkout_reports(venv, tmp_path):
    python = str(venv / "bin" / "python")
    version = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True, check=True).stdout
    assert version.strip() != "(3, 9)", "the point is another Python than the image's"
    # Both check the same interpreter (the bare venv's) from the same folder; only where envcheck comes from
    # differs: the installed command, or `python -m envcheck` from the checkout (the repository root).
    installed = subprocess.run([str(venv / "bin" / "envcheck"), "--json", str(tmp_path / "installed.json")],
                               cwd=REPO, capture_output=True, text=True, timeout=900)
    checkout = subprocess.run([python, "-m", "envcheck", "--json", str(tmp_path / "checkout.json")],
                              cwd=REPO, capture_output=True, text=True, timeout=900)
    assert "Traceback" not in installed.stderr + checkout.stderr
    installed_report = json.loads((tmp_path / "installed.json").read_text())
    checkout_report = json.loads((tmp_path / "checkout.json").read_text())
    assert _verdicts(installed_report) == _verdicts(checkout_report)
    assert installed.returncode == checkout.returncode == installed_report["exit_code"] == 1
    # A bare venv: the checks really ran there, and say what is missing and how to install it.
    numpy = next(p for p in installed_report["probes"] if p["id"] == "import.numpy")
    assert numpy["status"] == "fail" and "module-not-installed" in [d["rule_id"] for d in numpy["diagnosis"]]
    assert "FAIL  import.numpy" in installed.stdout


def test_installed_envcheck_reads_its_matrix_and_ds2_is_one_line_without_its_stack(venv, tmp_path):
    python = str(venv / "bin" / "python")
    count = subprocess.run([python, "-c", "from envcheck import compat; print(len(compat.measured(compat.load())))"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert int(count) > 50
    ds2 = subprocess.run([str(venv / "bin" / "ds2"), "train"], cwd=tmp_path, capture_output=True, text=True)
    assert ds2.returncode == 1
    assert ds2.stderr.splitlines() == [
        "ds2: cannot import numpy (No module named 'numpy'); `python -m envcheck` says why and how to fix it"]


def test_the_images_read_nothing_from_docs():
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        copied = [line for line in (REPO / dockerfile).read_text().splitlines()
                  if line.split()[:1] in (["COPY"], ["ADD"]) and "docs/" in line]
        assert copied == [], dockerfile
