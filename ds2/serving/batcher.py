"""Requests batched by length: a short queue that one worker thread empties a batch at a time.

    batcher = Batcher(run, max_batch_size=16, max_batch_frames=16 * 3000, max_wait=0.01, max_queue=64)
    future = batcher.submit(frames=412, payload=...)      # QueueFull when max_queue requests wait already
    result = future.result()                              # run()'s result for this payload

The worker waits for the first request, then up to max_wait seconds more for others to join it (less when
max_batch_size are waiting), and runs `run` on the oldest waiting request together with the waiting ones
closest to it in length, as many as max_batch_size and max_batch_frames (the padded batch: rows x longest)
allow. Close lengths keep padding, so wasted work, small; taking the oldest first keeps every request's
wait bounded. A request whose future was cancelled before its batch started (its client went away) is
dropped without running.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, List, NamedTuple, Optional


class QueueFull(Exception):
    """max_queue requests are waiting; retry_after: seconds until there is likely room."""

    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class Job(NamedTuple):
    frames: int         # the request's length, in the unit max_batch_frames counts
    payload: Any        # what run() gets for it
    future: Future
    arrived: float      # time.monotonic() when submitted


class Batcher:
    def __init__(self, run: Callable[[List[Any]], List[Any]], max_batch_size: int, max_batch_frames: int,
                 max_wait: float, max_queue: int):
        """run(payloads) -> one result per payload, in order; an exception fails every request of the batch."""
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_batch_frames = max_batch_frames
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.waiting: List[Job] = []
        self.condition = threading.Condition()
        self.stopping = False
        self.batch_seconds = 0.0    # moving average of run()'s time, for Retry-After
        self.batches = 0
        self.thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._work, name="batcher", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Run what is waiting, then end the worker."""
        with self.condition:
            self.stopping = True
            self.condition.notify_all()
        if self.thread is not None:
            self.thread.join()

    def submit(self, frames: int, payload: Any) -> Future:
        future: Future = Future()
        with self.condition:
            if self.stopping:
                raise QueueFull(1)
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(self.retry_after())
            self.waiting.append(Job(frames, payload, future, time.monotonic()))
            self.condition.notify_all()
        return future

    def retry_after(self) -> int:
        """Whole seconds the batches ahead of a new request would take (at least 1)."""
        batches_ahead = math.ceil(len(self.waiting) / self.max_batch_size) + 1
        return max(1, math.ceil(batches_ahead * self.batch_seconds))

    def _next_batch(self) -> Optional[List[Job]]:
        """Wait for work and take a batch of it; None once stopping with nothing left."""
        with self.condition:
            while True:
                self.waiting = [job for job in self.waiting if not job.future.cancelled()]
                if self.waiting:
                    deadline = self.waiting[0].arrived + self.max_wait
                    now = time.monotonic()
                    if len(self.waiting) >= self.max_batch_size or now >= deadline or self.stopping:
                        return self._take()
                    self.condition.wait(deadline - now)
                elif self.stopping:
                    return None
                else:
                    self.condition.wait()

    def _take(self) -> List[Job]:
        oldest = self.waiting[0]
        by_closeness = sorted(self.waiting[1:], key=lambda job: abs(job.frames - oldest.frames))
        batch, longest = [oldest], oldest.frames
        for job in by_closeness:
            if len(batch) == self.max_batch_size:
                break
            if (len(batch) + 1) * max(longest, job.frames) > self.max_batch_frames:
                continue
            batch.append(job)
            longest = max(longest, job.frames)
        taken = {id(job) for job in batch}
        self.waiting = [job for job in self.waiting if id(job) not in taken]
        return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            # A client that left while its request waited: drop it (set_running... returns False).
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            started = time.monotonic()
            try:
                results = self.run([job.payload for job in batch])
            except BaseException as exc:    # the requests fail, the worker carries on
                for job in batch:
                    job.future.set_exception(exc)
                continue
            finally:
                elapsed = time.monotonic() - started
                self.batch_seconds = elapsed if not self.batches else 0.8 * self.batch_seconds + 0.2 * elapsed
                self.batches += 1
            for job, result in zip(batch, results):
                job.future.set_result(result)
