"""SIGKILL at random moments: the last good state survives and the next command works.

`ds2 train` runs in the image on a tiny synthetic corpus and is killed (docker kill -s KILL: the
process gets no chance to clean up) at seeded random moments; after each kill every checkpoint left is
whole (its SHA-256 sidecar matches), the next `ds2 train --resume` continues from the newest one, and
in the end `ds2 eval` works and no temporary file of a killed writer is left. `ds2 preprocess`, `ds2 lm`
and `ds2 tune-lm` are each run once whole (which also times them), then again and killed at a seeded
random moment of that time: what the whole run wrote is still whole, and the command then works.
"""
import hashlib
import json
import random
import re
import time
from pathlib import Path

import pytest

from .conftest import run

SETTINGS = ["--set", "data.synth_train=32", "--set", "data.synth_dev=4", "--set", "data.synth_test=4",
            "--set", "train.epochs=4", "--set", "train.checkpoint_every=1", "--set", "train.keep_last=3"]
KILLS = 3
SEED = 20261207
TEMPORARY = re.compile(r"^\..+\.tmp-[0-9a-f]{8}-\d+-[0-9a-f]{8}$")


def ds2(image, runs_dir, *args, name=None, detach=False):
    # As root, so that the entrypoint runs the command as the owner of the runs folder (as Compose does).
    command = ["docker", "run", "--init", "--user", "0:0", "-v", f"{runs_dir}:/work/runs", "-w", "/work"]
    command += ["-d"] if detach else ["--rm"]
    command += ["--name", name] if name else []
    return run(command + [image, "python", "-m", "ds2", *args, *SETTINGS], timeout=1800)


def whole_checkpoints(checkpoints: Path):
    """step-N.ckpt files with their sidecars; a file whose SHA-256 differs from its sidecar fails the test."""
    found = sorted(checkpoints.glob("step-*.ckpt")) if checkpoints.is_dir() else []
    for path in found:
        sidecar = path.with_name(path.name + ".sha256")
        assert sidecar.is_file(), f"{path.name} has no sidecar"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sidecar.read_text().split()[0], \
            f"{path.name} is not whole after a kill"
    return found


@pytest.mark.slow
def test_train_killed_at_random_moments_resumes_and_evaluates(image, runs_dir):
    prepared = ds2(image, runs_dir, "preprocess")
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    rng = random.Random(SEED)
    run_dir = runs_dir / "small"
    newest = None
    for kill in range(KILLS):
        name = f"ds2-kill-{SEED}-{kill}-{time.time_ns()}"
        started = ds2(image, runs_dir, "train", "--resume", name=name, detach=True)
        assert started.returncode == 0, started.stderr
        time.sleep(rng.uniform(8.0, 40.0))
        run(["docker", "kill", "-s", "KILL", name])
        run(["docker", "wait", name], timeout=120)
        run(["docker", "rm", name])
        found = whole_checkpoints(run_dir / "checkpoints")
        newest = found[-1] if found else newest
    finished = ds2(image, runs_dir, "train", "--resume")
    assert finished.returncode == 0, finished.stderr[-3000:]
    if newest is not None:   # else every kill came before the first checkpoint, and the run started afresh
        assert f"/{newest.name}: step " in finished.stdout, finished.stdout[-3000:]
    whole_checkpoints(run_dir / "checkpoints")
    evaluated = ds2(image, runs_dir, "eval", "--checkpoint", "last")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    left = [p for p in runs_dir.rglob("*") if TEMPORARY.match(p.name)]
    assert left == [], f"temporary files of killed writers left: {left}"


def killed_at_random(image, runs_dir, rng, *args):
    """Run the command whole (timing it), then again killed at a random moment of that time."""
    started = time.monotonic()
    whole = ds2(image, runs_dir, *args)
    assert whole.returncode == 0, whole.stderr[-3000:]
    name = f"ds2-kill-{args[0]}-{time.time_ns()}"
    assert ds2(image, runs_dir, *args, name=name, detach=True).returncode == 0
    time.sleep(rng.uniform(0.0, time.monotonic() - started))
    run(["docker", "kill", "-s", "KILL", name])
    run(["docker", "wait", name], timeout=120)
    run(["docker", "rm", name])


@pytest.mark.slow
def test_preprocess_lm_and_tune_lm_killed_at_random_moments_leave_whole_files(image, runs_dir):
    rng = random.Random(SEED + 1)
    data, run_dir = runs_dir / "data", runs_dir / "small"
    killed_at_random(image, runs_dir, rng, "preprocess")
    for manifest in (data / "manifests").glob("*.json"):
        json.loads(manifest.read_text())
    trained = ds2(image, runs_dir, "train", "--set", "train.epochs=1")
    assert trained.returncode == 0, trained.stderr[-3000:]

    killed_at_random(image, runs_dir, rng, "lm")
    model = next((data / "lm").glob("*.arpa"))
    assert model.read_text().endswith("\\end\\\n")
    tune = ["tune-lm", "--checkpoint", "last", "--alphas", "0,0.5", "--betas", "0,1"]
    killed_at_random(image, runs_dir, rng, *tune)
    settings = list((run_dir / "checkpoints").glob("*.lm.json"))
    assert len(settings) == 1 and "alpha" in json.loads(settings[0].read_text())

    for command in (["preprocess"], ["lm"], tune):
        again = ds2(image, runs_dir, *command)
        assert again.returncode == 0, again.stderr[-3000:]
    left = [p for p in runs_dir.rglob("*") if TEMPORARY.match(p.name)]
    assert left == [], f"temporary files of killed writers left: {left}"
