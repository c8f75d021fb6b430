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
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import soundfile
from hypothesis import given
from hypothesis import strategies as st

from ds2 import lm, lm_decode
from ds2.checkpoint import storage
from ds2.checkpoint.torch_unpickler import read_torch_checkpoint
from ds2.config import Config, FeatureConfig, load_config
from ds2.data.librispeech import safe_extract
from ds2.data.manifest import Utterance, read_csv_manifest, read_json_manifest, write_csv_manifest, write_json_manifest
from ds2.features import FeatureCache, load_audio
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


# --- YAML configs ------------------------------------------------------------------------------------


def valid_yaml(folder: Path) -> bytes:
    return (b"# a config file\ntrain:\n  epochs: 2\n  lr: 0.001\ndata:\n  max_duration: 20.5\n"
            b"  train_subsets: [train-clean-100]\nmodel:\n  rnn_hidden: 64\n")


def check_config(cfg) -> None:
    assert isinstance(cfg, Config)
    assert math.isfinite(cfg.train.lr) and math.isfinite(cfg.data.max_duration)


# --- tar archives ------------------------------------------------------------------------------------


def valid_tar(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in [("LibriSpeech/README.TXT", b"readme\n"), ("LibriSpeech/dev-clean/19/a.txt", b"A B\n")]:
            member = tarfile.TarInfo(name)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    return buffer.getvalue()


def extract_into_fresh_folder(path: Path) -> Path:
    target = path.parent / "extracted"
    shutil.rmtree(target, ignore_errors=True)
    safe_extract(path, target)
    return target


def check_extracted(target: Path) -> None:
    real = os.path.realpath(target)
    for root, folders, files in os.walk(target):
        for name in folders + files:
            assert os.path.realpath(os.path.join(root, name)).startswith(real + os.sep) or \
                os.path.islink(os.path.join(root, name))


# --- the feature cache -------------------------------------------------------------------------------


def feature_cache(folder: Path) -> FeatureCache:
    return FeatureCache(folder / "cache", FeatureConfig())


def valid_cache_entry(folder: Path) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ones((FeatureConfig().n_bins, 7), dtype=np.float32))
    return buffer.getvalue()


def check_features(features) -> None:
    assert features.dtype == np.float32 and features.shape[0] == FeatureConfig().n_bins
    assert np.isfinite(features).all()


# --- checkpoints -------------------------------------------------------------------------------------


def save_tiny_checkpoint(path: Path) -> None:
    import mindspore as ms

    model = ms.nn.Dense(3, 2)
    storage.save(path, model, None, {"step": 1, "config": {}})


def valid_checkpoint(folder: Path) -> bytes:
    save_tiny_checkpoint(folder / "valid.ckpt")
    return (folder / "valid.ckpt").read_bytes()


def load_without_sidecar(path: Path):
    storage.checksum_path(path).unlink(missing_ok=True)
    return storage.load(path)


def valid_checkpoint_with_sidecar(folder: Path) -> bytes:
    save_tiny_checkpoint(folder / "checkpoint.ckpt")
    return (folder / "checkpoint.ckpt").read_bytes()


def check_checkpoint(result) -> None:
    values, meta = result
    assert isinstance(meta, dict)
    for value in values.values():
        array = value.asnumpy()
        assert array.dtype.kind != "f" or np.isfinite(array).all()


def valid_sidecar(folder: Path) -> bytes:
    """A checkpoint.ckpt beside the sidecar, which is the file mutated."""
    save_tiny_checkpoint(folder / "checkpoint.ckpt")
    return storage.checksum_path(folder / "checkpoint.ckpt").read_bytes()


def load_through_sidecar(path: Path):
    return storage.load(path.with_name("checkpoint.ckpt"))


# --- torch checkpoints (ds2 convert) -----------------------------------------------------------------


def valid_torch_checkpoint(new_format: bool) -> Callable[[Path], bytes]:
    def make(folder: Path) -> bytes:
        import torch

        state = {"state_dict": {"fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2)}, "labels": list("_AB ")}
        torch.save(state, folder / "valid.pth", _use_new_zipfile_serialization=new_format)
        return (folder / "valid.pth").read_bytes()
    return make


def check_torch(result) -> None:
    arrays, others = result
    assert arrays and all(not a.dtype.kind == "f" or np.isfinite(a).all() for a in arrays.values())


# --- tuned LM settings (<checkpoint>.lm.json) ---------------------------------------------------------


def valid_lm_settings(folder: Path) -> bytes:
    settings = lm_decode.LmSettings(lm_path=str(folder / "lm" / "train-2gram.arpa"), alpha=0.75, beta=2.0, beam=32)
    return lm_decode.save_settings(folder / "best.ckpt", settings, {"dev_wer": 0.08}).read_bytes()


def load_lm_settings(path: Path):
    return lm_decode.load_settings(path.with_name(path.name[:-len(lm_decode.SETTINGS_SUFFIX)]))


def check_lm_settings(settings) -> None:
    assert math.isfinite(settings.alpha) and math.isfinite(settings.beta) and settings.beam > 0
    settings.lm_path.encode("utf-8")


READERS = {
    "json manifest": Reader("manifest.json", valid_json_manifest, read_json_manifest, check_manifest),
    "csv manifest": Reader("manifest.csv", valid_csv_manifest, read_csv_manifest, check_manifest),
    "float wav": Reader("audio.wav", valid_audio("FLOAT", "WAV"), lambda p: load_audio(p, SAMPLE_RATE), check_audio),
    "pcm wav in memory": Reader("audio.wav", valid_audio("PCM_16", "WAV"), read_audio_from_memory, check_audio),
    "flac": Reader("audio.flac", valid_audio("PCM_16", "FLAC"), lambda p: load_audio(p, SAMPLE_RATE), check_audio),
    "metrics.jsonl": Reader("metrics.jsonl", valid_metrics_log, read_metrics_log, check_metrics),
    "arpa": Reader("lm.arpa", valid_arpa("valid.arpa"), lm.read_arpa, check_arpa),
    "arpa.gz": Reader("lm.arpa.gz", valid_arpa("valid.arpa.gz"), lm.read_arpa, check_arpa),
    "tuned lm settings": Reader("best.ckpt.lm.json", valid_lm_settings, load_lm_settings, check_lm_settings),
    "yaml config": Reader("config.yaml", valid_yaml, lambda p: load_config("small", str(p)), check_config),
    "tar.gz": Reader("archive.tar.gz", valid_tar, extract_into_fresh_folder, check_extracted),
    "feature cache entry": Reader("entry.npy", valid_cache_entry, lambda p: feature_cache(p.parent).read_entry(p),
                                  check_features),
    "checkpoint without sidecar": Reader("checkpoint.ckpt", valid_checkpoint, load_without_sidecar, check_checkpoint),
    "checkpoint with sidecar": Reader("checkpoint.ckpt", valid_checkpoint_with_sidecar, storage.load,
                                      check_checkpoint),
    "checkpoint sidecar": Reader("checkpoint.ckpt.sha256", valid_sidecar, load_through_sidecar, check_checkpoint),
    "torch checkpoint": Reader("model.pth", valid_torch_checkpoint(True), read_torch_checkpoint, check_torch),
    "legacy torch checkpoint": Reader("model.pth", valid_torch_checkpoint(False), read_torch_checkpoint, check_torch),
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
