"""Log-probabilities with a known best path, and audio files in every format the server reads, for the
serving tests."""
import io
from typing import List, Sequence, Tuple

import numpy as np
import soundfile

from ds2.config import DEFAULT_LABELS

LABELS = DEFAULT_LABELS
BLANK = 0


def path_log_probs(path: Sequence[int], labels: str = LABELS, confidence: float = 6.0) -> np.ndarray:
    """[frames, labels] log-probabilities whose most likely label at frame t is path[t] (by `confidence`
    nats of logit)."""
    logits = np.zeros((len(path), len(labels)), np.float32)
    logits[np.arange(len(path)), list(path)] = confidence
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def spelled(text: str, frames_per_label: int = 2, gap: int = 1, lead: int = 3, labels: str = LABELS
            ) -> Tuple[List[int], List[Tuple[int, int]]]:
    """A CTC path that spells text: `lead` blank frames, then each character on frames_per_label frames
    followed by `gap` blanks. Returns (path, (first, last) frame of each character)."""
    path, spans = [BLANK] * lead, []
    for char in text:
        start = len(path)
        path += [labels.index(char)] * frames_per_label
        spans.append((start, len(path) - 1))
        path += [BLANK] * gap
    return path + [BLANK] * lead, spans


def tone(seconds: float, rate: int, channels: int = 1, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def encoded(audio: np.ndarray, rate: int, fmt: str, subtype: str = None) -> bytes:
    """audio as the bytes of a file in fmt (WAV, FLAC, OGG, MP3), written by libsndfile."""
    out = io.BytesIO()
    soundfile.write(out, audio, rate, format=fmt, subtype=subtype)
    return out.getvalue()
