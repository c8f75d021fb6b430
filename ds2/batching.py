"""Length-bucketed batches with an audio-duration cap, deterministic per epoch, and a prefetcher.

Graph mode compiles one graph per input shape, so padded widths come from a small fixed set:
`bucket_widths` picks the `num_buckets` widths that pad the corpus's frame counts least. Every
bucket has a fixed batch size, the largest that keeps batch_size * width * frame_seconds within
max_batch_seconds (and at most max_batch_size), so each (bucket, batch size) shape compiles once.

An epoch's batches are a pure function of (utterance frame counts, config, seed, epoch, rank,
world_size): `BatchSampler.epoch(epoch)` gives the same list every time, so a data position
(epoch, batch index) names exactly the next batch after a resume.

Within an epoch, each bucket's utterances are shuffled and cut into full batches; the ones left
over move up to the next (wider) bucket, so every utterance is used every epoch and only the
widest bucket can end in a smaller batch (the same size every epoch: one more shape).
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ds2.augment import speed_samples
from ds2.errors import UserError
from ds2.shapes import duration_frames, input_frames, output_lengths, time_stride

if TYPE_CHECKING:
    from ds2.augment import Augmenter


@dataclass(frozen=True)
class Batch:
    """Utterance indices (into the sampler's list) and the padded width in frames."""
    indices: Tuple[int, ...]
    width: int


def bucket_widths(frames: Sequence[int], num_buckets: int, multiple: int) -> List[int]:
    """At most `num_buckets` padded widths (multiples of `multiple`) that minimise total padding.

    Every utterance goes to the narrowest width that holds it, so the padded frames of a choice
    of widths are sum(width of its bucket) - sum(frames). The best choice is found exactly by
    dynamic programming over the distinct rounded lengths: cost[m][j] is the least padded total
    for the lengths up to j with m widths, the last of them = length j. The widest is always the
    longest utterance (rounded up), so every utterance fits some bucket.
    """
    if len(frames) == 0:
        raise ValueError("no utterances to batch")
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be at least 1, not {num_buckets}")
    rounded = -(-np.asarray(frames, dtype=np.int64) // multiple) * multiple
    lengths, counts = np.unique(rounded, return_counts=True)
    below = np.concatenate(([0], np.cumsum(counts)))      # below[i]: utterances shorter than lengths[i]
    n = len(lengths)
    buckets = min(num_buckets, n)
    cost = lengths * below[1:]                              # one width (lengths[j]) for lengths[0..j]
    choice = np.zeros((buckets, n), dtype=np.int64)         # first length index of the last bucket
    for m in range(1, buckets):
        new_cost = np.full(n, np.iinfo(np.int64).max)
        for j in range(m, n):
            # the last bucket holds lengths[i..j] (i = m..j), the first m buckets lengths[0..i-1]
            candidates = cost[m - 1:j] + lengths[j] * (below[j + 1] - below[m:j + 1])
            best = int(np.argmin(candidates))
            new_cost[j], choice[m, j] = candidates[best], best + m
        cost = new_cost
    widths, j = [], n - 1
    for m in range(buckets - 1, -1, -1):
        widths.append(int(lengths[j]))
        j = choice[m, j] - 1
    return sorted(widths)


def batch_size_for(width: int, frame_seconds: float, max_batch_seconds: float, max_batch_size: int) -> int:
    """Most utterances of `width` padded frames that fit the duration cap (at least 1)."""
    return max(1, min(max_batch_size, int(max_batch_seconds // (width * frame_seconds))))


class BatchSampler:
    def __init__(self, frames: Sequence[int], *, frame_seconds: float, max_batch_seconds: float,
                 max_batch_size: int, num_buckets: int, width_multiple: int, seed: int,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.frames = np.asarray(frames, dtype=np.int64)
        self.widths = bucket_widths(self.frames, num_buckets, width_multiple)
        self.sizes = [batch_size_for(w, frame_seconds, max_batch_seconds, max_batch_size)
                      for w in self.widths]
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        # bucket of each utterance: the narrowest width that holds it
        self.bucket_of = np.searchsorted(self.widths, self.frames, side="left")

    @classmethod
    def from_config(cls, frames: Sequence[int], cfg, seed: int, shuffle: bool = True, rank: int = 0,
                    world_size: int = 1) -> "BatchSampler":
        """The sampler `ds2 train` uses for utterances of `frames` frames under config `cfg`."""
        train = cfg.train
        return cls(frames, frame_seconds=cfg.features.hop_length / cfg.features.sample_rate,
                   max_batch_seconds=train.max_batch_seconds, max_batch_size=train.max_batch_size,
                   num_buckets=train.num_buckets, width_multiple=time_stride(cfg.model),
                   seed=seed, shuffle=shuffle, rank=rank, world_size=world_size)

    def label_width_of(self, label_counts: Sequence[int]) -> Dict[int, int]:
        """{bucket width: label padding} for utterances with these label counts (see label_widths)."""
        return dict(zip(self.widths, label_widths(self.widths, self.frames, label_counts)))

    def _all_batches(self, epoch: int) -> List[Batch]:
        """Every rank's batches for this epoch, in training order."""
        rng = np.random.default_rng([self.seed, epoch])
        batches: List[Batch] = []
        carried: List[int] = []
        for bucket, (width, size) in enumerate(zip(self.widths, self.sizes)):
            members = np.flatnonzero(self.bucket_of == bucket)
            if self.shuffle:
                members = rng.permutation(members)
            pool = carried + members.tolist()
            full = len(pool) - len(pool) % size
            batches.extend(Batch(tuple(pool[i:i + size]), width) for i in range(0, full, size))
            carried = pool[full:]
        if carried:
            batches.append(Batch(tuple(carried), self.widths[-1]))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def epoch(self, epoch: int) -> List[Batch]:
        """This rank's batches for `epoch`. Ranks get disjoint batches and the same count."""
        batches = self._all_batches(epoch)
        per_rank = len(batches) // self.world_size
        if per_rank == 0:
            raise ValueError(f"{len(batches)} batches cannot be shared by {self.world_size} ranks")
        return batches[self.rank:per_rank * self.world_size:self.world_size]

    def __len__(self) -> int:
        """Batches per epoch for this rank (the same every epoch)."""
        return len(self.epoch(0))

    def shapes(self) -> List[Tuple[int, int]]:
        """Distinct (batch size, width) shapes an epoch can produce: one compile each."""
        return sorted({(len(b.indices), b.width) for b in self._all_batches(0)})


@dataclass
class PaddedBatch:
    """Model inputs for one Batch, as numpy arrays ready for ms.Tensor."""
    features: np.ndarray        # float32 [B, 1, n_bins, width], zero past each utterance's frames
    frames: np.ndarray          # int32 [B] true frame counts
    labels: np.ndarray          # int32 [B, label_width], blank (0) past each label_lengths[b]
    label_lengths: np.ndarray   # int32 [B] true label counts
    indices: Tuple[int, ...]    # the utterances in the rows, in order
    audio_seconds: float        # real (unpadded) audio in this batch
    # Utterances of the Batch left out because their data is bad: (index, why). Training skips a batch
    # with any (a smaller batch would be a new shape to compile); evaluation decodes the rest.
    left_out: Tuple[Tuple[int, str], ...] = ()


def pad_batch(indices: Sequence[int], width: int, features: Sequence[np.ndarray], labels: Sequence[Sequence[int]],
              n_bins: int, label_width: int, frame_seconds: float) -> PaddedBatch:
    """Stack utterances into fixed-shape arrays. `features[i]` is [n_bins, frames_i], frames_i <= width."""
    out = np.zeros((len(features), 1, n_bins, width), dtype=np.float32)
    frames = np.zeros(len(features), dtype=np.int32)
    out_labels = np.zeros((len(features), label_width), dtype=np.int32)
    label_lengths = np.zeros(len(features), dtype=np.int32)
    for row, (feats, label) in enumerate(zip(features, labels)):
        out[row, 0, :, :feats.shape[1]] = feats
        frames[row] = feats.shape[1]
        out_labels[row, :len(label)] = label
        label_lengths[row] = len(label)
    return PaddedBatch(out, frames, out_labels, label_lengths, tuple(indices), float(frames.sum()) * frame_seconds)


class Prefetcher:
    """Builds upcoming batches in a background thread so the training step does not wait on input.

    `load(batch) -> PaddedBatch` runs in the thread (feature-cache reads and numpy padding release
    the GIL for most of their time). Iterating yields PaddedBatches in order; an exception in the
    thread is re-raised in the consumer. `close()` stops the thread early.
    """

    _DONE = object()

    def __init__(self, batches: Sequence[Batch], load: Callable[[Batch], PaddedBatch], depth: int = 4):
        self._queue: "queue.Queue" = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(list(batches), load),
                                        name="ds2-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, batches: List[Batch], load: Callable[[Batch], PaddedBatch]) -> None:
        try:
            for batch in batches:
                if not self._put(load(batch)):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(exc)
            return
        self._put(self._DONE)

    def __iter__(self) -> Iterator[PaddedBatch]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def label_widths(widths: Sequence[int], frames: Sequence[int], label_counts: Sequence[int]) -> List[int]:
    """Label padding per bucket width: the longest label sequence of any utterance that fits it.

    Fixed per bucket (so the label shape never forces a recompile) and no wider than needed.
    """
    frames = np.asarray(frames)
    counts = np.asarray(label_counts)
    result = []
    for width in widths:
        fits = counts[frames <= width]
        result.append(int(fits.max()) if fits.size else 1)
    return result


def speed_fits(duration: float, labels: Sequence[int], width: int, factor: float, cfg) -> bool:
    """Whether an utterance of `duration` seconds played `factor` times as fast (ds2.augment.change_speed)
    still fits a batch `width` frames wide and leaves CTC enough output frames for its labels."""
    from ds2.text import min_ctc_frames

    samples = int(round(duration * cfg.features.sample_rate))
    frames = input_frames(speed_samples(samples, factor), cfg.features)
    return (frames < width and   # one frame to spare: a duration in seconds may round the sample count
            int(output_lengths(frames - 1, cfg.model)) >= min_ctc_frames(labels))


class UtteranceSet:
    """One split ready for batching: utterances, their label ids and frame counts, and features.

    Frame counts come from the manifest durations (exact for audio at the feature sample rate),
    so batches can be planned without reading any audio. For training, utterances CTC cannot
    align (fewer output frames than their labels need) are left out (drop_unalignable) and
    counted in `skipped_unalignable`; evaluation keeps and scores every utterance.
    """

    def __init__(self, utterances, cfg, feature_cache, drop_unalignable: bool = False):
        from ds2.text import encode, min_ctc_frames

        self.cfg = cfg
        self.cache = feature_cache
        self.frame_seconds = cfg.features.hop_length / cfg.features.sample_rate
        self.utterances, self.labels, self.frames = [], [], []
        self.skipped_unalignable = 0
        for utt in utterances:
            labels = encode(utt.text, cfg.model.labels)
            frames = duration_frames(utt.duration, cfg.features)
            if drop_unalignable and min_ctc_frames(labels) > int(output_lengths(frames, cfg.model)):
                self.skipped_unalignable += 1
                continue
            self.utterances.append(utt)
            self.labels.append(labels)
            self.frames.append(frames)
        if not self.utterances:
            raise UserError(f"none of the {len(utterances)} utterances has enough output frames for its "
                            f"transcript (CTC cannot align them); check the model's time strides")

    def __len__(self) -> int:
        return len(self.utterances)

    def sampler(self, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1) -> BatchSampler:
        """Batches of this set; with world_size > 1, worker `rank`'s shard of them."""
        return BatchSampler.from_config(self.frames, self.cfg, seed, shuffle, rank, world_size)

    def loader(self, sampler: BatchSampler, augmenter: Optional["Augmenter"] = None) -> Callable[..., PaddedBatch]:
        """A function (Batch, epoch=0) -> PaddedBatch for this set (runs in the Prefetcher thread).

        With an augmenter (training only), each utterance is augmented as ds2.augment draws it for that
        epoch; a speed change is drawn only when the result still fits the batch's width and the
        utterance's labels (speed_fits). An utterance whose audio cannot be read, or has more frames than
        its manifest duration said (so more than its bucket holds), is left out of the PaddedBatch and
        named in `left_out`.
        """
        from ds2.features import AudioError

        label_width = sampler.label_width_of([len(l) for l in self.labels])
        n_bins = self.cfg.features.n_bins

        def features_of(i: int, width: int, epoch: int) -> np.ndarray:
            path = self.utterances[i].audio_path
            if augmenter is None:
                return self.cache.features(path)
            return augmenter.features(path, self.cache.features, epoch, i, lambda factor: speed_fits(
                self.utterances[i].duration, self.labels[i], width, factor, self.cfg))

        def load(batch: Batch, epoch: int = 0) -> PaddedBatch:
            kept, features, left_out = [], [], []
            for i in batch.indices:
                utterance = self.utterances[i]
                try:
                    feats = features_of(i, batch.width, epoch)
                except AudioError as exc:
                    left_out.append((i, f"{utterance.id}: {exc}"))
                    continue
                if feats.shape[1] > batch.width:
                    left_out.append((i, f"{utterance.id}: its audio has {feats.shape[1]} frames, more than its "
                                        f"manifest duration {utterance.duration:.2f} s allows ({self.frames[i]}); "
                                        f"run ds2 preprocess again"))
                    continue
                kept.append(i)
                features.append(feats)
            padded = pad_batch(kept, batch.width, features, [self.labels[i] for i in kept], n_bins,
                               label_width[batch.width], self.frame_seconds)
            padded.left_out = tuple(left_out)
            return padded

        return load
