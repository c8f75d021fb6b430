"""Data-parallel training: cluster settings, resume across worker counts, and a real local job."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ds2 import distributed
from ds2.batching import BatchSampler

REPO = Path(__file__).resolve().parent.parent


def cluster_env(**values):
    env = {"MS_ROLE": "MS_WORKER", "MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": "8118", "MS_WORKER_NUM": "2"}
    env.update(values)
    return {k: v for k, v in env.items() if v is not None}


def test_prepare_sets_short_timeouts_but_keeps_the_users():
    env = cluster_env(MS_NODE_TIMEOUT="45")
    distributed.prepare_environment(env)
    assert env["MS_NODE_TIMEOUT"] == "45"
    assert env["MS_TOPO_TIMEOUT"] == distributed.TIMEOUT_DEFAULTS["MS_TOPO_TIMEOUT"]


def test_prepare_resolves_a_scheduler_host_name():
    env = cluster_env(MS_SCHED_HOST="localhost")
    distributed.prepare_environment(env)
    assert env["MS_SCHED_HOST"].startswith("127.")


@pytest.mark.parametrize("env, expected", [
    (cluster_env(MS_ROLE="MS_PSERVER"), "MS_ROLE='MS_PSERVER' is not a role"),
    (cluster_env(MS_SCHED_PORT=None, MS_WORKER_NUM=None), "needs MS_SCHED_PORT, MS_WORKER_NUM"),
    (cluster_env(MS_SCHED_HOST="no-such-host.invalid"), "MS_SCHED_HOST=no-such-host.invalid does not resolve"),
])
def test_prepare_explains_bad_settings(env, expected):
    with pytest.raises(distributed.ClusterError, match=expected.replace("(", r"\(")):
        distributed.prepare_environment(env)


def test_single_process_without_ms_role(monkeypatch):
    monkeypatch.delenv("MS_ROLE", raising=False)
    cluster = distributed.join("CPU")
    assert (cluster.rank, cluster.world_size, cluster.distributed, cluster.writes_checkpoints) == (0, 1, False, True)


def global_batches(sampler_args, world_size, epoch=0):
    """Every rank's batches of `epoch`, interleaved back into global (training) order."""
    shards = [BatchSampler(rank=r, world_size=world_size, **sampler_args).epoch(epoch) for r in range(world_size)]
    return [batch for step in zip(*shards) for batch in step]


SAMPLER_ARGS = dict(frames=np.random.default_rng(0).integers(100, 600, size=300).tolist(), frame_seconds=0.01,
                    max_batch_seconds=20.0, max_batch_size=8, num_buckets=3, width_multiple=4, seed=5)


@pytest.mark.parametrize("saved, now, batch", [(2, 1, 3), (1, 2, 5), (3, 2, 4), (2, 3, 5)])
def test_resume_with_another_worker_count_trains_no_batch_twice(saved, now, batch):
    before = global_batches(SAMPLER_ARGS, saved)[:saved * batch]
    epoch, new_batch, message = distributed.resume_position(0, batch, saved, now, len(global_batches(SAMPLER_ARGS, now)) // now)
    after = global_batches(SAMPLER_ARGS, now)[now * new_batch:]
    assert epoch == 0 and message
    assert not set(before) & set(after)
    skipped = now * new_batch - saved * batch
    assert 0 <= skipped < now
    assert (f"{skipped} batches of this epoch are skipped" in message) == (skipped > 0)


def test_resume_past_the_new_epoch_end_goes_to_the_next_epoch():
    epoch, batch, message = distributed.resume_position(4, 9, 1, 2, batches_per_rank=4)
    assert (epoch, batch) == (5, 0) and "goes on with epoch 5" in message


def test_resume_with_the_same_worker_count_is_unchanged():
    assert distributed.resume_position(2, 7, 2, 2, batches_per_rank=10) == (2, 7, None)
    assert distributed.resume_position(2, 0, 2, 3, batches_per_rank=10) == (2, 0, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_local_workers_train_identical_parameters_on_different_data(tmp_path):
    """Scheduler + 2 worker processes on this machine, MindSpore's CPU collectives (MCCL)."""
    pytest.importorskip("mindspore")
    from tests.helpers import tiny_overrides, write_tone_corpus

    manifests = write_tone_corpus(tmp_path / "corpus", counts=(("train", 32), ("dev", 4), ("test", 4)))
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "ds2", "train", "--max-steps", "3"] + tiny_overrides(
        run_dir, tmp_path / "data", manifests, **{"train.max_batch_size": 4, "train.threads": 1,
                                                  "train.log_param_digest": "true",
                                                  "train.log_utterance_ids": "true"})
    env = dict(os.environ, PYTHONPATH=str(REPO), MS_SCHED_HOST="127.0.0.1", MS_SCHED_PORT=str(free_port()),
               MS_WORKER_NUM="2", MS_TOPO_TIMEOUT="120", MS_NODE_TIMEOUT="60")
    processes = [subprocess.Popen(command, cwd=REPO, env=dict(env, MS_ROLE=role), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
                 for role in ("MS_SCHED", "MS_WORKER", "MS_WORKER")]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in processes] == [0, 0, 0], "\n".join(o[-2000:] for o in outputs)

    ranks = [[json.loads(line) for line in (run_dir / name).read_text().splitlines()]
             for name in ("metrics.jsonl", "metrics-rank1.jsonl")]
    assert [r["step"] for r in ranks[0]] == [r["step"] for r in ranks[1]] == [1, 2, 3]
    for rank0, rank1 in zip(*ranks):
        assert rank0["param_sha256"] == rank1["param_sha256"]
        assert rank0["loss"] == rank1["loss"]  # the loss is averaged over the workers
        assert not set(rank0["utterance_ids"]) & set(rank1["utterance_ids"])
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.ckpt"))
    assert saved == ["step-0000002.ckpt", "step-0000003.ckpt"]
