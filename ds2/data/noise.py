"""The noise ds2 makes offline: the training noise set augmentation mixes in, and the test-noisy split.

Training noise set (<data_dir>/noise, ds2.data.sets.noise_dir): NOISES_PER_KIND files of NOISE_SECONDS
each of white, pink and brown noise and of babble (BABBLE_TALKERS training utterances at once).

test-noisy: every test utterance mixed with machine hum (ds2.augment.hum_noise, a kind the training set
does not hold, from a random stream of its own) at an SNR drawn uniformly from TEST_NOISY_SNR_DB, written
as <data_dir>/test-noisy/<utterance id>.flac with snr.json beside (each utterance's SNR and duration).
So it measures the test speakers in noise the model has not trained on.

Both are deterministic from the data seed (data.synth_seed) and their inputs, rebuilt only when those
change (a marker file holds them), and written in a staging folder renamed into place when complete, so
an interrupted run never leaves something that looks finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import List, Sequence

import numpy as np

from ds2 import files
from ds2.augment import BABBLE, COLOURED_NOISES, babble, coloured_noise, hum_noise, mix_at_snr
from ds2.data.manifest import Utterance

NOISE_SECONDS = 10.0
NOISES_PER_KIND = 8
BABBLE_TALKERS = 6
TEST_NOISY_SNR_DB = (0.0, 20.0)
MARKER_NAME = "noise.json"
SNR_TABLE = "snr.json"
NOISE_VERSION = 2               # bump when what is made changes (2: each noise kind its own stream)
# Random streams, each seeded by [data seed, stream, ...]: the training set and test-noisy never share one.
TRAIN_NOISE_STREAM = 1
TEST_NOISY_STREAM = 2


def _write_flac(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile

    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 1.0:
        audio = audio / peak     # the whole signal, so the mix keeps its SNR; 16-bit FLAC would wrap around
    soundfile.write(str(path), audio, sample_rate, format="FLAC", subtype="PCM_16")


def _finished(directory: Path, parameters: dict) -> bool:
    try:
        return json.loads((directory / MARKER_NAME).read_text()) == parameters
    except (OSError, ValueError):
        return False


def _replace_with(staging: Path, directory: Path, parameters: dict) -> None:
    files.write_json(staging / MARKER_NAME, parameters, indent=1)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(staging, directory)


def _ids_digest(utterances: Sequence[Utterance]) -> str:
    return hashlib.sha256("\n".join(f"{u.id} {u.duration}" for u in utterances).encode()).hexdigest()


def usable_speech(utterances: Sequence[Utterance], chosen: Sequence[int], sample_rate: int) -> List[np.ndarray]:
    """The audio of the chosen utterances that can be read (bad audio is left out here; preprocess counts
    and names it when it reads the features)."""
    from ds2.features import AudioError, load_audio

    speech = []
    for index in chosen:
        try:
            speech.append(load_audio(utterances[index].audio_path, sample_rate))
        except AudioError:
            continue
    return speech


def build_noise_set(directory: Path, train: Sequence[Utterance], seed: int, sample_rate: int) -> Path:
    """The training noise set in directory (see the module docstring), unless it is there already."""
    directory = Path(directory)
    parameters = {"noise_version": NOISE_VERSION, "seed": seed, "sample_rate": sample_rate,
                  "seconds": NOISE_SECONDS, "per_kind": NOISES_PER_KIND, "train": _ids_digest(train)}
    if _finished(directory, parameters):
        return directory
    staging = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    samples = int(NOISE_SECONDS * sample_rate)
    try:
        for kind_number, kind in enumerate(COLOURED_NOISES + (BABBLE,)):
            for number in range(NOISES_PER_KIND):
                rng = np.random.default_rng([seed, TRAIN_NOISE_STREAM, kind_number, number])
                if kind == BABBLE:
                    chosen = rng.choice(len(train), size=min(BABBLE_TALKERS, len(train)), replace=False)
                    talkers = usable_speech(train, sorted(chosen), sample_rate)
                    if not talkers:
                        continue   # no training utterance could be read: the set is the coloured noise alone
                    noise = babble(talkers, samples, rng)
                else:
                    noise = coloured_noise(kind, samples, rng)
                # unit RMS is too loud for a file; augmentation sets the level from the SNR anyway
                _write_flac(staging / f"{kind}-{number:02d}.flac", 0.1 * noise, sample_rate)
        _replace_with(staging, directory, parameters)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _utterance_seed(utterance_id: str) -> int:
    return int.from_bytes(hashlib.sha256(utterance_id.encode()).digest()[:8], "little")


def build_noisy_test(directory: Path, test: Sequence[Utterance], seed: int, sample_rate: int) -> List[Utterance]:
    """The test-noisy utterances (see the module docstring), made in directory unless they are there already.

    They keep the test utterances' ids, speakers and transcripts; their audio is the noisy copy.
    """
    from ds2.features import AudioError, load_audio
    from ds2.progress import progress

    directory = Path(directory)
    parameters = {"noise_version": NOISE_VERSION, "seed": seed, "sample_rate": sample_rate,
                  "snr_db": list(TEST_NOISY_SNR_DB), "test": _ids_digest(test)}
    if not _finished(directory, parameters):
        staging = directory.with_name(f".{directory.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        table = {}
        try:
            with progress(total=len(test), desc="mixing test-noisy", unit="utt") as bar:
                for utterance in test:
                    rng = np.random.default_rng([seed, TEST_NOISY_STREAM, _utterance_seed(utterance.id)])
                    bar.update(1)
                    try:
                        speech = load_audio(utterance.audio_path, sample_rate)
                    except AudioError:
                        continue   # left out of test-noisy; preprocess names it with test's features
                    snr_db = float(rng.uniform(*TEST_NOISY_SNR_DB))
                    _write_flac(staging / f"{utterance.id}.flac",
                                mix_at_snr(speech, hum_noise(len(speech), sample_rate, rng), snr_db), sample_rate)
                    table[utterance.id] = {"snr_db": round(snr_db, 3), "duration": len(speech) / sample_rate}
            files.write_json(staging / SNR_TABLE, table, indent=1)
            _replace_with(staging, directory, parameters)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    table = json.loads((directory / SNR_TABLE).read_text())
    return [replace(u, audio_path=str((directory / f"{u.id}.flac").resolve()), duration=table[u.id]["duration"],
                    transcript_path="") for u in test if u.id in table]
