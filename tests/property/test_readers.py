"""Every reader, searched: random bytes, every truncation of a valid file, and mutations of valid files
(flipped bytes, bytes inserted or deleted, lines deleted, repeated or replaced) give either a valid result
or the reader's DataError (one line naming the file), never another exception.

Each reader is an entry of READERS: how to make a valid file, how to read one, and what every result the
reader returns must satisfy.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import soundfile
from hypothesis import given
from hypothesis import strategies as st

from ds2 import lm
from ds2.data.manifest import Utterance, read_csv_manifest, read_json_manifest, write_csv_manifest, write_json_manifest
from ds2.features import load_audio
from ds2.metrics import read_metrics_log
from tests.property.fuzzing import mutations, outcome, random_bytes, searches, truncations

SAMPLE_RATE = 16000


@dataclass
class Reader:
    file_name: str                               # the name the input is written under, in a folder of its own
    valid: Callable[[Path], bytes]               # makes what a valid file needs in the folder, returns its bytes
    read: Callable[[Path], Any]
    check: Callable[[Any], None]                 # asserts what every result of read must satisfy


# --- manifests ---------------------------------------------------------------------------------------


def corpus(folder: Path):
    utterances = []
    for index, text in enumerate(["HELLO WORLD", "IT'S A CAT", "A"]):
        audio = folder / "audio" / f"19-198-000{index}.flac"
        transcript = folder / "txt" / f"19-198-000{index}.txt"
        audio.parent.mkdir(parents=True, exist_ok=True)
        transcript.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(audio, np.zeros(SAMPLE_RATE // 4 * (index + 1), dtype=np.float32), SAMPLE_RATE)
        transcript.write_text(text)
        utterances.append(Utterance(id=audio.stem, audio_path=str(audio), text=text, duration=0.25 * (index + 1),
                                    speaker="19", transcript_path=str(transcript)))
    return utterances


def valid_json_manifest(folder: Path) -> bytes:
    write_json_manifest(folder / "valid.json", corpus(folder))
    return (folder / "valid.json").read_bytes()


def valid_csv_manifest(folder: Path) -> bytes:
    write_csv_manifest(folder / "valid.csv", corpus(folder))
    return (folder / "valid.csv").read_bytes()


def check_manifest(result) -> None:
    utterances, report = result
    assert len(utterances) + report.total <= 50
    for utterance in utterances:
        assert isinstance(utterance.text, str) and utterance.text
        assert isinstance(utterance.id, str)
        assert isinstance(utterance.duration, float) or isinstance(utterance.duration, int)
        assert math.isfinite(utterance.duration) and utterance.duration > 0
        utterance.audio_path.encode("utf-8")
        utterance.text.encode("utf-8")
    str(report)


# --- audio -------------------------------------------------------------------------------------------


def valid_audio(subtype: str, file_format: str) -> Callable[[Path], bytes]:
    def make(folder: Path) -> bytes:
        buffer = io.BytesIO()
        samples = (0.3 * np.sin(np.arange(400) * 0.07)).astype(np.float32)
        soundfile.write(buffer, samples, SAMPLE_RATE, subtype=subtype, format=file_format)
        return buffer.getvalue()
    return make


def check_audio(samples) -> None:
    assert isinstance(samples, np.ndarray) and samples.dtype == np.float32 and samples.ndim == 1
    assert samples.size > 0 and np.isfinite(samples).all()


def read_audio_from_memory(path: Path):
    """As ds2 serve reads an upload: from an open file in memory."""
    return load_audio(io.BytesIO(path.read_bytes()), SAMPLE_RATE)


# --- metrics.jsonl -----------------------------------------------------------------------------------


def valid_metrics_log(folder: Path) -> bytes:
    records = [{"kind": "train", "step": step, "epoch": 0, "loss": 10.0 / step, "lr": 1e-3} for step in range(1, 4)]
    records.append({"kind": "dev", "step": 3, "epoch": 0, "dev_cer": 0.5, "dev_wer": 0.9})
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def check_metrics(result) -> None:
    records, skipped = result
    for record in records:
        assert isinstance(record, dict) and isinstance(record["step"], int) and isinstance(record["kind"], str)
        if record["kind"] == "dev":
            assert math.isfinite(record["dev_cer"]) and math.isfinite(record["dev_wer"])
    assert all(isinstance(line, str) for line in skipped)


# --- ARPA --------------------------------------------------------------------------------------------


def valid_arpa(file_name: str) -> Callable[[Path], bytes]:
    def make(folder: Path) -> bytes:
        model = lm.kneser_ney(["THE CAT SAT", "THE DOG SAT", "A CAT"], order=2)
        return lm.write_arpa(model, folder / file_name).read_bytes()
    return make


def check_arpa(model) -> None:
    assert model.order >= 1 and len(model.probabilities) == model.order
    for order, probabilities in enumerate(model.probabilities, 1):
        for ngram, value in probabilities.items():
            assert len(ngram) == order and not math.isnan(value) and value != math.inf
    model.vocabulary()


READERS = {
    "json manifest": Reader("manifest.json", valid_json_manifest, read_json_manifest, check_manifest),
    "csv manifest": Reader("manifest.csv", valid_csv_manifest, read_csv_manifest, check_manifest),
    "float wav": Reader("audio.wav", valid_audio("FLOAT", "WAV"), lambda p: load_audio(p, SAMPLE_RATE), check_audio),
    "pcm wav in memory": Reader("audio.wav", valid_audio("PCM_16", "WAV"), read_audio_from_memory, check_audio),
    "flac": Reader("audio.flac", valid_audio("PCM_16", "FLAC"), lambda p: load_audio(p, SAMPLE_RATE), check_audio),
    "metrics.jsonl": Reader("metrics.jsonl", valid_metrics_log, read_metrics_log, check_metrics),
    "arpa": Reader("lm.arpa", valid_arpa("valid.arpa"), lm.read_arpa, check_arpa),
    "arpa.gz": Reader("lm.arpa.gz", valid_arpa("valid.arpa.gz"), lm.read_arpa, check_arpa),
}


@pytest.fixture(scope="session", params=sorted(READERS))
def reader(request, scratch):
    """(Reader, the folder its inputs go in, the valid file's bytes)."""
    spec = READERS[request.param]
    folder = scratch / request.param.replace(" ", "-")
    folder.mkdir(exist_ok=True)
    valid = spec.valid(folder)
    return spec, folder, valid


def read_checked(spec: Reader, folder: Path, data: bytes) -> None:
    result = outcome(spec.read, folder / spec.file_name, data)
    if result is not None:
        spec.check(result)


def test_valid_file_reads(reader):
    spec, folder, valid = reader
    result = outcome(spec.read, folder / spec.file_name, valid)
    assert result is not None, "the valid file was refused"
    spec.check(result)


def test_every_truncation(reader):
    spec, folder, valid = reader
    for data in truncations(valid):
        read_checked(spec, folder, data)


@searches
@given(data=random_bytes())
def test_random_bytes(reader, data):
    spec, folder, _ = reader
    read_checked(spec, folder, data)


@searches
@given(data=st.data())
def test_mutations(reader, data):
    spec, folder, valid = reader
    read_checked(spec, folder, data.draw(mutations(valid), label="mutated file"))
