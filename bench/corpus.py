"""The benchmarks' synthetic corpus: utterance durations shaped like LibriSpeech train-clean-100's,
their frame counts, and random labels at LibriSpeech's characters per second."""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from ds2.shapes import input_frames, output_lengths

TRAIN_CLEAN_100_HOURS = 100.6
CHARS_PER_SECOND = 15.0       # LibriSpeech transcripts: about 15 characters per second of speech
CORPUS_SIZE = 2000            # utterances in the benchmark corpus (the epoch plan's padding is over all)


def librispeech_like_durations(count: int, seed: int) -> np.ndarray:
    """Seconds per utterance, shaped like train-clean-100's: most between 11 and 17 s, a tail of
    short utterances down to 1 s, and a few long ones up to 35 s; mean about 12.7 s."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=count, p=[0.78, 0.20, 0.02])
    main = np.clip(rng.normal(14.0, 1.6, count), 10.0, 17.5)
    short = rng.uniform(1.0, 12.0, count)
    long = rng.uniform(17.5, 35.0, count)
    return np.round(np.choose(kind, [main, short, long]), 2)


def librispeech_like_corpus(cfg, seed: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, List[List[int]]]:
    """(durations in seconds, input frames, labels) of CORPUS_SIZE utterances; labels drawn from rng,
    at most half the model's output frames so that CTC can align them."""
    durations = librispeech_like_durations(CORPUS_SIZE, seed)
    frames = np.array([input_frames(int(d * cfg.features.sample_rate), cfg.features) for d in durations])
    label_counts = np.minimum(np.round(durations * CHARS_PER_SECOND).astype(int),
                              output_lengths(frames, cfg.model) // 2)
    labels = [rng.integers(1, len(cfg.model.labels), size=max(1, n)).tolist() for n in label_counts]
    return durations, frames, labels
