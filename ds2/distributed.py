"""Data-parallel training on MindSpore's own distributed runtime (dynamic cluster).

A job is one scheduler process and N worker processes, all running `ds2 train` with the same
options; MindSpore's environment variables say which is which:

    MS_ROLE         MS_SCHED (the one scheduler) or MS_WORKER (every training process)
    MS_SCHED_HOST   the scheduler's address; ds2 also accepts a host name and resolves it
    MS_SCHED_PORT   the scheduler's port (the same on every process)
    MS_WORKER_NUM   N, the number of workers

Without MS_ROLE, `ds2 train` is a single process, exactly as before. Each worker trains on its
own shard of every epoch's batches (ds2.batching.BatchSampler, rank r takes global batches
r, r+N, r+2N, ...); the compiled step averages the gradients and the loss over all workers
(AllReduce: MCCL on CPU, NCCL on GPU), so every worker applies the same update and the
trainable parameters stay identical. BatchNorm running statistics are not synchronised: each
worker's follow its own batches (they are not trained, only averaged over recent batches), and
the checkpoint holds rank 0's. Rank 0 alone writes checkpoints, config.yaml, metrics.jsonl and
the plot; rank r > 0 writes its own metrics-rank<r>.jsonl.

Timeouts. MindSpore's defaults wait 30 minutes for the cluster to form; ds2 sets shorter ones
unless the environment already sets them (TIMEOUT_DEFAULTS). Measured with mindspore 2.7.2 on CPU:
- MS_TOPO_TIMEOUT (seconds): how long the scheduler and workers wait for all N workers to join;
  past it `init()` raises on every process that is up.
- MS_NODE_TIMEOUT (seconds): how long a worker waits in a collective operation for the others
  (the CPU collectives read it; their default is 30 s), and how long the scheduler waits for a
  silent worker's heartbeat before it declares the job failed. A worker that is killed ends the
  job within about this time on every other process. Any pause of one worker that the others
  wait through (compiling a new batch shape, rank 0 writing a checkpoint) must stay below it.
"""
from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import signal
import socket
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

from ds2.errors import UserError

ROLE = "MS_ROLE"
SCHEDULER = "MS_SCHED"
WORKER = "MS_WORKER"
# Long enough for containers on other hosts to start and for one worker to compile a new batch
# shape or write a checkpoint while the others wait; short enough that a dead worker or
# scheduler ends the job in minutes, not MindSpore's default half hour.
TIMEOUT_DEFAULTS = {"MS_TOPO_TIMEOUT": "180", "MS_NODE_TIMEOUT": "120"}
CLUSTER_VARIABLES = ("MS_SCHED_HOST", "MS_SCHED_PORT", "MS_WORKER_NUM")


class ClusterError(UserError, RuntimeError):
    """The distributed job cannot start or cannot go on; the message says what to do."""


@dataclass(frozen=True)
class Cluster:
    """This process's place in the job: rank 0 of 1 for a single process."""
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def writes_checkpoints(self) -> bool:
        return self.rank == 0


def role(environ=os.environ) -> str:
    """MS_ROLE, or "" for a single process."""
    return environ.get(ROLE, "")


def settings(environ=os.environ) -> Dict[str, str]:
    """The cluster variables this process runs with (for messages)."""
    names = CLUSTER_VARIABLES + tuple(TIMEOUT_DEFAULTS)
    return {name: environ.get(name, "(unset)") for name in names}


def prepare_environment(environ=os.environ) -> None:
    """Check the cluster variables, set the timeout defaults, resolve a scheduler host name.

    MindSpore reads these from the process environment when `init()` runs, so they are set here,
    before it. MindSpore wants an IP address in MS_SCHED_HOST; Compose service names and
    Kubernetes service names are host names, so ds2 resolves them first.
    """
    if role(environ) not in (SCHEDULER, WORKER):
        raise ClusterError(f"{ROLE}={role(environ)!r} is not a role ds2 runs: set {ROLE}=MS_SCHED for the "
                           f"scheduler or {ROLE}=MS_WORKER for a training worker (or unset it for a "
                           f"single-process run).")
    missing = [name for name in CLUSTER_VARIABLES if not environ.get(name)]
    if missing:
        raise ClusterError(f"{ROLE}={role(environ)} needs {', '.join(missing)} as well: the scheduler's "
                           f"address and port and the number of workers, the same on every process "
                           f"(docs/distributed.md).")
    for name, value in TIMEOUT_DEFAULTS.items():
        if not environ.get(name):  # unset or empty (Compose passes an unset variable as "")
            environ[name] = value
    host = environ["MS_SCHED_HOST"]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            environ["MS_SCHED_HOST"] = socket.gethostbyname(host)
        except OSError as exc:
            raise ClusterError(f"MS_SCHED_HOST={host} does not resolve ({exc}): give the scheduler's IP "
                               f"address or a host name this machine can resolve.") from None


def join(device: str) -> Cluster:
    """Join the job described by the MS_* variables; a single process when MS_ROLE is unset.

    On a worker, returns its rank and the number of workers, with MindSpore's data-parallel
    context set. Raises ClusterError when the cluster does not form within MS_TOPO_TIMEOUT.
    Call after the device is set (ds2.runtime.configure_mindspore).
    """
    if not role():
        return Cluster()
    prepare_environment()
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    try:
        init()
    except RuntimeError as exc:
        raise ClusterError(_join_failure(exc)) from None
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    cluster = Cluster(get_rank(), get_group_size())
    print(f"ds2 train: worker rank {cluster.rank} of {cluster.world_size} ({device}, "
          f"scheduler {os.environ['MS_SCHED_HOST']}:{os.environ['MS_SCHED_PORT']})")
    return cluster


def run_scheduler() -> int:
    """The scheduler's whole job: form the cluster and watch it until the workers finish.

    On the scheduler, MindSpore 2.7's `init()` does not return: it ends the process with status 0
    once every worker has finished, and raises when the cluster does not form or a worker stops
    answering for MS_NODE_TIMEOUT seconds.
    """
    from mindspore.communication import init

    prepare_environment()
    print(f"ds2 train: scheduler for {os.environ['MS_WORKER_NUM']} workers on port "
          f"{os.environ['MS_SCHED_PORT']}", flush=True)
    try:
        init()
    except RuntimeError as exc:
        raise ClusterError(_job_failure("the scheduler", exc)) from None
    return 0  # for a MindSpore whose init() returns on the scheduler


def _first_sentence(exc: BaseException) -> str:
    """MindSpore's messages go on for many lines of guesses; the first sentence says what failed."""
    first_line = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return first_line.split(". ")[0].rstrip(".")


def _join_failure(exc: BaseException) -> str:
    values = settings()
    return (f"could not form the cluster within MS_TOPO_TIMEOUT={values['MS_TOPO_TIMEOUT']} s "
            f"(MS_SCHED_HOST={values['MS_SCHED_HOST']}, MS_SCHED_PORT={values['MS_SCHED_PORT']}, "
            f"MS_WORKER_NUM={values['MS_WORKER_NUM']}; MindSpore: {_first_sentence(exc)}). Check that the "
            f"scheduler runs and is reachable at that address from every worker, and that exactly "
            f"MS_WORKER_NUM workers were started; then start the job again.")


def _job_failure(who: str, exc: BaseException) -> str:
    values = settings()
    return (f"{who} stopped: another process of the job died or did not answer within "
            f"MS_NODE_TIMEOUT={values['MS_NODE_TIMEOUT']} s (MindSpore: {_first_sentence(exc)}). Its own log "
            f"says why. Start the scheduler and all workers again with `ds2 train --resume` (the same or "
            f"another number of workers) to continue from the last checkpoint.")


def step_failure(rank: int, exc: BaseException) -> ClusterError:
    """The error a worker raises when a collective operation in the train step fails."""
    return ClusterError(_job_failure(f"worker rank {rank}", exc))


def stop_on_sigterm(rank: int) -> None:
    """Turn SIGTERM into a ClusterError with a clear message.

    MindSpore's cluster sends SIGTERM to the surviving workers once the scheduler has declared
    the job failed (and `docker stop` sends it too); without a handler they vanish silently.
    """
    def handler(signum, frame):
        raise ClusterError(f"worker rank {rank} received SIGTERM: MindSpore's cluster stops the workers "
                           f"when another process of the job has failed (or the container was stopped). "
                           f"Start the scheduler and all workers again with `ds2 train --resume` to "
                           f"continue from the last checkpoint.")

    signal.signal(signal.SIGTERM, handler)


def make_gradient_mean(parameters, world_size: int):
    """For the compiled step: (loss, grads) -> (mean loss, mean grads) over all workers.

    None for a single process, so the step compiles exactly as before.
    """
    if world_size == 1:
        return None
    from mindspore import nn, ops

    grad_reducer = nn.DistributedGradReducer(parameters, mean=True, degree=world_size)
    all_reduce = ops.AllReduce()

    def gradient_mean(loss, grads):
        return all_reduce(loss) / world_size, grad_reducer(grads)

    return gradient_mean


def parameter_digest(parameters: Iterable) -> str:
    """SHA-256 over the names and values of `parameters`: equal digests, equal parameters."""
    digest = hashlib.sha256()
    for parameter in parameters:
        digest.update(parameter.name.encode())
        digest.update(parameter.asnumpy().tobytes())
    return digest.hexdigest()


def resume_position(epoch: int, batch: int, saved_world_size: int, world_size: int,
                    batches_per_rank: int) -> Tuple[int, int, Optional[str]]:
    """Map a checkpoint's data position to this job's number of workers.

    An epoch's global batch order does not depend on the number of workers; a position of
    `batch` steps with W workers means W * batch global batches of the epoch are done. With W'
    workers the next step starts at global batch W' * ceil(W * batch / W'): no batch is trained
    twice, and when W' does not divide the count, up to W' - 1 batches of this epoch are skipped.
    A position past the end of the new (per-rank) epoch moves to the next epoch. Returns
    (epoch, batch, a message for the log or None when nothing changed).
    """
    if saved_world_size == world_size or batch == 0:
        return epoch, batch, None
    done = saved_world_size * batch
    new_batch = math.ceil(done / world_size)
    skipped = new_batch * world_size - done
    if new_batch >= batches_per_rank:
        return (epoch + 1, 0, f"the checkpoint was written by {saved_world_size} workers, this job has "
                              f"{world_size}: epoch {epoch} has no full step left for {world_size} workers, "
                              f"so training goes on with epoch {epoch + 1}")
    return (epoch, new_batch, f"the checkpoint was written by {saved_world_size} workers, this job has "
                              f"{world_size}: {done} batches of epoch {epoch} were done, so each worker "
                              f"starts at its batch {new_batch}" +
            (f" ({skipped} batches of this epoch are skipped)" if skipped else ""))

