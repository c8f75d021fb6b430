"""Manifests record the data settings that produced them; train and eval refuse one written under others."""
import json

import numpy as np
import pytest
import soundfile

from ds2.__main__ import main
from ds2.config import load_config
from ds2.data.manifest import DATA_SETTINGS_KEY, Utterance, write_csv_manifest, write_json_manifest
from ds2.data.sets import data_settings, manifest_path, read_split
from ds2.errors import DataError
from tests.test_preprocess import run_preprocess


@pytest.fixture
def prepared(tmp_path):
    """A config with data.source=manifest and the train manifest `ds2 preprocess` wrote from it."""
    source = tmp_path / "source"
    source.mkdir()
    utterances = []
    for index, text in enumerate(["HELLO WORLD", "GOOD MORNING"]):
        audio, transcript = source / f"19-198-000{index}.flac", source / f"19-198-000{index}.txt"
        soundfile.write(audio, np.random.RandomState(index).randn(16000) * 0.1, 16000)
        transcript.write_text(text)
        utterances.append(Utterance(audio.stem, str(audio), text, 1.0, "19", str(transcript)))
    write_csv_manifest(source / "train.csv", utterances)
    overrides = [f"data.data_dir={tmp_path / 'data'}", "data.source=manifest", f"data.train_manifest={source / 'train.csv'}"]
    cfg = load_config("small", overrides=overrides)
    assert run_preprocess(cfg, "--workers", "1", "--splits", "train") == 0
    return overrides


def test_preprocess_records_the_data_settings(prepared):
    cfg = load_config("small", overrides=prepared)
    stored = json.loads(manifest_path(cfg, "train").read_text())[DATA_SETTINGS_KEY]
    assert stored == data_settings(cfg, "train")
    assert stored["max_duration"] == cfg.data.max_duration and set(stored["labels"]) == set(cfg.model.labels)
    assert len(read_split(cfg, "train")) == 2


def test_other_data_settings_are_refused_in_one_line_naming_the_fix(prepared):
    cfg = load_config("small", overrides=prepared + ["data.max_duration=0.5"])
    with pytest.raises(DataError, match=r"train.json: written under other data settings \(max_duration 35.0 there, "
                                        r"0.5 now\); run `ds2 preprocess` .*again"):
        read_split(cfg, "train")


def test_train_refuses_a_stale_manifest_in_one_line(prepared, tmp_path, capsys):
    """The broken state a killed re-preprocess leaves: the manifest of the old settings, the new settings in effect."""
    overrides = prepared + ["data.max_duration=0.5", f"run_dir={tmp_path / 'run'}"]
    argv = [arg for override in overrides for arg in ("--set", override)]
    assert main(["train"] + argv) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "written under other data settings" in error and "ds2 preprocess" in error


def test_labels_in_another_order_are_the_same_data_settings(prepared):
    labels = load_config("small", overrides=prepared).model.labels
    reordered = labels[0] + labels[1:][::-1]
    assert len(read_split(load_config("small", overrides=prepared + [f"model.labels={reordered}"]), "train")) == 2


def test_a_manifest_without_settings_is_used_with_one_warning(prepared, capsys):
    cfg = load_config("small", overrides=prepared)
    path = manifest_path(cfg, "train")
    kept = read_split(cfg, "train")
    write_json_manifest(path, kept)   # as a ds2 from before manifests recorded their settings wrote it
    capsys.readouterr()
    assert read_split(cfg, "train") == kept
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and "does not record the data settings" in warning and str(path) in warning
