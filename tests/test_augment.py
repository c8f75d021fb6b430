"""ds2.augment: the signal operations, the noises, and the Augmenter's determinism and cheap path."""
import dataclasses

import numpy as np
import pytest
import soundfile

from ds2.augment import (Augmenter, apply_masks, babble, change_speed, coloured_noise, fit_length, hum_noise,
                         make_augmenter, mix_at_snr, signal_to_noise_db, speed_samples, unit_rms)
from ds2.config import AugmentConfig, FeatureConfig
from ds2.errors import UserError
from ds2.features import FeatureCache

RATE = 16000


def tone(seconds=1.0, frequency=440.0):
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def write(path, audio):
    soundfile.write(str(path), audio, RATE, format="FLAC", subtype="PCM_16")
    return str(path)


def spectrum_slope(noise):
    """Least-squares slope of log power over log frequency (white 0, pink -1, brown -2)."""
    power = np.abs(np.fft.rfft(noise)) ** 2
    frequency = np.fft.rfftfreq(len(noise))
    band = (frequency > 0.001) & (frequency < 0.4)
    return np.polyfit(np.log(frequency[band]), np.log(power[band]), 1)[0]


@pytest.mark.parametrize("kind, slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_coloured_noise_has_its_spectrum_and_unit_rms(kind, slope):
    noise = coloured_noise(kind, 2 * RATE, np.random.default_rng(0))
    assert noise.dtype == np.float32 and noise.shape == (2 * RATE,)
    assert np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)
    assert spectrum_slope(noise) == pytest.approx(slope, abs=0.2)


def test_hum_and_babble_are_unit_rms_and_deterministic():
    hum = hum_noise(RATE, RATE, np.random.default_rng(3))
    assert np.array_equal(hum, hum_noise(RATE, RATE, np.random.default_rng(3)))
    assert not np.array_equal(hum, hum_noise(RATE, RATE, np.random.default_rng(4)))
    mixed = babble([tone(0.5, 200), tone(0.7, 300)], RATE, np.random.default_rng(0))
    for noise in (hum, mixed):
        assert np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("snr_db", [0.0, 7.5, 20.0])
def test_mix_at_snr_gives_that_ratio(snr_db):
    speech = tone()
    noise = coloured_noise("pink", len(speech), np.random.default_rng(1))
    mixed = mix_at_snr(speech, noise, snr_db)
    assert signal_to_noise_db(speech, mixed - speech) == pytest.approx(snr_db, abs=0.01)


def test_silence_gets_no_noise():
    silence = np.zeros(100, dtype=np.float32)
    assert np.array_equal(mix_at_snr(silence, np.ones(100), 0.0), silence)


def test_fit_length_repeats_and_crops_from_the_offset():
    noise = np.arange(4, dtype=np.float32)
    assert fit_length(noise, 6, 3).tolist() == [3, 0, 1, 2, 3, 0]
    assert fit_length(noise, 2, 1).tolist() == [1, 2]


@pytest.mark.parametrize("factor", [0.9, 1.1, 0.5, 2.0])
def test_change_speed_length_matches_speed_samples(factor):
    audio = tone(0.3)
    changed = change_speed(audio, factor)
    assert len(changed) == speed_samples(len(audio), factor)
    assert len(changed) == pytest.approx(len(audio) / factor, abs=1)


def test_change_speed_one_is_identity():
    audio = tone(0.1)
    assert change_speed(audio, 1.0) is audio


def test_masks_stay_within_bounds_and_width():
    for seed in range(50):
        features = np.ones((40, 30), dtype=np.float32)
        apply_masks(features, np.random.default_rng(seed), masks=1, max_width=7, axis=0)
        rows = np.flatnonzero(features[:, 0] == 0)
        assert features.shape == (40, 30)
        assert len(rows) <= 7 and (len(rows) == 0 or rows[-1] - rows[0] + 1 == len(rows))
        assert ((features == 0).all(axis=1) | (features == 1).all(axis=1)).all()   # whole rows masked
    narrow = np.ones((5, 3), dtype=np.float32)
    apply_masks(narrow, np.random.default_rng(0), masks=3, max_width=100, axis=1)   # wider than the axis
    assert narrow.shape == (5, 3)


def cfg(**changes):
    return dataclasses.replace(AugmentConfig(enabled=True), **changes)


OFF = dict(freq_masks=0, time_masks=0, speed_factors=[1.0], gain_db=(0.0, 0.0), noise_probability=0.0)


@pytest.fixture
def utterance(tmp_path):
    return write(tmp_path / "utt.flac", tone(1.0) + 0.01 * coloured_noise("white", RATE, np.random.default_rng(0)))


@pytest.fixture
def noise_dir(tmp_path):
    directory = tmp_path / "noise"
    directory.mkdir()
    write(directory / "a.flac", 0.1 * coloured_noise("pink", RATE, np.random.default_rng(5)))
    write(directory / "b.wav", 0.1 * coloured_noise("brown", RATE // 2, np.random.default_rng(6)))
    (directory / "notes.txt").write_text("not audio")
    return directory


def fits_always(factor):
    return True


def test_neutral_settings_are_the_identity(tmp_path, utterance):
    cache = FeatureCache(tmp_path / "cache", FeatureConfig())
    augmenter = Augmenter(cfg(**OFF), FeatureConfig(), seed=1)
    out = augmenter.features(utterance, cache.features, epoch=3, index=7, speed_fits=fits_always)
    assert np.array_equal(out, cache.features(utterance))


def test_disabled_makes_no_augmenter(tmp_path):
    assert make_augmenter(AugmentConfig(enabled=False), FeatureConfig(), 1, tmp_path / "none") is None


def test_masks_alone_read_the_cache_and_leave_it_unchanged(tmp_path, utterance):
    cache = FeatureCache(tmp_path / "cache", FeatureConfig())
    before = cache.features(utterance).copy()
    augmenter = Augmenter(cfg(**dict(OFF, freq_masks=2, time_masks=2)), FeatureConfig(), seed=1)
    misses = cache.misses
    out = augmenter.features(utterance, cache.features, epoch=0, index=0, speed_fits=fits_always)
    assert cache.misses == misses and out.shape == before.shape
    assert (out == 0).any() and np.array_equal(cache.features(utterance), before)


def test_same_seed_epoch_and_index_give_the_same_features(tmp_path, utterance, noise_dir):
    cache = FeatureCache(tmp_path / "cache", FeatureConfig())
    settings = cfg(noise_probability=1.0, noise_dir=str(noise_dir))

    def run(seed, epoch, index):
        augmenter = make_augmenter(settings, FeatureConfig(), seed, tmp_path / "unused")
        return augmenter.features(utterance, cache.features, epoch, index, fits_always)

    first = run(1, 2, 5)
    assert np.array_equal(first, run(1, 2, 5))
    for other in (run(2, 2, 5), run(1, 3, 5), run(1, 2, 6)):
        assert not np.array_equal(first, other)


def test_speed_changes_the_frame_count_only_when_it_fits(tmp_path, utterance):
    cache = FeatureCache(tmp_path / "cache", FeatureConfig())
    frames = cache.features(utterance).shape[1]
    slow = Augmenter(cfg(**dict(OFF, speed_factors=[0.5])), FeatureConfig(), seed=1)
    assert slow.features(utterance, cache.features, 0, 0, fits_always).shape[1] == pytest.approx(2 * frames, abs=2)
    assert slow.features(utterance, cache.features, 0, 0, lambda factor: False).shape[1] == frames


def test_noise_needs_files(tmp_path):
    with pytest.raises(UserError, match="noise files"):
        make_augmenter(cfg(noise_probability=0.5), FeatureConfig(), 1, tmp_path / "missing")
    assert make_augmenter(cfg(noise_probability=0.0), FeatureConfig(), 1, tmp_path / "missing") is not None


def test_noise_folder_lists_audio_files_only(noise_dir, tmp_path):
    augmenter = make_augmenter(cfg(noise_dir=str(noise_dir)), FeatureConfig(), 1, tmp_path / "unused")
    assert [p.rsplit("/", 1)[1] for p in augmenter.noise_paths] == ["a.flac", "b.wav"]


def test_unit_rms_leaves_silence_alone():
    assert np.array_equal(unit_rms(np.zeros(3)), np.zeros(3))


def training_set(tmp_path, *overrides):
    from ds2.config import load_config
    from ds2.data.sets import load_sets
    from tests.helpers import tiny_overrides, write_tone_corpus

    manifests = write_tone_corpus(tmp_path / "corpus")
    args = tiny_overrides(tmp_path / "run", tmp_path / "data", manifests) + [a for o in overrides for a in ("--set", o)]
    cfg = load_config("small", overrides=args[1::2])
    return cfg, load_sets(cfg, ["train"], drop_unalignable=True)["train"]


def test_loader_augments_the_same_way_whenever_a_batch_is_loaded_again(tmp_path, noise_dir):
    cfg, train = training_set(tmp_path, "augment.enabled=true", "augment.speed_factors=0.8,1.0,1.25",
                              "augment.noise_probability=0.7", f"augment.noise_dir={noise_dir}")
    sampler = train.sampler(seed=1, shuffle=True)
    plain = train.loader(sampler)
    augmented = train.loader(sampler, make_augmenter(cfg.augment, cfg.features, 1, tmp_path / "unused"))
    again = train.loader(sampler, make_augmenter(cfg.augment, cfg.features, 1, tmp_path / "unused"))
    slowed = 0
    for batch in sampler.epoch(1):
        clean, noisy = plain(batch, epoch=1), augmented(batch, epoch=1)
        assert not noisy.left_out and noisy.features.shape == clean.features.shape   # the bucket's shape kept
        assert np.array_equal(noisy.features, again(batch, epoch=1).features)          # a resumed run's batch
        assert not np.array_equal(noisy.features, augmented(batch, epoch=2).features)  # another epoch's draw
        assert np.array_equal(noisy.labels, clean.labels)
        slowed += int((noisy.frames > clean.frames).sum())
    assert slowed > 0   # some utterances were slowed down, within their bucket's width


def test_loader_without_augmenter_reads_the_features_unchanged(tmp_path):
    _, train = training_set(tmp_path)
    sampler = train.sampler(seed=1, shuffle=False)
    batch = sampler.epoch(0)[0]
    padded = train.loader(sampler)(batch, epoch=5)
    first = train.utterances[batch.indices[0]].audio_path
    assert np.array_equal(padded.features[0, 0, :, :padded.frames[0]], train.cache.features(first))
