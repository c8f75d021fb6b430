"""Training-data augmentation: speed, additive noise and gain on the waveform, SpecAugment masks on
the features; and the noises themselves (coloured, babble, machine hum) for the noise sets made offline.

`Augmenter.features` gives one training utterance's features for one epoch. Every random choice comes
from a generator seeded by (train.seed, epoch, utterance index), so the same utterance in the same
epoch is augmented the same way however batches are cut, prefetched or resumed. Utterances left with
their waveform unchanged (speed 1, no noise, 0 dB gain) read the feature cache; the masks apply to
cached features too, so SpecAugment alone costs no audio decoding.

Dev and test are never augmented: only `ds2 train` builds an Augmenter, for its training set.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from ds2.config import AugmentConfig, FeatureConfig
from ds2.errors import UserError

NOISE_SUFFIXES = (".wav", ".flac", ".ogg")
# Noise kinds: the training noise set is made of the first four; test-noisy of HELD_OUT_NOISE alone,
# so the noisy test measures noise the model never trained on.
COLOURED_NOISES = ("white", "pink", "brown")
BABBLE = "babble"
HELD_OUT_NOISE = "hum"
# Amplitude spectrum exponent: power falls as 1/f^(2 * exponent) (pink 1/f, brown 1/f^2).
SPECTRAL_EXPONENT = {"white": 0.0, "pink": 0.5, "brown": 1.0}
# Speed factors are resampling ratios p/q with q at most this.
SPEED_DENOMINATOR = 20


def unit_rms(signal: np.ndarray) -> np.ndarray:
    """signal scaled to a root mean square of 1 (all-zero signals are returned as they are)."""
    rms = math.sqrt(float(np.mean(np.square(signal, dtype=np.float64))))
    return (signal / rms if rms > 0 else signal).astype(np.float32)


def coloured_noise(kind: str, samples: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise of unit RMS: white Gaussian noise shaped in the frequency domain."""
    white = rng.standard_normal(samples)
    exponent = SPECTRAL_EXPONENT[kind]
    if exponent == 0:
        return unit_rms(white)
    spectrum = np.fft.rfft(white)
    frequency = np.fft.rfftfreq(samples)
    frequency[0] = frequency[1] if samples > 2 else 1.0  # no infinite gain at DC
    return unit_rms(np.fft.irfft(spectrum / frequency ** exponent, n=samples))


def hum_noise(samples: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Machine noise of unit RMS: a mains-like hum (a fundamental of 50-120 Hz and its harmonics) over
    broadband noise whose loudness swells 2-8 times a second. Not in the training noise set."""
    t = np.arange(samples) / sample_rate
    fundamental = rng.uniform(50.0, 120.0)
    hum = np.zeros(samples)
    for harmonic in range(1, 9):
        if fundamental * harmonic < sample_rate / 2:
            hum += rng.uniform(0.2, 1.0) / harmonic * np.sin(2 * np.pi * fundamental * harmonic * t
                                                             + rng.uniform(0, 2 * np.pi))
    swell = 1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(2.0, 8.0) * t + rng.uniform(0, 2 * np.pi))
    broadband = swell * coloured_noise("pink", samples, rng)
    return unit_rms(unit_rms(hum) + rng.uniform(0.5, 1.5) * broadband)


def fit_length(noise: np.ndarray, length: int, offset: int) -> np.ndarray:
    """`length` samples of noise from `offset` on, repeating the noise when it is shorter."""
    return np.take(noise, (offset + np.arange(length)) % len(noise)).astype(np.float32)


def babble(speech: Sequence[np.ndarray], samples: int, rng: np.random.Generator) -> np.ndarray:
    """Several talkers at once, of unit RMS: the utterances `speech`, each at unit RMS from a random
    offset (repeated to fill `samples`), summed."""
    mixed = np.zeros(samples, dtype=np.float32)
    for utterance in speech:
        mixed += fit_length(unit_rms(utterance), samples, int(rng.integers(len(utterance))))
    return unit_rms(mixed)


def signal_to_noise_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """10 log10 of the signal's mean power over the noise's."""
    return 10 * math.log10(float(np.mean(np.square(signal, dtype=np.float64)))
                           / float(np.mean(np.square(noise, dtype=np.float64))))


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """signal + noise (as long as signal) scaled so that the mix has that signal-to-noise ratio, over
    the whole utterance. Silence (no signal power) gets no noise: it has no ratio to keep."""
    signal_power = float(np.mean(np.square(signal, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if signal_power == 0 or noise_power == 0:
        return signal.astype(np.float32)
    scale = math.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return (signal + scale * noise).astype(np.float32)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """audio played `factor` times as fast, by resampling (pitch moves with it, as in Kaldi's speed
    perturbation): 0.9 gives 1/0.9 times as many samples."""
    if factor == 1.0:
        return audio
    from scipy.signal import resample_poly

    ratio = Fraction(factor).limit_denominator(SPEED_DENOMINATOR)
    return resample_poly(audio, ratio.denominator, ratio.numerator).astype(np.float32)


def speed_samples(samples: int, factor: float) -> int:
    """Samples of change_speed's output for `samples` samples in."""
    ratio = Fraction(factor).limit_denominator(SPEED_DENOMINATOR)
    return -(-samples * ratio.denominator // ratio.numerator)


def apply_masks(features: np.ndarray, rng: np.random.Generator, masks: int, max_width: int, axis: int) -> None:
    """SpecAugment in place: `masks` bands along `axis`, each 0..max_width wide (at most the axis's
    length) at a random place, set to 0, the mean of normalised features."""
    size = features.shape[axis]
    for _ in range(masks):
        width = min(int(rng.integers(max_width + 1)), size)
        start = int(rng.integers(size - width + 1))
        if axis == 0:
            features[start:start + width, :] = 0.0
        else:
            features[:, start:start + width] = 0.0


def noise_files(directory: Union[str, Path]) -> List[Path]:
    """The audio files (NOISE_SUFFIXES) under directory, sorted, so their order is the same everywhere."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in NOISE_SUFFIXES and p.is_file())


class Augmenter:
    """One training set's augmentation (see the module docstring).

    noise_paths: the noise files to mix in (needed when augment.noise_probability > 0); each is read
    once, on first use, and kept in memory.
    """

    def __init__(self, augment: AugmentConfig, feature_cfg: FeatureConfig, seed: int,
                 noise_paths: Sequence[Union[str, Path]] = ()):
        if augment.noise_probability > 0 and not noise_paths:
            raise UserError("augment.noise_probability is above 0 but there are no noise files; run ds2 preprocess "
                            "(it makes the noise set) or set augment.noise_dir to a folder of .wav / .flac files")
        self.augment = augment
        self.feature_cfg = feature_cfg
        self.seed = seed
        self.noise_paths = [str(p) for p in noise_paths]
        self._noises: Dict[int, np.ndarray] = {}

    def description(self) -> str:
        a = self.augment
        noise = (f"noise p={a.noise_probability:g} at {a.snr_db[0]:g}..{a.snr_db[1]:g} dB SNR "
                 f"({len(self.noise_paths)} files)" if a.noise_probability > 0 else "no noise")
        return (f"speed {','.join(f'{f:g}' for f in a.speed_factors)}; {noise}; gain {a.gain_db[0]:g}..{a.gain_db[1]:g} dB; "
                f"{a.freq_masks} frequency masks <= {a.freq_mask_width} bins, {a.time_masks} time masks <= "
                f"{a.time_mask_width} frames")

    def _noise(self, index: int) -> np.ndarray:
        from ds2.features import AudioError, load_audio

        if index not in self._noises:
            try:
                self._noises[index] = unit_rms(load_audio(self.noise_paths[index], self.feature_cfg.sample_rate))
            except AudioError as exc:
                raise UserError(f"noise file {self.noise_paths[index]} cannot be used ({exc}); remove it from "
                                f"the noise folder") from None
        return self._noises[index]

    def features(self, audio_path: str, cached: Callable[[str], np.ndarray], epoch: int, index: int,
                 speed_fits: Callable[[float], bool]) -> np.ndarray:
        """Features of utterance `index` (audio at audio_path) augmented for `epoch`.

        cached(audio_path): its unaugmented features (the feature cache). speed_fits(factor): whether the
        utterance played that fast still fits its batch and its transcript; factors that do not are not
        drawn (slowing down the longest utterance of a bucket would make it wider than the bucket).
        """
        a = self.augment
        rng = np.random.default_rng([self.seed, epoch, index])
        # Every draw is made whether it is used or not, so each choice has its fixed place in the stream.
        allowed = [factor for factor in a.speed_factors if factor == 1.0 or speed_fits(factor)] or [1.0]
        factor = allowed[int(rng.integers(len(allowed)))]
        gain_db = float(rng.uniform(*a.gain_db))
        noisy = bool(rng.random() < a.noise_probability)
        noise_index = int(rng.integers(max(1, len(self.noise_paths))))
        noise_offset = float(rng.random())
        snr_db = float(rng.uniform(*a.snr_db))
        if factor == 1.0 and gain_db == 0.0 and not noisy:
            features = np.array(cached(audio_path))   # a copy: the masks must not write into a cached array
        else:
            from ds2.features import compute_features, load_audio

            audio = change_speed(load_audio(audio_path, self.feature_cfg.sample_rate), factor)
            if noisy:
                noise = self._noise(noise_index)
                audio = mix_at_snr(audio, fit_length(noise, len(audio), int(noise_offset * len(noise))), snr_db)
            audio = audio * np.float32(10 ** (gain_db / 20))
            features = compute_features(audio, self.feature_cfg)
        apply_masks(features, rng, a.freq_masks, a.freq_mask_width, axis=0)
        apply_masks(features, rng, a.time_masks, a.time_mask_width, axis=1)
        return features


def make_augmenter(augment: AugmentConfig, feature_cfg: FeatureConfig, seed: int,
                   default_noise_dir: Union[str, Path]) -> Optional[Augmenter]:
    """The training set's Augmenter, or None when augment.enabled is false. Noise comes from
    augment.noise_dir when set, else from default_noise_dir (the set ds2 preprocess makes)."""
    if not augment.enabled:
        return None
    directory = Path(augment.noise_dir or default_noise_dir)
    paths = noise_files(directory) if augment.noise_probability > 0 else []
    if augment.noise_probability > 0 and not paths:
        fix = ("put .wav / .flac noise files there" if augment.noise_dir
               else "run ds2 preprocess (it makes the noise set), or set augment.noise_dir")
        raise UserError(f"augment.noise_probability={augment.noise_probability:g} needs noise files and there are "
                        f"none in {directory}; {fix}")
    return Augmenter(augment, feature_cfg, seed, paths)
