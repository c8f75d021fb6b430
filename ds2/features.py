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
import sys
import tokenize
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile

from ds2 import files
from ds2.config import FeatureConfig
from ds2.errors import DataError, UserError, first_line

# SciPy removed the alias 'hanning' (scipy#15881); the reference's eval config still uses it.
LEGACY_WINDOWS = {"hanning": "hann"}
# Floor for the per-utterance standard deviation, so digital silence does not divide by zero.
MIN_STD = 1e-5
# Bump when compute_features changes in a way the FeatureConfig does not describe,
# so cached features from the old code are not reused.
FEATURE_CODE_VERSION = 1
# scipy.signal.resample_poly through librosa: fast, deterministic, and needs no extra package.
RESAMPLE_TYPE = "polyphase"


class AudioError(DataError):
    """An audio file that cannot be used."""


class UnreadableAudioError(AudioError):
    """Missing, truncated, in a format libsndfile cannot decode, or holding samples that are not finite."""


class EmptyAudioError(AudioError):
    """Decodes, but holds no samples."""


# What to do about an audio file that cannot be used.
AUDIO_FIX = "replace or remove the file (and its manifest entry)"


def _audio_name(path) -> str:
    """How an error names the audio: its path, or for an open file its name (an upload has none)."""
    if hasattr(path, "read"):
        return str(getattr(path, "name", None) or path)
    return str(path)


def load_audio(path: Union[str, Path, BinaryIO], sample_rate: int) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at sample_rate (resampled if the file's rate differs). `path` may
    also be an open binary file (ds2 serve reads uploads from memory).

    Unreadable data is an AudioError: a file libsndfile cannot decode, no samples, or a sample that is
    not a finite number (float WAV and FLAC can hold NaN and infinity, which would make every feature
    and the loss NaN)."""
    name = _audio_name(path)
    try:
        audio, file_rate = soundfile.read(path if hasattr(path, "read") else str(path), dtype="float32",
                                          always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError, EOFError) as exc:  # LibsndfileError is a RuntimeError
        raise UnreadableAudioError(name, f"cannot decode it: {first_line(exc)}", AUDIO_FIX) from None
    if audio.ndim != 2 or audio.shape[0] == 0 or audio.shape[1] == 0:
        raise EmptyAudioError(name, "the audio has no samples", AUDIO_FIX)
    if file_rate <= 0:
        raise UnreadableAudioError(name, f"its sample rate is {file_rate} Hz", AUDIO_FIX)
    finite = np.isfinite(audio)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=1)))
        raise UnreadableAudioError(name, f"{int((~finite).sum())} samples are not finite numbers (NaN or infinity)",
                                   AUDIO_FIX, place=f"sample {first}")
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
        raise EmptyAudioError(None, f"expected a non-empty mono signal, got shape {audio.shape}", AUDIO_FIX)
    if audio.dtype.kind != "f":
        raise UnreadableAudioError(None, f"expected float samples, got {audio.dtype}", "load audio with load_audio")
    if not np.isfinite(audio).all():
        raise UnreadableAudioError(None, "samples that are not finite numbers (NaN or infinity)", AUDIO_FIX)
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
        self.damaged = 0   # entries found unreadable and recomputed

    def path_for(self, audio_path: Union[str, Path]) -> Path:
        audio_path = os.path.abspath(audio_path)
        try:
            stat = os.stat(audio_path)
        except OSError as exc:
            raise UnreadableAudioError(audio_path, f"cannot read it ({exc.strerror or exc})", AUDIO_FIX) from None
        identity = f"{audio_path}\0{stat.st_size}\0{stat.st_mtime_ns}"
        key = hashlib.sha256(identity.encode()).hexdigest()
        return self.directory / key[:2] / f"{key}.npy"

    def read_entry(self, cached: Path) -> np.ndarray:
        """The features stored at `cached`, or DataError when the entry is not features of this
        configuration: truncated, damaged, another shape or dtype, or values that are not finite. The .npy
        header is checked against the file's size before any array is allocated."""
        fix = "it is recomputed"
        n_bins = self.feature_cfg.n_bins
        try:
            with open(cached, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran_order, dtype = read_header(f)
                if dtype != np.float32 or len(shape) != 2 or shape[0] != n_bins or shape[1] == 0:
                    raise DataError(cached, f"holds a {dtype} array of shape {shape}, not float32 [{n_bins}, frames]", fix)
                expected = shape[0] * shape[1] * 4
                available = os.fstat(f.fileno()).st_size - f.tell()
                if available != expected:
                    raise DataError(cached, f"{available} bytes of data where the header says {expected}", fix)
                data = f.read(expected)
        # np.lib.format's errors for a damaged header: numpy 1.20 parses it with tokenize and ast
        except (ValueError, OSError, EOFError, TypeError, SyntaxError, tokenize.TokenError) as exc:
            raise DataError(cached, f"not a readable .npy file ({first_line(exc)})", fix) from None
        if len(data) != expected:
            raise DataError(cached, f"{len(data)} bytes of data where the header says {expected}", fix)   # shrank meanwhile
        flat = np.frombuffer(data, dtype=np.float32)
        features = np.array(flat.reshape(shape[::-1]).T if fortran_order else flat.reshape(shape), order="C")
        if not np.isfinite(features).all():
            raise DataError(cached, "holds values that are not finite numbers", fix)
        return features

    def features(self, audio_path: Union[str, Path]) -> np.ndarray:
        """Features of one audio file: from the cache, or computed and stored. A cache entry that cannot
        be read (a full disk, a damaged file) is counted in `damaged`, recomputed and replaced."""
        cached = self.path_for(audio_path)
        if cached.exists():
            try:
                features = self.read_entry(cached)
                self.hits += 1
                return features
            except DataError as exc:
                self.damaged += 1
                if self.damaged == 1:   # said once: a cache damaged by a full disk can hold thousands
                    print(f"ds2: {exc} (damaged feature cache entries are recomputed and counted)", file=sys.stderr)
        self.misses += 1
        features = compute_features(load_audio(audio_path, self.feature_cfg.sample_rate), self.feature_cfg)
        stored = io.BytesIO()
        np.save(stored, features)
        files.write_bytes(cached, stored.getvalue())
        return features
