"""Length-bucketed batching: duration cap, every utterance once, determinism, shards, resume."""
import itertools
import threading
import time

import numpy as np
import pytest

from ds2.batching import (Batch, BatchSampler, Prefetcher, batch_size_for, bucket_widths, label_widths,
                          pad_batch)

FRAME_SECONDS = 0.01


def make_sampler(frames, seed=7, rank=0, world_size=1, max_batch_seconds=20.0, max_batch_size=16,
                 num_buckets=5, shuffle=True):
    return BatchSampler(frames, frame_seconds=FRAME_SECONDS, max_batch_seconds=max_batch_seconds,
                        max_batch_size=max_batch_size, num_buckets=num_buckets, width_multiple=4, seed=seed,
                        shuffle=shuffle, rank=rank, world_size=world_size)


@pytest.fixture
def frames():
    return np.random.default_rng(0).integers(120, 900, size=403).tolist()


def test_widths_cover_every_utterance_and_are_multiples(frames):
    widths = bucket_widths(frames, 5, 4)
    assert len(widths) <= 5
    assert widths == sorted(widths)
    assert all(w % 4 == 0 for w in widths)
    assert widths[-1] >= max(frames)


def test_widths_are_the_least_padding_choice():
    """Against brute force over every choice of widths, on small random corpora."""
    rng = np.random.default_rng(3)
    for _ in range(40):
        frames = rng.integers(1, 60, size=int(rng.integers(1, 25))).tolist()
        buckets = int(rng.integers(1, 5))

        def padding(widths):
            return sum(min(w for w in widths if w >= f) - f for f in frames)

        lengths = sorted(set(frames))
        best = min(padding(list(others) + [lengths[-1]])
                   for r in range(min(buckets, len(lengths)))
                   for others in itertools.combinations(lengths[:-1], r))
        widths = bucket_widths(frames, buckets, 1)
        assert len(widths) <= buckets and widths[-1] == max(frames)
        assert padding(widths) == best


def test_more_buckets_never_pad_more(frames):
    def padding(widths):
        return sum(min(w for w in widths if w >= f) - f for f in frames)

    paddings = [padding(bucket_widths(frames, n, 4)) for n in (1, 2, 4, 8, 16)]
    assert paddings == sorted(paddings, reverse=True) and paddings[-1] < paddings[0]


def test_padded_duration_within_cap(frames):
    sampler = make_sampler(frames)
    for batch in sampler.epoch(0):
        assert all(frames[i] <= batch.width for i in batch.indices)
        assert len(batch.indices) <= 16
        assert len(batch.indices) * batch.width * FRAME_SECONDS <= 20.0 + 1e-9


def test_single_long_utterance_gets_its_own_batch():
    assert batch_size_for(5000, FRAME_SECONDS, 20.0, 16) == 1


def test_every_utterance_once_per_epoch(frames):
    sampler = make_sampler(frames)
    for epoch in (0, 1):
        used = [i for batch in sampler.epoch(epoch) for i in batch.indices]
        assert sorted(used) == list(range(len(frames)))


def test_deterministic_per_epoch_and_reshuffled_between_epochs(frames):
    a, b = make_sampler(frames), make_sampler(frames)
    assert a.epoch(3) == b.epoch(3)
    assert a.epoch(3) != a.epoch(4)
    assert make_sampler(frames, seed=8).epoch(3) != a.epoch(3)
    assert len(a.epoch(0)) == len(a.epoch(5)) == len(a)


def test_few_shapes(frames):
    sampler = make_sampler(frames)
    shapes = {(len(b.indices), b.width) for e in range(4) for b in sampler.epoch(e)}
    assert shapes == set(sampler.shapes())
    assert len(shapes) <= 5 + 1  # one per bucket, plus the leftover batch of the widest


def test_shards_are_disjoint_and_equal(frames):
    shards = [make_sampler(frames, rank=r, world_size=3).epoch(2) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    seen = [i for shard in shards for batch in shard for i in batch.indices]
    assert len(seen) == len(set(seen))
    everything = make_sampler(frames).epoch(2)
    assert {b for s in shards for b in s} <= set(everything)
    with pytest.raises(ValueError):
        make_sampler(frames, rank=3, world_size=3)


def test_pad_batch_zeroes_padding_and_keeps_true_lengths():
    feats = [np.ones((3, 5), np.float32), 2 * np.ones((3, 8), np.float32)]
    labels = [[1, 2], [3, 4, 5]]
    padded = pad_batch((4, 9), 12, feats, labels, n_bins=3, label_width=6, frame_seconds=FRAME_SECONDS)
    assert padded.features.shape == (2, 1, 3, 12) and padded.indices == (4, 9)
    assert padded.features[0, 0, :, 5:].sum() == 0 and padded.features[0, 0, :, :5].min() == 1
    assert padded.frames.tolist() == [5, 8]
    assert padded.labels.tolist() == [[1, 2, 0, 0, 0, 0], [3, 4, 5, 0, 0, 0]]
    assert padded.label_lengths.tolist() == [2, 3]
    assert padded.audio_seconds == pytest.approx(13 * FRAME_SECONDS)
    empty = pad_batch((), 12, [], [], n_bins=3, label_width=6, frame_seconds=FRAME_SECONDS)
    assert empty.features.shape == (0, 1, 3, 12) and empty.audio_seconds == 0


def test_label_widths_hold_every_fitting_utterance():
    assert label_widths([10, 20], [5, 9, 15], [4, 7, 3]) == [7, 7]


def test_prefetcher_keeps_order_in_its_own_thread():
    batches = [Batch((i,), 4) for i in range(10)]
    threads = []

    def load(batch):
        threads.append(threading.current_thread().name)
        return batch.indices[0]

    assert list(Prefetcher(batches, load)) == list(range(10))
    assert set(threads) == {"ds2-prefetch"}


def test_prefetcher_runs_ahead_of_the_consumer_by_its_depth():
    loaded = []
    ahead = threading.Event()

    def load(batch):
        loaded.append(batch.indices[0])
        if len(loaded) == 1 + 1 + 3:   # the batch taken, the one the thread holds, and a full queue
            ahead.set()
        return batch.indices[0]

    prefetch = Prefetcher([Batch((i,), 4) for i in range(20)], load, depth=3)
    try:
        items = iter(prefetch)
        assert next(items) == 0
        # While the consumer works on batch 0, the thread loads the next ones without being asked...
        assert ahead.wait(timeout=10), f"loaded only {loaded} while the consumer was busy"
        time.sleep(0.3)
        # ...up to its depth (a bounded queue, plus the batch it is waiting to put), and no further.
        assert loaded == list(range(5))
        assert list(items) == list(range(1, 20))
    finally:
        prefetch.close()


def test_prefetcher_reraises_loader_errors():
    def load(batch):
        if batch.indices[0] == 3:
            raise ValueError("bad audio")
        return batch.indices[0]

    got = []
    with pytest.raises(ValueError, match="bad audio"):
        for item in Prefetcher([Batch((i,), 4) for i in range(6)], load):
            got.append(item)
    assert got == [0, 1, 2]
