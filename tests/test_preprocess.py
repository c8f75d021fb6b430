import argparse
import json
import re
import shutil

import numpy as np
import pytest
import soundfile

from ds2 import preprocess
from ds2.__main__ import main
from ds2.data.sets import feature_cache_dir, manifest_path
from ds2.config import load_config
from ds2.data.manifest import Utterance, read_manifest, write_csv_manifest, write_json_manifest
from ds2.features import FeatureCache


def make_audio(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.random.RandomState(0).randn(int(seconds * 16000)) * 0.1, 16000)
    return str(path)


def run_preprocess(cfg, *argv):
    parser = argparse.ArgumentParser()
    preprocess.add_arguments(parser)
    return preprocess.run(cfg, parser.parse_args(list(argv)))


def test_manifest_path_defaults_and_overrides(tmp_path):
    cfg = load_config("small", overrides=[f"data.data_dir={tmp_path}"])
    assert manifest_path(cfg, "train") == tmp_path / "manifests" / "train.json"
    cfg.data.dev_manifest = "/elsewhere/dev.json"
    assert str(manifest_path(cfg, "dev")) == "/elsewhere/dev.json"
    cfg.data.source = "manifest"  # then the setting is the input, and the checked copy lives in data_dir
    assert manifest_path(cfg, "dev") == tmp_path / "manifests" / "dev.json"


def test_manifest_source_is_checked_filtered_and_summarised(tmp_path, capsys):
    source = tmp_path / "source"
    rows = [("19-198-0000", "hello world", 1.0),                  # kept (normalised to upper case)
            ("19-198-0001", "good morning", 1.5),                 # kept
            ("19-198-0002", "far too long", 3.0),                 # longer than max_duration
            ("19-198-0003", "a very long transcript for a tiny clip", 0.1),  # 6 output frames
            ("19-198-0004", "price: 5 dollars", 1.0),             # characters outside the labels
            ("19-198-0005", "no audio", 1.0)]
    utterances = []
    for utterance_id, text, seconds in rows:
        transcript = source / f"{utterance_id}.txt"
        transcript.parent.mkdir(parents=True, exist_ok=True)
        transcript.write_text(text)
        audio = make_audio(source / f"{utterance_id}.flac", seconds)
        utterances.append(Utterance(utterance_id, audio, text, seconds, "", str(transcript)))
    (source / "19-198-0005.flac").unlink()
    write_csv_manifest(source / "train.csv", utterances)
    write_csv_manifest(source / "dev.csv", utterances[:1])

    cfg = load_config("small", overrides=[f"data.data_dir={tmp_path / 'data'}", "data.source=manifest",
                                          f"data.train_manifest={source / 'train.csv'}",
                                          f"data.dev_manifest={source / 'dev.csv'}", "data.max_duration=2.5"])
    assert run_preprocess(cfg, "--warm-cache", "--workers", "1") == 0
    rows = [re.split(r"\s{2,}", line.strip()) for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["train", "dev"]
    table = {row[0]: row[1:] for row in rows[1:] if len(row) == 3}
    assert table["found"] == ["6", "1"] and table["kept"] == ["2", "1"]
    for reason in ("longer than data.max_duration", "transcript too long for the model's output frames",
                   "characters outside the labels", "missing audio file"):
        assert table[f"skipped: {reason}"] == ["1", "0"]

    kept, report = read_manifest(manifest_path(cfg, "train"))
    assert report.total == 0
    assert [(u.id, u.text) for u in kept] == [("19-198-0000", "HELLO WORLD"), ("19-198-0001", "GOOD MORNING")]
    csv_kept, _ = read_manifest(manifest_path(cfg, "train").with_suffix(".csv"))
    assert csv_kept == kept
    assert not manifest_path(cfg, "test").exists()  # no test manifest given: no test split

    cache = FeatureCache(feature_cache_dir(cfg), cfg.features)
    cache.features(kept[0].audio_path)
    assert (cache.hits, cache.misses) == (1, 0)  # --warm-cache computed it already


def test_bad_data_paths_give_one_line_errors(tmp_path, capsys):
    assert main(["preprocess", "--set", f"data.data_dir={tmp_path}", "--set", "data.source=librispeech",
                 "--set", "data.librispeech_dir=/no/such/dir"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "/no/such/dir" in error and "Traceback" not in error

    manifest_source = ["--set", f"data.data_dir={tmp_path}", "--set", "data.source=manifest"]
    assert main(["preprocess"] + manifest_source + ["--set", f"data.train_manifest={tmp_path / 'missing.json'}"]) == 1
    assert "missing.json" in capsys.readouterr().err

    (tmp_path / "broken.json").write_text("{")
    assert main(["preprocess"] + manifest_source + ["--set", f"data.train_manifest={tmp_path / 'broken.json'}"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_synth_source_end_to_end(tmp_path, capsys):
    cfg = load_config("small", overrides=[f"data.data_dir={tmp_path}", "data.synth_train=3",
                                          "data.synth_dev=1", "data.synth_test=1"])
    assert run_preprocess(cfg, "--workers", "2") == 0
    for split, count in (("train", 3), ("dev", 1), ("test", 1)):
        manifest = json.loads(manifest_path(cfg, split).read_text())
        assert len(manifest["samples"]) == count
        assert all(sample["duration"] > 0 for sample in manifest["samples"])
    assert "kept" in capsys.readouterr().out


def test_manifest_durations_are_checked_against_the_audio_headers(tmp_path, capsys):
    source = tmp_path / "source"
    good = make_audio(source / "good.wav", 1.0)
    short = make_audio(source / "short.wav", 2.0)
    empty = source / "empty.wav"
    empty.write_bytes(b"")           # 0 bytes, listed with a duration
    samples = [{"wav_path": good, "transcript": "fine", "duration": 1.0, "id": "good"},
               {"wav_path": short, "transcript": "understated", "duration": 1.2, "id": "short"},  # 40 % short
               {"wav_path": str(empty), "transcript": "nothing", "duration": 1.0, "id": "empty"}]
    (source / "train.json").write_text(json.dumps({"root_path": str(source), "samples": samples}))
    assert main(["preprocess", "--set", f"data.data_dir={tmp_path / 'data'}", "--set", "data.source=manifest",
                 "--set", f"data.train_manifest={source / 'train.json'}"]) == 0
    out = capsys.readouterr().out
    rows = {row[0]: row[1:] for row in (re.split(r"\s{2,}", line.strip()) for line in out.splitlines())}
    assert rows["skipped: unreadable audio"] == ["1"]
    assert rows["corrected: duration differs from the audio header"] == ["1"]
    assert "short (1.2 s listed, 2.00 s in the file)" in out
    kept, _ = read_manifest(tmp_path / "data" / "manifests" / "train.json")
    assert {u.id: u.duration for u in kept} == {"good": 1.0, "short": 2.0}


def test_splits_option_prepares_only_those_splits(tmp_path, capsys):
    source = tmp_path / "source"
    manifests = {}
    for split in ("train", "dev", "test"):
        audio = make_audio(source / f"{split}.flac", 1.0)
        transcript = source / f"{split}.txt"
        transcript.write_text("hello world")
        manifests[split] = source / f"{split}.csv"
        write_csv_manifest(manifests[split], [Utterance(split, audio, "HELLO WORLD", 1.0, "", str(transcript))])
    cfg = load_config("small", overrides=[f"data.data_dir={tmp_path / 'data'}", "data.source=manifest"] +
                      [f"data.{split}_manifest={path}" for split, path in manifests.items()])
    assert run_preprocess(cfg, "--splits", "test", "--workers", "1") == 0
    assert manifest_path(cfg, "test").is_file()
    assert not manifest_path(cfg, "train").exists() and not manifest_path(cfg, "dev").exists()


def test_test_noisy_is_the_test_split_in_held_out_noise_and_the_noise_set_is_made(tmp_path, capsys):
    from ds2.augment import signal_to_noise_db
    from ds2.data.noise import BABBLE_TALKERS, SNR_TABLE, TEST_NOISY_SNR_DB
    from ds2.data.sets import noise_dir

    source = tmp_path / "source"
    manifests = {}
    for split, count in (("train", BABBLE_TALKERS), ("dev", 1), ("test", 4)):
        utterances = [Utterance(f"{split}{i}", make_audio(source / f"{split}{i}.flac", 0.5 + 0.1 * i), "HELLO", 0.5 + 0.1 * i)
                      for i in range(count)]
        manifests[split] = source / f"{split}.json"
        write_json_manifest(manifests[split], utterances)
    cfg = load_config("small", overrides=[f"data.data_dir={tmp_path / 'data'}", "data.source=manifest"] +
                      [f"data.{split}_manifest={path}" for split, path in manifests.items()])
    assert run_preprocess(cfg, "--workers", "1") == 0
    test, _ = read_manifest(manifest_path(cfg, "test"))
    noisy, _ = read_manifest(manifest_path(cfg, "test-noisy"))
    assert [(u.id, u.text, u.duration) for u in noisy] == [(u.id, u.text, u.duration) for u in test]
    table = json.loads((tmp_path / "data" / "test-noisy" / SNR_TABLE).read_text())
    for clean, mixed in zip(test, noisy):
        speech, mix = soundfile.read(clean.audio_path)[0], soundfile.read(mixed.audio_path)[0]
        snr = table[clean.id]["snr_db"]
        assert TEST_NOISY_SNR_DB[0] <= snr <= TEST_NOISY_SNR_DB[1]
        assert signal_to_noise_db(speech, mix - speech) == pytest.approx(snr, abs=0.1)
    assert len(list(noise_dir(cfg).glob("*.flac"))) == 32
    made = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data" / "test-noisy").iterdir()}
    assert run_preprocess(cfg, "--workers", "1") == 0      # made once: the second run leaves them
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "data" / "test-noisy").iterdir()} == made
    with pytest.raises(SystemExit):
        run_preprocess(cfg, "--splits", "test-noisy")
    assert "made from test" in capsys.readouterr().err


def test_warm_cache_names_audio_with_nan_samples_and_goes_on(tmp_path, capsys):
    """Float audio can hold NaN: preprocess --warm-cache counts and names it instead of failing."""
    source = tmp_path / "source"
    utterances = []
    for index in range(3):
        samples = (np.random.RandomState(index).randn(16000) * 0.1).astype(np.float32)
        if index == 1:
            samples[100] = np.nan
        audio = source / f"19-198-000{index}.wav"
        audio.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(audio, samples, 16000, subtype="FLOAT")
        transcript = source / f"19-198-000{index}.txt"
        transcript.write_text("HELLO")
        utterances.append(Utterance(audio.stem, str(audio), "HELLO", 1.0, "", str(transcript)))
    write_csv_manifest(source / "train.csv", utterances)
    cfg = load_config("small", overrides=[f"data.data_dir={tmp_path / 'data'}", "data.source=manifest",
                                          f"data.train_manifest={source / 'train.csv'}"])
    assert run_preprocess(cfg, "--warm-cache", "--workers", "1", "--splits", "train") == 0
    error = capsys.readouterr().err
    assert "1 utterances have audio that cannot be used" in error and "19-198-0001.wav (sample 100)" in error


def test_noise_set_kinds_draw_from_streams_of_their_own(tmp_path):
    from ds2.data.noise import build_noise_set

    directory = build_noise_set(tmp_path / "noise", [], seed=1, sample_rate=16000)
    first = {kind: soundfile.read(str(directory / f"{kind}-00.flac"))[0] for kind in ("white", "pink", "brown")}
    assert not list(directory.glob("babble-*"))          # no training utterance to babble with
    whitened = np.diff(first["brown"])                  # brown noise is integrated white noise
    assert abs(np.corrcoef(whitened, first["white"][1:])[0, 1]) < 0.1
