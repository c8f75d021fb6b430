"""The batcher: requests waiting together run as one batch of similar lengths; a full queue says when to
come back; a request whose client left never runs; a failing batch fails its requests and nothing else."""
import threading
import time

import pytest

from ds2.serving.batcher import Batcher, QueueFull


class Recorder:
    """A run() that records its batches and can be held until released."""

    def __init__(self, hold: bool = False):
        self.batches = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, payloads):
        self.started.set()
        self.release.wait(10)
        self.batches.append(list(payloads))
        return [f"done {p}" for p in payloads]


def busy_batcher(max_batch_size, max_batch_frames=10_000, max_wait=0.0, max_queue=10, first_frames=1):
    """(run, batcher, the first request's future) with that first request held in run()."""
    run = Recorder(hold=True)
    batcher = Batcher(run, max_batch_size=max_batch_size, max_batch_frames=max_batch_frames, max_wait=max_wait,
                      max_queue=max_queue)
    batcher.start()
    first = batcher.submit(first_frames, "first")
    assert run.started.wait(5)
    return run, batcher, first


def test_waiting_requests_run_together_grouped_by_length():
    run, batcher, first = busy_batcher(max_batch_size=3, max_wait=0.05, first_frames=100)
    futures = {name: batcher.submit(frames, name) for name, frames in
               [("long1", 900), ("short1", 110), ("long2", 950), ("short2", 120), ("long3", 1000)]}
    run.release.set()
    assert first.result(5) == "done first"
    assert {name: f.result(5) for name, f in futures.items()} == {n: f"done {n}" for n in futures}
    batcher.stop()
    # The oldest waiting (long1) goes first with the two closest to it; then the short ones.
    assert run.batches == [["first"], ["long1", "long2", "long3"], ["short1", "short2"]]


def test_padded_size_limits_a_batch():
    run, batcher, _ = busy_batcher(max_batch_size=8, max_batch_frames=2000, max_wait=0.05)
    futures = [batcher.submit(frames, str(frames)) for frames in (900, 800, 700, 1500)]
    run.release.set()
    for future in futures:
        future.result(5)
    batcher.stop()
    # 2 x 900 fits 2000; a third row would pad to 3 x 900; 1500 (oldest of the rest) runs alone.
    assert run.batches[1:] == [["900", "800"], ["700"], ["1500"]] or \
        run.batches[1:] == [["900", "800"], ["1500"], ["700"]]
    assert all(len(batch) * max(int(p) for p in batch) <= 2000 for batch in run.batches[1:])


def test_a_single_request_waits_at_most_max_wait():
    run = Recorder()
    batcher = Batcher(run, max_batch_size=16, max_batch_frames=10_000, max_wait=0.05, max_queue=10)
    batcher.start()
    started = time.monotonic()
    assert batcher.submit(5, "alone").result(5) == "done alone"
    assert time.monotonic() - started < 2
    batcher.stop()


def test_full_queue_raises_with_a_retry_time():
    run, batcher, _ = busy_batcher(max_batch_size=2, max_queue=2)
    waiting = [batcher.submit(1, "a"), batcher.submit(1, "b")]
    with pytest.raises(QueueFull) as full:
        batcher.submit(1, "c")
    assert full.value.retry_after >= 1
    run.release.set()
    assert [f.result(5) for f in waiting] == ["done a", "done b"]
    batcher.stop()


def test_a_cancelled_request_never_runs():
    run, batcher, _ = busy_batcher(max_batch_size=4)
    gone = batcher.submit(1, "gone")
    kept = batcher.submit(1, "kept")
    assert gone.cancel()
    run.release.set()
    assert kept.result(5) == "done kept"
    batcher.stop()
    assert all("gone" not in batch for batch in run.batches)


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on():
    calls = []

    def run(payloads):
        calls.append(payloads)
        if "bad" in payloads:
            raise RuntimeError("model failed")
        return payloads

    batcher = Batcher(run, max_batch_size=1, max_batch_frames=10_000, max_wait=0.0, max_queue=10)
    batcher.start()
    with pytest.raises(RuntimeError, match="model failed"):
        batcher.submit(1, "bad").result(5)
    assert batcher.submit(1, "good").result(5) == "good"
    batcher.stop()


def test_stop_runs_what_waits_then_refuses_more():
    run = Recorder(hold=True)
    batcher = Batcher(run, max_batch_size=1, max_batch_frames=10_000, max_wait=0.0, max_queue=10)
    batcher.start()
    futures = [batcher.submit(1, str(i)) for i in range(3)]
    assert run.started.wait(5)
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    run.release.set()
    stopper.join(10)
    assert [f.result(0) for f in futures] == ["done 0", "done 1", "done 2"]
    with pytest.raises(QueueFull):
        batcher.submit(1, "late")
