"""The CPU image: pinned exactly, labelled, non-root, rebuilt only when its inputs change, and clear
about a broken host."""
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import pytest

from .conftest import REPO, dotenv, run


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
    """docker/build-image.sh of the checkout `context` (the script builds the checkout it lives in).

    The environment is the test's, less EXTRA_CA_CERTS (the script then decides on its own), plus `env`.
    """
    base_env = {k: v for k, v in os.environ.items() if k != "EXTRA_CA_CERTS"}
    return run(["bash", str(context / "docker" / "build-image.sh"), "cpu", tag],
               env={**base_env, **env}, cwd=context)


def inputs_digest(docker_client, tag):
    return docker_client.images.get(tag).labels.get("ds2.inputs-digest")


@pytest.fixture
def scratch_tag(docker_client):
    """A tag of this test's own, removed afterwards (the image stays when another tag holds it)."""
    import docker
    tag = f"ds2:test-{uuid.uuid4().hex[:8]}"
    yield tag
    try:
        docker_client.images.remove(tag)
    except docker.errors.ImageNotFound:
        pass


@pytest.fixture(scope="module")
def current_image(docker_client, image):
    """The image built from the tree as it is now (after make, the script finds it current)."""
    result = build(image)
    assert result.returncode == 0, result.stderr[-3000:]
    return docker_client.images.get(image)


def test_unchanged_inputs_skip_the_build(docker_client, image, current_image):
    result = build(image)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{image} is current" in result.stderr and f"building {image}" not in result.stderr, result.stderr
    assert docker_client.images.get(image).id == current_image.id


def test_code_change_changes_the_digest_and_rebuilds_only_the_code_layers(
        docker_client, current_image, scratch_tag, tmp_path):
    copy = tmp_path / "checkout"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns("runs", ".venv*", ".git", "__pycache__"))
    current_image.tag(scratch_tag)
    # What the build does not copy into the image is not an input: caches that .dockerignore leaves
    # out, a file the Dockerfile does not COPY, the README and docs. (The CA tests below cover docker/certs.)
    (copy / "ds2" / "__pycache__").mkdir()
    (copy / "ds2" / "__pycache__" / "stray.cpython-39.pyc").write_bytes(b"\0")
    (copy / "tests" / ".pytest_cache").mkdir()
    (copy / "docs" / "notes.md").write_text("not in the image\n")
    for page in ("README.md", "docs/results.md"):   # the documentation is not an input either
        with open(copy / page, "a") as f:
            f.write("\nAn edit of the documentation.\n")
    result = build(scratch_tag, context=copy)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{scratch_tag} is current" in result.stderr, result.stderr

    with open(copy / "ds2" / "__init__.py", "a") as f:
        f.write("# a code-only change\n")
    result = build(scratch_tag, context=copy)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"building {scratch_tag}" in result.stderr, result.stderr
    assert inputs_digest(docker_client, scratch_tag) != inputs_digest(docker_client, current_image.id)
    old = current_image.attrs["RootFS"]["Layers"]
    new = docker_client.images.get(scratch_tag).attrs["RootFS"]["Layers"]
    assert new != old, "the code change did not change the image"
    shared = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
    # Everything up to and including the venv and system packages is shared; only our code
    # layers (COPY of ds2 and what follows) differ.
    assert len(old) - shared <= 4, f"{len(old) - shared} of {len(old)} layers rebuilt"


def ca_handed_to_the_build():
    """The CA file the last build of this checkout gave the builder stage, so a build with a copy of
    it finds that stage cached. A host that handed none gets the system bundle (one slow build)."""
    handed = REPO / "docker" / "certs" / "extra-ca.crt"
    return handed if handed.exists() else Path("/etc/ssl/certs/ca-certificates.crt")


def test_stage_after_a_build_with_a_ca_input_does_not_rebuild(docker_client, current_image, scratch_tag,
                                                               tmp_path):
    """A user behind a proxy: `make train-cpu EXTRA_CA_CERTS=...`, then `make data` with no variable."""
    ca_file = tmp_path / "proxy-ca.pem"
    shutil.copyfile(ca_handed_to_the_build(), ca_file)  # same content: the builder stage stays cached
    result = build(scratch_tag, EXTRA_CA_CERTS=str(ca_file))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"trusts the CA certificates in {ca_file} (EXTRA_CA_CERTS)" in result.stderr, result.stderr
    built = docker_client.images.get(scratch_tag).id

    # Another CA, or none at all: the same inputs, so the same image.
    one_cert = ca_file.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    (tmp_path / "other-ca.pem").write_text(one_cert)
    result = build(scratch_tag, EXTRA_CA_CERTS=str(tmp_path / "other-ca.pem"))
    assert result.returncode == 0 and f"{scratch_tag} is current" in result.stderr, result.stderr[-3000:]

    runs = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k != "EXTRA_CA_CERTS"}
    stage = run(["make", "data", f"IMAGE_CPU={scratch_tag}", f"RUNS={runs}",
                 "SET=data.synth_train=8 data.synth_dev=4 data.synth_test=4"], env=env, timeout=600)
    assert stage.returncode == 0, (stage.stdout + stage.stderr)[-3000:]
    assert f"{scratch_tag} is current" in stage.stderr, stage.stderr[-3000:]
    assert docker_client.images.get(scratch_tag).id == built, "the stage rebuilt the image"
    assert (runs / "data" / "manifests" / "test.json").stat().st_size > 0, "the stage did not run"


# Where Debian/Ubuntu, Fedora/RHEL, Arch and SUSE keep the CAs an administrator adds.
HOST_CA_ANCHORS = ["/usr/local/share/ca-certificates", "/etc/pki/ca-trust/source/anchors",
                   "/etc/ca-certificates/trust-source/anchors", "/etc/pki/trust/anchors",
                   "/usr/share/pki/trust/anchors"]

PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)


def squeeze(text):
    return re.sub(r"\s", "", text)


# Run in the image: which of the certificates in $CERTS (PEM) some *.pem or *.crt file holds.
FIND_CERTS_IN_IMAGE = """
import json, os, re
def certs(text):
    return [re.sub(r"\\s", "", body) for body in
            re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)]
wanted, found = certs(os.environ["CERTS"]), set()
for top in ("/etc", "/usr", "/opt", "/tmp", "/root", "/home", "/work"):
    for folder, _, files in os.walk(top):
        for name in files:
            if name.endswith((".pem", ".crt")):
                try:
                    found.update(certs(open(os.path.join(folder, name), errors="replace").read()))
                except OSError:
                    pass
print(json.dumps([i for i, cert in enumerate(wanted) if cert in found]))
"""


def test_host_ca_is_announced_once_and_stays_out_of_the_runtime_image(docker_client, current_image,
                                                                       scratch_tag):
    result = build(scratch_tag)
    assert result.returncode == 0, result.stderr[-3000:]
    ca_lines = [line for line in result.stderr.splitlines() if " CA" in line]
    # The CAs this host's administrator added (a TLS-intercepting proxy's, on our machines).
    anchor_files = [path for folder in HOST_CA_ANCHORS if Path(folder).is_dir()
                    for path in sorted(Path(folder).rglob("*")) if path.is_file()]
    if not anchor_files:
        assert ca_lines == [], ca_lines
        pytest.skip("this host trusts no extra CA: nothing handed to the build, nothing to look for")
    assert len(ca_lines) == 1 and "this host trusts extra CAs" in ca_lines[0], result.stderr
    host_cas = [cert for path in anchor_files for cert in PEM_CERT.findall(path.read_text(errors="replace"))]
    if not host_cas:
        pytest.skip("the host's extra CAs are not PEM files: cannot look for them in the image")
    handed = squeeze((REPO / "docker" / "certs" / "extra-ca.crt").read_text())
    assert all(squeeze(cert) in handed for cert in host_cas), "the host's CAs were not handed to the build"

    # The first certificate of the image's own bundle must be found: the search works.
    stock = docker_client.containers.run(scratch_tag, ["cat", "/etc/ssl/certs/ca-certificates.crt"],
                                         remove=True).decode()
    wanted = [PEM_CERT.search(stock).group(0)] + host_cas
    found = docker_client.containers.run(scratch_tag, ["python", "-c", FIND_CERTS_IN_IMAGE], remove=True,
                                         environment={"CERTS": "\n".join(wanted)}).decode()
    assert json.loads(found) == [0], f"the runtime image holds these certificates of {wanted}: {found}"


def test_missing_engine_is_explained_not_a_traceback(tmp_path):
    result = build("ds2:never", DOCKER_HOST=f"unix://{tmp_path}/no-such.sock")
    assert result.returncode == 1
    assert "engine is not reachable" in result.stderr
    assert "install-engine.sh" in result.stderr and "Traceback" not in result.stderr


def test_missing_docker_command_is_explained(tmp_path):
    result = build("ds2:never", DOCKER=str(tmp_path / "docker"))
    assert result.returncode == 1
    assert "Install Docker" in result.stderr


def test_unreachable_registry_falls_back_to_bootstrapped_base(docker_client, scratch_tag):
    fallback = os.environ.get("FALLBACK_BASE_IMAGE") or dotenv("DS2_FALLBACK_BASE_IMAGE")
    if not docker_client.images.list(name=fallback):
        pytest.skip(f"{fallback} not built on this host (a host with a registry uses the upstream base)")
    # A tag with no image yet, so the script has to build and so to look for the base.
    result = build(scratch_tag, BASE_IMAGE="registry.invalid/python:3.9-slim-bullseye")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No container registry is reachable" in result.stderr
    assert f"Using\n  {fallback} instead" in result.stderr or fallback in result.stderr


def test_bad_extra_ca_file_is_refused(tmp_path):
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("not a certificate\n")
    result = build("ds2:never", EXTRA_CA_CERTS=str(not_pem))
    assert result.returncode == 1
    assert "not a readable PEM certificate" in result.stderr
