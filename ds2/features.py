"""Audio loading and the model's input features: log1p |STFT|, normalised per utterance.

Framing is centred: the signal is zero-padded by n_fft // 2 on both sides before framing, so frame
t is centred on sample t * hop_length. This is librosa's default (center=True), and therefore
what deepspeech.pytorch and the reference implementation use: features stay comparable with
theirs, every sample lands in a frame, audio shorter than one window still gives a frame, and
the frame count is 1 + num_samples // hop_length for an even n_fft (ds2.shapes.input_frames). The padding
is done here rather than by librosa so that the frame arithmetic is visible in one place.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile

from ds2 import files
from ds2.config import FeatureConfig
from ds2.errors import UserError, first_line

# SciPy removed the alias 'hanning' (scipy#15881); the reference's eval config still uses it.
LEGACY_WINDOWS = {"hanning": "hann"}
# Floor for the per-utterance standard deviation, so digital silence does not divide by zero.
MIN_STD = 1e-5
# Bump when compute_features changes in a way the FeatureConfig does not describe,
# so cached features from the old code are not reused.
FEATURE_CODE_VERSION = 1
# scipy.signal.resample_poly through librosa: fast, deterministic, and needs no extra package.
RESAMPLE_TYPE = "polyphase"


class AudioError(UserError):
    """An audio file that cannot be used."""


class UnreadableAudioError(AudioError):
    """Missing, truncated, or in a format libsndfile cannot decode."""


class EmptyAudioError(AudioError):
    """Decodes, but holds no samples."""


def load_audio(path: Union[str, Path, BinaryIO], sample_rate: int) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at sample_rate (resampled if the file's rate differs). `path` may
    also be an open binary file (ds2 serve reads uploads from memory)."""
    try:
        audio, file_rate = soundfile.read(path if hasattr(path, "read") else str(path), dtype="float32",
                                          always_2d=True)
    except (RuntimeError, OSError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        raise UnreadableAudioError(f"cannot read audio {path}: {exc}") from exc
    if audio.shape[0] == 0:
        raise EmptyAudioError(f"audio file has no samples: {path}")
    audio = audio.mean(axis=1)
    if file_rate != sample_rate:
        import librosa  # slow to import (numba); only needed when resampling

        audio = librosa.resample(audio, orig_sr=file_rate, target_sr=sample_rate, res_type=RESAMPLE_TYPE)
    return np.ascontiguousarray(audio, dtype=np.float32)


def resolve_window(name: str) -> str:
    """Window name SciPy accepts; legacy aliases are mapped with a warning."""
    if name in LEGACY_WINDOWS:
        warnings.warn(f"feature window {name!r} is a legacy alias that SciPy removed; "
                      f"using {LEGACY_WINDOWS[name]!r}", UserWarning, stacklevel=2)
        return LEGACY_WINDOWS[name]
    return name


def check_window(feature_cfg: FeatureConfig) -> None:
    """UserError unless SciPy knows features.window: said once, before any audio is read."""
    from scipy.signal import get_window

    try:
        get_window(resolve_window(feature_cfg.window), feature_cfg.win_length)
    except (ValueError, TypeError) as exc:
        raise UserError(f"features.window={feature_cfg.window!r} is not a window SciPy knows ({first_line(exc)}); "
                        f"use hann (the default), hamming, blackman, ...") from None


def compute_features(audio: np.ndarray, feature_cfg: FeatureConfig) -> np.ndarray:
    """float32 [n_bins, frames]: log(1 + |STFT|), mean/std normalised over the utterance if enabled."""
    import librosa

    if audio.ndim != 1 or audio.size == 0:
        raise EmptyAudioError(f"expected a non-empty mono signal, got shape {audio.shape}")
    padded = np.pad(audio.astype(np.float32, copy=False), feature_cfg.n_fft // 2)  # zeros: centred frames
    stft = librosa.stft(padded, n_fft=feature_cfg.n_fft, hop_length=feature_cfg.hop_length,
                        win_length=feature_cfg.win_length, window=resolve_window(feature_cfg.window), center=False)
    spectrogram = np.log1p(np.abs(stft))
    if feature_cfg.normalize:
        # One mean and one std for the whole utterance, as deepspeech.pytorch and the reference do.
        spectrogram = (spectrogram - spectrogram.mean()) / max(float(spectrogram.std()), MIN_STD)
    return spectrogram.astype(np.float32)


class FeatureCache:
    """Features stored as .npy files so later epochs read instead of recomputing.

    Layout: <cache_dir>/<config hash>/<xx>/<utterance hash>.npy. The config hash covers the feature
    config and FEATURE_CODE_VERSION; the utterance hash covers the audio's absolute path, size and
    modification time, so an edited file is recomputed. Files are written to a temporary name and
    renamed into place, so concurrent writers (data-loader workers, two runs) never expose a
    partial file; the last rename wins and both wrote the same content.
    """

    def __init__(self, cache_dir: Union[str, Path], feature_cfg: FeatureConfig):
        check_window(feature_cfg)
        self.feature_cfg = feature_cfg
        config_text = json.dumps({"config": dataclasses.asdict(feature_cfg),
                                  "code_version": FEATURE_CODE_VERSION}, sort_keys=True)
        config_hash = hashlib.sha256(config_text.encode()).hexdigest()[:16]
        self.directory = Path(cache_dir) / config_hash
        self.hits = 0
        self.misses = 0

    def path_for(self, audio_path: Union[str, Path]) -> Path:
        audio_path = os.path.abspath(audio_path)
        try:
            stat = os.stat(audio_path)
        except OSError as exc:
            raise UnreadableAudioError(f"cannot read audio {audio_path}: {exc}") from exc
        identity = f"{audio_path}\0{stat.st_size}\0{stat.st_mtime_ns}"
        key = hashlib.sha256(identity.encode()).hexdigest()
        return self.directory / key[:2] / f"{key}.npy"

    def features(self, audio_path: Union[str, Path]) -> np.ndarray:
        """Features of one audio file: from the cache, or computed and stored."""
        cached = self.path_for(audio_path)
        if cached.exists():
            try:
                features = np.load(cached)
                self.hits += 1
                return features
            except (ValueError, OSError, EOFError):
                pass  # unreadable cache entry (e.g. disk was full): recompute and replace it
        self.misses += 1
        features = compute_features(load_audio(audio_path, self.feature_cfg.sample_rate), self.feature_cfg)
        stored = io.BytesIO()
        np.save(stored, features)
        files.write_bytes(cached, stored.getvalue())
        return features
