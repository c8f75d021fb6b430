"""Audio a client uploads, made into the model's input features exactly as `ds2 eval` makes them from
files (ds2.features: the same decoding, resampling, mix-down and spectrogram), with each way an upload
can be wrong answered by its own HTTP status:

    400  empty, damaged (a known format that cannot be decoded), or no samples
    413  audio longer than the server's limit (told before decoding, from the file's header)
    415  not audio that libsndfile reads: WAV, FLAC, OGG (Vorbis, Opus) and MP3 are; WebM, AAC, video are not

(Uploads larger than the byte limit never get here: ds2.serving.app stops reading them at the limit.)
"""
from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
import soundfile

from ds2.config import FeatureConfig
from ds2.errors import DataError, first_line
from ds2.features import EmptyAudioError, UnreadableAudioError, compute_features, load_audio

READABLE = "WAV, FLAC, OGG or MP3"
# libsndfile's error codes for a file it does not know how to read (SF_ERR_UNRECOGNISED_FORMAT,
# SF_ERR_UNSUPPORTED_ENCODING); its other errors are about files of a known format that are damaged.
NOT_READABLE_FORMAT = (1, 4)


class IntakeError(Exception):
    """An upload the server cannot transcribe: the HTTP status, and one line for the client."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class Upload(io.BytesIO):
    """An upload's bytes as the file ds2.features reads; its messages name it "the uploaded file"."""

    def __str__(self) -> str:
        return "the uploaded file"


class Features(NamedTuple):
    features: np.ndarray    # float32 [n_bins, frames]
    seconds: float          # audio duration


def reason(exc: BaseException) -> str:
    """libsndfile's own words, without what precedes them ("Error opening <file>: ", "cannot decode it: "),
    or what a DataError says is wrong."""
    problem = exc.problem if isinstance(exc, DataError) else first_line(exc)
    return problem.rsplit(": ", 1)[-1]


def upload_features(data: bytes, feature_cfg: FeatureConfig, max_audio_seconds: float) -> Features:
    """The model's features of an uploaded file's bytes, or IntakeError."""
    if not data:
        raise IntakeError(400, "the uploaded file is empty", "empty_file")
    try:
        info = soundfile.info(Upload(data))
    except (RuntimeError, OSError, ValueError, TypeError) as exc:  # LibsndfileError is a RuntimeError
        if getattr(exc, "code", None) in NOT_READABLE_FORMAT:
            raise IntakeError(415, f"the file is not audio this server can read ({READABLE}): {reason(exc)}",
                              "unsupported_audio") from None
        raise IntakeError(400, f"the audio file is damaged: {reason(exc)}", "unreadable_audio") from None
    if info.samplerate > 0 and info.frames / info.samplerate > max_audio_seconds:
        raise IntakeError(413, f"the audio lasts {info.frames / info.samplerate:.1f} s, longer than the "
                               f"{max_audio_seconds:g} s this server accepts", "audio_too_long")
    try:
        audio = load_audio(Upload(data), feature_cfg.sample_rate)
    except EmptyAudioError:
        raise IntakeError(400, "the audio has no samples", "empty_audio") from None
    except UnreadableAudioError as exc:
        raise IntakeError(400, f"the audio cannot be decoded: {reason(exc)}", "unreadable_audio") from None
    seconds = len(audio) / feature_cfg.sample_rate
    if seconds > max_audio_seconds:    # the header understated the length (MP3's is an estimate)
        raise IntakeError(413, f"the audio lasts {seconds:.1f} s, longer than the {max_audio_seconds:g} s "
                               f"this server accepts", "audio_too_long")
    return Features(compute_features(audio, feature_cfg), seconds)


def warm_up(feature_cfg: FeatureConfig) -> None:
    """Run the intake once on a short file at another sample rate, so the first request does not pay for
    importing and compiling what decoding, resampling and the spectrogram use (seconds: librosa, numba)."""
    rate = feature_cfg.sample_rate // 2 or 1
    samples = (0.1 * np.sin(np.arange(rate) * 0.05)).astype(np.float32)
    upload = io.BytesIO()
    soundfile.write(upload, samples, rate, format="WAV")
    upload_features(upload.getvalue(), feature_cfg, max_audio_seconds=10.0)
