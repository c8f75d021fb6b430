import dataclasses
import os
import threading

import numpy as np
import pytest
import soundfile

from ds2.config import FeatureConfig
from ds2.errors import DataError
from ds2.features import (EmptyAudioError, FeatureCache, UnreadableAudioError, compute_features,
                          load_audio)
from ds2.shapes import input_frames


def noise(num_samples, seed=0):
    return (np.random.RandomState(seed).randn(num_samples) * 0.1).astype(np.float32)


@pytest.mark.parametrize("num_samples", [1, 159, 160, 161, 320, 4000, 16000, 16001])
def test_shape_matches_input_frames(num_samples):
    cfg = FeatureConfig()
    features = compute_features(noise(num_samples), cfg)
    assert features.dtype == np.float32
    assert features.shape == (cfg.n_bins, input_frames(num_samples, cfg)) == (161, 1 + num_samples // 160)


def test_matches_a_hand_written_stft():
    """Frame t covers samples [t*hop - n_fft/2, t*hop + n_fft/2) of the zero-padded signal, periodic Hann."""
    cfg = FeatureConfig(normalize=False)
    audio = noise(1000)
    padded = np.concatenate([np.zeros(cfg.n_fft // 2), audio, np.zeros(cfg.n_fft // 2)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(cfg.n_fft) / cfg.n_fft)
    expected = np.stack([np.log1p(np.abs(np.fft.rfft(padded[t * cfg.hop_length:t * cfg.hop_length + cfg.n_fft] * window)))
                         for t in range(input_frames(audio.size, cfg))], axis=1)
    np.testing.assert_allclose(compute_features(audio, cfg), expected, atol=1e-4)


def test_normalisation_gives_zero_mean_unit_std():
    features = compute_features(noise(8000) + 0.3, FeatureConfig(normalize=True))
    assert abs(features.mean()) < 1e-4 and abs(features.std() - 1) < 1e-3


def test_silence_does_not_divide_by_zero():
    assert np.isfinite(compute_features(np.zeros(4000, np.float32), FeatureConfig())).all()


def test_legacy_hanning_warns_and_equals_hann():
    audio = noise(4000)
    with pytest.warns(UserWarning, match="hanning"):
        legacy = compute_features(audio, FeatureConfig(window="hanning"))
    np.testing.assert_array_equal(legacy, compute_features(audio, FeatureConfig(window="hann")))


def test_empty_signal_is_refused():
    with pytest.raises(EmptyAudioError):
        compute_features(np.zeros(0, np.float32), FeatureConfig())


def test_load_audio_mixes_down_and_resamples(tmp_path):
    stereo = np.stack([noise(8000, 1), noise(8000, 2)], axis=1)
    soundfile.write(tmp_path / "a.wav", stereo, 8000, subtype="FLOAT")
    audio = load_audio(tmp_path / "a.wav", 8000)
    np.testing.assert_allclose(audio, stereo.mean(axis=1), atol=1e-6)
    resampled = load_audio(tmp_path / "a.wav", 16000)
    assert resampled.dtype == np.float32 and resampled.shape == (16000,)


def test_load_audio_errors(tmp_path):
    with pytest.raises(UnreadableAudioError):
        load_audio(tmp_path / "missing.flac", 16000)
    (tmp_path / "garbage.flac").write_bytes(b"not audio at all" * 10)
    with pytest.raises(UnreadableAudioError):
        load_audio(tmp_path / "garbage.flac", 16000)
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(EmptyAudioError):
        load_audio(tmp_path / "empty.wav", 16000)


def _not_audio_files(tmp_path):
    """A FIFO (opening it would wait for a writer forever), a directory, a symlink loop and a dangling link."""
    os.mkfifo(tmp_path / "fifo.wav")
    (tmp_path / "folder.wav").mkdir()
    os.symlink(tmp_path / "loop-b.wav", tmp_path / "loop-a.wav")
    os.symlink(tmp_path / "loop-a.wav", tmp_path / "loop-b.wav")
    os.symlink(tmp_path / "missing.wav", tmp_path / "dangling.wav")
    return {"fifo.wav": "a FIFO", "folder.wav": "a directory", "loop-a.wav": "symbolic links",
            "dangling.wav": "No such file"}


def test_a_path_that_is_no_regular_file_is_unreadable_audio_at_once(tmp_path):
    from ds2.data.manifest import audio_duration

    for name, said in _not_audio_files(tmp_path).items():
        for read in (lambda path: load_audio(path, 16000), audio_duration):
            with pytest.raises(UnreadableAudioError, match=said) as error:
                read(tmp_path / name)
            assert str(tmp_path / name) in str(error.value) and "\n" not in str(error.value)


def test_cache_reuses_and_invalidates(tmp_path):
    audio_path = tmp_path / "a.wav"
    soundfile.write(audio_path, noise(4000), 16000)
    cache = FeatureCache(tmp_path / "cache", FeatureConfig())
    first = cache.features(audio_path)
    second = cache.features(audio_path)
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, compute_features(load_audio(audio_path, 16000), FeatureConfig()))

    soundfile.write(audio_path, noise(4800, seed=3), 16000)  # new content: new size and mtime
    assert cache.features(audio_path).shape[1] == input_frames(4800, FeatureConfig())
    assert cache.misses == 2

    other_config = FeatureCache(tmp_path / "cache", dataclasses.replace(FeatureConfig(), normalize=False))
    other_config.features(audio_path)
    assert other_config.misses == 1  # a different feature config never reads these entries


def test_cache_replaces_a_corrupt_entry(tmp_path, capsys):
    audio_path = tmp_path / "a.wav"
    soundfile.write(audio_path, noise(4000), 16000)
    cache = FeatureCache(tmp_path / "cache", FeatureConfig())
    good = cache.features(audio_path)
    cache.path_for(audio_path).write_bytes(b"truncated")
    np.testing.assert_array_equal(cache.features(audio_path), good)
    assert cache.misses == 2 and cache.damaged == 1
    assert "not a readable .npy file (" in capsys.readouterr().err
    np.save(cache.path_for(audio_path), np.full_like(good, np.nan))   # loads, but is not features
    np.testing.assert_array_equal(cache.features(audio_path), good)
    assert cache.misses == 3 and cache.damaged == 2
    entry = cache.path_for(audio_path).read_bytes()
    header_end = entry.index(b"}")
    # A header cut inside its dict (numpy 1.20 raises tokenize.TokenError), a header claiming far more
    # frames than the file holds: both recomputed, neither allocates what the header claims.
    for damaged in (entry[:header_end - 3] + b"\n" + entry[header_end + 1:],
                    entry.replace(b"%d)" % good.shape[1], b"%d)" % (10 ** 12), 1)):
        cache.path_for(audio_path).write_bytes(damaged)
        with pytest.raises(DataError):
            cache.read_entry(cache.path_for(audio_path))
        np.testing.assert_array_equal(cache.features(audio_path), good)
    assert cache.damaged == 4 and cache.features(audio_path).flags.writeable


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_are_unreadable_audio_from_a_path_or_an_open_file(tmp_path, bad):
    samples = noise(4000).astype(np.float32)
    samples[1234] = bad
    path = tmp_path / "float.wav"
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    with pytest.raises(UnreadableAudioError, match=r"float.wav \(sample 1234\): 1 samples are not finite numbers"):
        load_audio(path, 16000)
    with open(path, "rb") as f, pytest.raises(UnreadableAudioError, match="not finite"):
        load_audio(f, 16000)
    with pytest.raises(UnreadableAudioError, match="not finite"):
        compute_features(samples, FeatureConfig())


def test_cache_concurrent_writers_leave_one_complete_file(tmp_path):
    audio_path = tmp_path / "a.wav"
    soundfile.write(audio_path, noise(16000), 16000)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        FeatureCache(tmp_path / "cache", FeatureConfig()).features(audio_path))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    files = [f for _, _, names in os.walk(tmp_path / "cache") for f in names]
    assert len(files) == 1 and files[0].endswith(".npy") and not files[0].startswith(".tmp")


def test_a_flac_header_claiming_billions_of_frames_reads_only_what_the_file_holds(tmp_path):
    """STREAMINFO's total-samples field is only a claim: a damaged one asked for 32 GiB before any decoding."""
    path = tmp_path / "claims.flac"
    samples = (0.1 * np.sin(np.arange(8000) / 7.0)).astype(np.float32)
    soundfile.write(path, samples, 16000, format="FLAC", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    data[21] |= 0x02            # the top bits of the 36-bit total-samples count: 2^33 frames more
    path.write_bytes(bytes(data))
    with soundfile.SoundFile(str(path)) as claimed:
        assert claimed.frames > 2 ** 33
    try:
        audio = load_audio(path, 16000)
    except UnreadableAudioError:
        return                  # refusing it is as good as reading it; allocating the claim is not
    assert len(audio) <= 8000


def test_a_sample_rate_no_speech_recording_has_is_unreadable_audio(tmp_path):
    path = tmp_path / "one-hertz.wav"
    soundfile.write(path, np.zeros(1000, dtype=np.float32), 1, format="WAV", subtype="PCM_16")
    with pytest.raises(UnreadableAudioError, match="sample rate is 1 Hz"):
        load_audio(path, 16000)
