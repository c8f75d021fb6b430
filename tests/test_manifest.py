import argparse
import json
import os

import numpy as np
import pytest
import soundfile

from ds2.config import DEFAULT_LABELS
from ds2 import manifest_command
from ds2.data import manifest
from ds2.data.manifest import (ManifestError, Utterance, read_csv_manifest, read_json_manifest, read_manifest,
                               write_csv_manifest, write_json_manifest)

SAMPLE_RATE = 16000


def make_utterance(directory, utterance_id, text, seconds=0.5, suffix=".flac"):
    audio_path = directory / "audio" / f"{utterance_id}{suffix}"
    transcript_path = directory / "txt" / f"{utterance_id}.txt"
    audio_path.parent.mkdir(parents=True, exist_ok=True)
    transcript_path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(audio_path, np.zeros(int(seconds * SAMPLE_RATE)), SAMPLE_RATE)
    transcript_path.write_text(text)
    return Utterance(id=utterance_id, audio_path=str(audio_path), text=text.upper(), duration=seconds,
                     speaker=utterance_id.split("-")[0], transcript_path=str(transcript_path))


@pytest.fixture
def corpus(tmp_path):
    return [make_utterance(tmp_path, "19-198-0000", "HELLO WORLD", 0.5),
            make_utterance(tmp_path, "19-198-0001", "IT'S A CAT", 1.25)]


def test_json_round_trip(tmp_path, corpus):
    write_json_manifest(tmp_path / "m.json", corpus)
    raw = json.loads((tmp_path / "m.json").read_text())
    assert raw["root_path"] == str(tmp_path)
    assert raw["samples"][0] == {"wav_path": "audio/19-198-0000.flac", "transcript_path": "txt/19-198-0000.txt",
                                 "duration": 0.5, "transcript": "HELLO WORLD", "speaker": "19", "id": "19-198-0000"}
    utterances, report = read_json_manifest(tmp_path / "m.json")
    assert utterances == corpus and report.total == 0


def test_csv_round_trip_through_both_forms(tmp_path, corpus):
    write_csv_manifest(tmp_path / "m.csv", corpus)
    lines = (tmp_path / "m.csv").read_text().splitlines()
    assert lines[0] == f"{corpus[0].audio_path},{corpus[0].transcript_path}"
    from_csv, report = read_csv_manifest(tmp_path / "m.csv")
    assert report.total == 0
    assert from_csv == corpus  # durations from the headers, speakers from the ids
    write_json_manifest(tmp_path / "m.json", from_csv)
    write_csv_manifest(tmp_path / "again.csv", read_manifest(tmp_path / "m.json")[0])
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "m.csv").read_text()


def test_minimal_json_entries_read_transcript_and_duration(tmp_path, corpus):
    # deepspeech.pytorch's form: a relative root_path and only the two paths per sample
    (tmp_path / "manifests").mkdir()
    minimal = {"root_path": "..", "samples": [{"wav_path": "audio/19-198-0001.flac",
                                               "transcript_path": "txt/19-198-0001.txt"}]}
    (tmp_path / "manifests" / "m.json").write_text(json.dumps(minimal))
    utterances, report = read_json_manifest(tmp_path / "manifests" / "m.json")
    assert report.total == 0
    assert utterances == [corpus[1]]


def test_problems_are_counted_never_silently_dropped(tmp_path, corpus):
    bad_chars = make_utterance(tmp_path, "19-198-0002", "CAFÉ 42")
    empty = make_utterance(tmp_path, "19-198-0003", "  \n")
    no_audio = make_utterance(tmp_path, "19-198-0004", "GONE")
    os.unlink(no_audio.audio_path)
    no_transcript = make_utterance(tmp_path, "19-198-0005", "GONE TOO")
    os.unlink(no_transcript.transcript_path)
    zero_length = make_utterance(tmp_path, "19-198-0006", "SILENT", seconds=0, suffix=".wav")  # FLAC cannot be empty
    (tmp_path / "audio" / "junk.flac").write_bytes(b"junk")
    junk = Utterance("junk", str(tmp_path / "audio" / "junk.flac"), "JUNK", 1.0, "", corpus[0].transcript_path)
    rows = corpus + [bad_chars, empty, no_audio, no_transcript, zero_length, junk, corpus[0]]
    write_csv_manifest(tmp_path / "m.csv", rows)
    with open(tmp_path / "m.csv", "a") as stream:
        stream.write("only-one-column\n")

    utterances, report = read_csv_manifest(tmp_path / "m.csv", labels=DEFAULT_LABELS)
    assert [u.id for u in utterances] == ["19-198-0000", "19-198-0001"]
    assert report.counts == {manifest.OUT_OF_LABELS: 1, manifest.EMPTY_TRANSCRIPT: 1, manifest.MISSING_AUDIO: 1,
                             manifest.MISSING_TRANSCRIPT: 1, manifest.EMPTY_AUDIO: 1, manifest.UNREADABLE_AUDIO: 1,
                             manifest.DUPLICATE_ID: 1, manifest.BAD_ENTRY: 1}
    assert "'É' x1" in report.examples[manifest.OUT_OF_LABELS][0]
    assert "8 skipped" in str(report)
    # without labels the out-of-label utterance is kept (conversion does not judge the alphabet)
    assert len(read_csv_manifest(tmp_path / "m.csv")[0]) == 3


def test_unreadable_manifest_raises(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ManifestError):
        read_manifest(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ManifestError, match="samples"):
        read_manifest(tmp_path / "list.json")
    with pytest.raises(ManifestError, match="unknown manifest type"):
        read_manifest(tmp_path / "m.txt")


def test_csv_needs_transcript_files(tmp_path, corpus):
    corpus[0].transcript_path = ""
    with pytest.raises(ManifestError, match="transcript file"):
        write_csv_manifest(tmp_path / "m.csv", corpus)


def run_cli(*argv):
    parser = argparse.ArgumentParser()
    manifest_command.add_arguments(parser)
    return manifest_command.run(None, parser.parse_args(argv))


def test_cli_converts_both_ways(tmp_path, corpus):
    write_csv_manifest(tmp_path / "in.csv", corpus)
    assert run_cli("to-json", str(tmp_path / "in.csv"), str(tmp_path / "out.json")) == 0
    assert [s["duration"] for s in json.loads((tmp_path / "out.json").read_text())["samples"]] == [0.5, 1.25]
    assert run_cli("to-csv", str(tmp_path / "out.json"), str(tmp_path / "out.csv")) == 0
    assert (tmp_path / "out.csv").read_text() == (tmp_path / "in.csv").read_text()


def test_cli_reports_skipped_entries_with_exit_status(tmp_path, corpus, capsys):
    os.unlink(corpus[1].audio_path)
    write_csv_manifest(tmp_path / "in.csv", corpus)
    assert run_cli("to-json", str(tmp_path / "in.csv"), str(tmp_path / "out.json")) == 1
    assert "1 skipped" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "out.json").read_text())["samples"]) == 1
    assert run_cli("to-json", str(tmp_path / "missing.csv"), str(tmp_path / "x.json")) == 1


def test_one_non_utf8_byte_rejects_only_its_entry(tmp_path, corpus):
    write_json_manifest(tmp_path / "m.json", corpus)
    raw = (tmp_path / "m.json").read_bytes().replace(b'"IT\'S A CAT"', b'"IT\'S A \xff CAT"')
    (tmp_path / "m.json").write_bytes(raw)
    utterances, report = read_json_manifest(tmp_path / "m.json")
    assert [u.id for u in utterances] == ["19-198-0000"]
    assert report.counts == {manifest.NOT_UTF8: 1} and "sample 1" in str(report)

    write_csv_manifest(tmp_path / "m.csv", corpus)
    lines = (tmp_path / "m.csv").read_bytes().split(b"\n")
    (tmp_path / "m.csv").write_bytes(b"\n".join([lines[0] + b"\xfe", b"a,b,c", b'"unclosed'] + lines[1:]))
    utterances, report = read_csv_manifest(tmp_path / "m.csv")
    assert [u.id for u in utterances] == ["19-198-0001"]
    assert report.counts == {manifest.NOT_UTF8: 1, manifest.BAD_ENTRY: 2} and "m.csv:2" in str(report)


def test_an_entry_with_a_non_finite_or_wrong_typed_field_is_skipped(tmp_path, corpus):
    write_json_manifest(tmp_path / "m.json", corpus)
    raw = json.loads((tmp_path / "m.json").read_text())
    raw["samples"][0]["duration"] = float("nan")
    raw["samples"].append({"wav_path": 7})
    (tmp_path / "m.json").write_text(json.dumps(raw))
    utterances, report = read_json_manifest(tmp_path / "m.json")
    assert [u.id for u in utterances] == ["19-198-0001"] and report.counts == {manifest.BAD_ENTRY: 2}
    assert "duration nan is not a finite number" in str(report)


def test_a_manifest_saved_with_a_byte_order_mark_reads_as_without(tmp_path, corpus):
    write_json_manifest(tmp_path / "m.json", corpus)
    write_csv_manifest(tmp_path / "m.csv", corpus)
    for name in ("m.json", "m.csv"):
        (tmp_path / name).write_bytes("\ufeff".encode() + (tmp_path / name).read_bytes())
        utterances, report = read_manifest(tmp_path / name)
        assert utterances == corpus and report.total == 0


def test_a_key_given_twice_refuses_the_manifest_or_skips_the_entry(tmp_path, corpus):
    """json keeps the last of two values without a word: a second, empty 'samples' list would read as no
    utterances, a second wav_path as another recording."""
    write_json_manifest(tmp_path / "m.json", corpus)
    text = (tmp_path / "m.json").read_text()
    (tmp_path / "twice.json").write_text(text.rstrip()[:-1] + ', "samples": []}')
    with pytest.raises(ManifestError, match=r"twice.json: the top-level object holds 'samples' more than once; fix"):
        read_json_manifest(tmp_path / "twice.json")
    first_path = '"wav_path": "audio/19-198-0000.flac"'
    (tmp_path / "entry.json").write_text(text.replace(first_path, first_path + ', "wav_path": "other.flac"', 1))
    utterances, report = read_json_manifest(tmp_path / "entry.json")
    assert [u.id for u in utterances] == ["19-198-0001"] and report.counts == {manifest.BAD_ENTRY: 1}
    assert "sample 0: it holds 'wav_path' more than once" in str(report)


def test_an_entry_whose_duration_is_an_integer_too_large_for_a_float_is_skipped(tmp_path, corpus):
    write_json_manifest(tmp_path / "m.json", corpus)
    text = (tmp_path / "m.json").read_text()
    raw = json.loads(text)
    first_duration = json.dumps(raw["samples"][0]["duration"])
    (tmp_path / "m.json").write_text(text.replace(first_duration, "1" + "0" * 400, 1))
    utterances, report = read_json_manifest(tmp_path / "m.json")
    assert len(utterances) == len(corpus) - 1 and report.counts == {manifest.BAD_ENTRY: 1}
    assert "duration too large is not a finite number" in str(report)


def test_a_manifest_that_is_not_json_is_one_line_naming_the_place(tmp_path):
    (tmp_path / "m.json").write_text('{"samples": [\n  {"wav_path": "a.wav",}\n]}')
    with pytest.raises(ManifestError, match=r"m.json \(line 2, column 24\): not valid JSON: .*; fix or remove it"):
        read_json_manifest(tmp_path / "m.json")
