"""Data-parallel training in containers: Compose's train-dist profile, 1 scheduler + N workers."""
import json
import os
import subprocess
import time

import pytest

from .conftest import REPO, run

# 64 utterances, 8 per batch, one bucket: 8 batches per epoch, so 4 steps per worker with 2 workers.
DIST = ("--set data.synth_train=64 --set data.synth_dev=8 --set data.synth_test=8 --set train.max_batch_size=8 "
        "--set train.num_buckets=1 --set train.checkpoint_every=2 --set train.log_param_digest=true "
        "--set train.log_utterance_ids=true")
# A dead worker must end the job within about this long (MindSpore's heartbeat and collective timeout).
NODE_TIMEOUT = 20


@pytest.fixture
def dist_env(image, runs_dir):
    env = {**os.environ, "DS2_RUNS": str(runs_dir), "DS2_IMAGE_CPU": image, "DS2_WORKERS": "2",
           "COMPOSE_PROJECT_NAME": f"ds2dist{os.getpid()}", "MS_NODE_TIMEOUT": str(NODE_TIMEOUT)}
    yield env
    run(["docker", "compose", "--profile", "train-dist", "down", "--remove-orphans"], env=env)


def compose_up(env, args, **kwargs):
    command = ["docker", "compose", "--profile", "train-dist", "up", "--no-build", "dist-scheduler", "dist-worker"]
    return run(command, env={**env, "DS2_ARGS": args}, **kwargs)


def train_records(path):
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "train"]


def exit_codes(env):
    """{container name: exit code} of the project's train-dist containers."""
    result = run(["docker", "compose", "--profile", "train-dist", "ps", "-a", "--format", "json"], env=env)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return {row["Name"]: row["ExitCode"] for row in rows if row["Service"].startswith("dist-")}


@pytest.mark.slow
def test_two_workers_see_different_data_keep_equal_parameters_and_match_one_big_batch(dist_env, runs_dir, image):
    up = compose_up(dist_env, DIST + " --set train.epochs=1", timeout=900)
    assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
    assert set(exit_codes(dist_env).values()) == {0}, (up.stdout + up.stderr)[-4000:]
    run_dir = runs_dir / "small"
    rank0, rank1 = train_records(run_dir / "metrics.jsonl"), train_records(run_dir / "metrics-rank1.jsonl")
    assert [r["step"] for r in rank0] == [r["step"] for r in rank1] == [1, 2, 3, 4]
    for a, b in zip(rank0, rank1):
        assert a["param_sha256"] == b["param_sha256"], f"parameters differ after step {a['step']}"
        assert not set(a["utterance_ids"]) & set(b["utterance_ids"]), f"both ranks trained on the same data"
    seen = [i for r in rank0 + rank1 for i in r["utterance_ids"]]
    assert len(seen) == len(set(seen)) == 64  # the epoch's batches, each on exactly one worker

    # Step 1 from the same initial parameters in one process: the mean of the two half-batch losses is
    # what the job logged; one batch of all 16 utterances differs only by BatchNorm's batch statistics.
    parts = json.dumps([rank0[0]["utterance_ids"], rank1[0]["utterance_ids"]])
    helper = "tests/integration/union_batch_loss.py"
    result = run(["docker", "run", "--rm", "--user", "0:0", "-v", f"{runs_dir}:/work/runs",
                  "-v", f"{REPO / helper}:/work/{helper}:ro", "-w", "/work", image,
                  "python", f"/work/{helper}", "runs/small/config.yaml", parts], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = json.loads(result.stdout.strip().splitlines()[-1])
    assert rank0[0]["loss"] == rank1[0]["loss"] == pytest.approx(sum(losses["parts"]) / 2, rel=1e-4)
    assert rank0[0]["loss"] == pytest.approx(losses["union"], rel=0.02)

    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.ckpt"))
    assert checkpoints == ["step-0000002.ckpt", "step-0000004.ckpt"]  # written once, by rank 0


@pytest.mark.slow
def test_killed_worker_ends_the_job_with_a_clear_message_and_it_resumes_with_one_worker(dist_env, runs_dir):
    env = {**dist_env, "DS2_ARGS": DIST + " --set train.epochs=2 --set train.max_batch_size=4"}
    command = ["docker", "compose", "--profile", "train-dist", "up", "--no-build", "dist-scheduler", "dist-worker"]
    job = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        metrics, checkpoints = runs_dir / "small" / "metrics.jsonl", runs_dir / "small" / "checkpoints"
        deadline = time.time() + 600
        while time.time() < deadline and job.poll() is None:
            steps = len(train_records(metrics)) if metrics.exists() else 0
            if steps >= 3 and list(checkpoints.glob("step-*.ckpt")):
                break
            time.sleep(0.5)
        assert job.poll() is None, "the job ended before a worker could be killed:\n" + job.communicate()[0][-4000:]
        victim = f"{env['COMPOSE_PROJECT_NAME']}-dist-worker-2"
        assert run(["docker", "kill", victim]).returncode == 0
        # MindSpore notices within MS_NODE_TIMEOUT; the bound leaves room for a loaded machine.
        output = job.communicate(timeout=NODE_TIMEOUT + 120)[0]
    finally:
        if job.poll() is None:
            job.kill()
    codes = exit_codes(env)
    assert codes[victim] == 137
    assert all(code != 0 for code in codes.values()), codes  # nobody carries on or hangs
    assert f"did not answer within MS_NODE_TIMEOUT={NODE_TIMEOUT} s" in output, output[-4000:]
    assert "ds2 train --resume" in output
    saved_steps = max(int(p.stem.split("-")[1]) for p in checkpoints.glob("step-*.ckpt"))
    run(["docker", "compose", "--profile", "train-dist", "down"], env=env)

    resumed = compose_up({**dist_env, "DS2_WORKERS": "1"}, env["DS2_ARGS"], timeout=900)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0 and set(exit_codes(dist_env).values()) == {0}, log[-4000:]
    assert f"resumed from runs/small/checkpoints/step-{saved_steps:07d}.ckpt" in log
    assert "the checkpoint was written by 2 workers, this job has 1" in log
    steps = [r["step"] for r in train_records(metrics)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > saved_steps
