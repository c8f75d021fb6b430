"""One writer per run folder across containers: the lock is the kernel's, so it holds between two
containers sharing the runs folder, and a killed container leaves the folder free."""
import time

import pytest

from .conftest import run
from .test_kill import ds2


@pytest.mark.slow
def test_a_second_container_training_the_same_run_is_refused_until_the_first_is_gone(image, runs_dir):
    prepared = ds2(image, runs_dir, "preprocess")
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    name = f"ds2-lock-{time.time_ns()}"
    assert ds2(image, runs_dir, "train", name=name, detach=True).returncode == 0
    lock = runs_dir / "small" / ".ds2.lock"
    deadline = time.time() + 300
    while time.time() < deadline and not (lock.is_file() and lock.read_text().strip()):
        time.sleep(0.5)
    try:
        second = ds2(image, runs_dir, "train", "--resume")
    finally:
        run(["docker", "kill", "-s", "KILL", name])
        run(["docker", "wait", name], timeout=120)
        run(["docker", "rm", name])
    said = [line for line in second.stderr.splitlines() if line.startswith("ds2 train:")]
    assert second.returncode == 1 and len(said) == 1, second.stderr[-3000:]
    assert said[0].startswith("ds2 train: runs/small is in use by ds2 train (pid ") and "Traceback" not in second.stderr
    after = ds2(image, runs_dir, "train", "--resume", "--max-steps", "1")
    assert after.returncode == 0, after.stderr[-3000:]
