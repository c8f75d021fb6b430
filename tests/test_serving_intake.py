"""Audio intake: every format and layout the server reads becomes the features eval makes from the same
audio as a file; every bad upload gets its status and one line."""
import numpy as np
import pytest

from ds2.config import FeatureConfig
from ds2.features import FeatureCache
from ds2.serving.intake import IntakeError, upload_features

from .serving_helpers import encoded, tone

FEATURES = FeatureConfig()


def eval_features(tmp_path, data: bytes, suffix: str) -> np.ndarray:
    """What ds2 eval computes for the same bytes saved as a file (its feature cache's path)."""
    path = tmp_path / f"audio{suffix}"
    path.write_bytes(data)
    return FeatureCache(tmp_path / "cache", FEATURES).features(path)


@pytest.mark.parametrize("fmt, subtype, rate, channels, suffix", [
    ("WAV", "PCM_16", 16000, 1, ".wav"),
    ("WAV", "FLOAT", 44100, 2, ".wav"),       # resampled and mixed down
    ("FLAC", "PCM_24", 8000, 1, ".flac"),
    ("OGG", "VORBIS", 22050, 2, ".ogg"),
    ("OGG", "OPUS", 48000, 1, ".opus"),
    ("MP3", "MPEG_LAYER_III", 24000, 1, ".mp3"),
])
def test_uploads_get_eval_s_features(tmp_path, fmt, subtype, rate, channels, suffix):
    data = encoded(tone(1.5, rate, channels), rate, fmt, subtype)
    upload = upload_features(data, FEATURES, max_audio_seconds=60)
    assert upload.features.shape[0] == FEATURES.n_bins
    assert abs(upload.seconds - 1.5) < 0.1    # MP3 and Opus add a little encoder delay
    np.testing.assert_array_equal(upload.features, eval_features(tmp_path, data, suffix))


def status_of(data: bytes, max_audio_seconds: float = 60):
    with pytest.raises(IntakeError) as caught:
        upload_features(data, FEATURES, max_audio_seconds)
    error = caught.value
    assert "\n" not in error.message and "0x" not in error.message
    return error.status, error.code


def test_bad_uploads_get_their_status():
    wav = encoded(tone(2.0, 16000), 16000, "WAV")
    flac = encoded(tone(2.0, 16000), 16000, "FLAC")
    ogg = encoded(tone(2.0, 16000), 16000, "OGG", "VORBIS")
    assert status_of(b"") == (400, "empty_file")
    assert status_of(b"not audio at all") == (415, "unsupported_audio")
    assert status_of(b"\x1aE\xdf\xa3" + bytes(200)) == (415, "unsupported_audio")       # WebM's magic
    assert status_of(encoded(np.zeros(0, np.float32), 16000, "WAV")) == (400, "empty_audio")
    assert status_of(flac[:len(flac) // 3]) == (400, "unreadable_audio")                # FLAC cut short
    assert status_of(ogg[:len(ogg) // 3]) == (400, "unreadable_audio")
    assert status_of(wav, max_audio_seconds=1.5) == (413, "audio_too_long")
    with_nan = tone(2.0, 16000).astype(np.float32)
    with_nan[500] = np.nan
    assert status_of(encoded(with_nan, 16000, "WAV", "FLOAT")) == (400, "unreadable_audio")   # float WAV can hold NaN

