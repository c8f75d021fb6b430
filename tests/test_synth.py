import os
import shutil
from pathlib import Path

import pytest

from ds2.config import DEFAULT_LABELS
from ds2.data import synth
from ds2.data.librispeech import scan_subset
from ds2.data.synth import SynthError, build_corpus, plan_corpus
from ds2.text import out_of_label_chars

SIZES = {"train": 60, "dev": 30, "test": 30}
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_plan_is_deterministic_and_valid():
    plan = plan_corpus(SIZES, seed=7)
    assert plan == plan_corpus(SIZES, seed=7)
    assert plan != plan_corpus(SIZES, seed=8)
    assert {split: len(jobs) for split, jobs in plan.items()} == SIZES
    for job in [job for jobs in plan.values() for job in jobs]:
        assert 3 <= len(job.text.split()) <= 8
        assert not out_of_label_chars(job.text, DEFAULT_LABELS)
        accent, variant = job.voice.split("+")
        assert accent in synth.VOICE_ACCENTS and variant in synth.VOICE_VARIANTS
        assert synth.SPEED_WPM[0] <= job.speed <= synth.SPEED_WPM[1]
        assert synth.PITCH[0] <= job.pitch <= synth.PITCH[1]


def test_splits_share_no_sentence_and_no_speaker():
    plan = plan_corpus(SIZES, seed=7)
    sentences = [job.text for jobs in plan.values() for job in jobs]
    assert len(sentences) == len(set(sentences))
    speakers = {split: {Path(job.audio_path).parts[1] for job in jobs} for split, jobs in plan.items()}
    assert not speakers["train"] & speakers["dev"] and not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    assert len(speakers["train"]) == SIZES["train"] // synth.UTTERANCES_PER_SPEAKER + 1  # 25 + 25 + 10


def test_train_size_leaves_held_out_splits_unchanged():
    small, large = plan_corpus({**SIZES, "train": 10}, 7), plan_corpus({**SIZES, "train": 500}, 7)
    assert small["dev"] == large["dev"] and small["test"] == large["test"]


@needs_espeak
def test_build_is_byte_identical_and_librispeech_shaped(tmp_path):
    sizes = {"train": 3, "dev": 2, "test": 2}
    first = build_corpus(tmp_path / "a" / "synth", sizes, seed=5, sample_rate=16000, workers=2)
    second = build_corpus(tmp_path / "b" / "synth", sizes, seed=5, sample_rate=16000, workers=2)

    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    first_files = files(first)
    assert first_files == files(second)
    assert sum(name.endswith(".flac") for name in first_files) == 7
    assert not [p for p in (tmp_path / "a").iterdir() if p.name != "synth"]  # no staging left behind

    utterances, report = scan_subset(first / "train", DEFAULT_LABELS)
    assert report.total == 0 and len(utterances) == 3
    planned = {Path(job.audio_path).stem: job.text for job in plan_corpus(sizes, 5)["train"]}
    assert {u.id: u.text for u in utterances} == planned
    assert all(0.3 < u.duration < 10 for u in utterances)


@needs_espeak
def test_finished_corpus_is_reused_and_other_parameters_rebuild(tmp_path):
    sizes = {"train": 1, "dev": 1, "test": 1}
    root = build_corpus(tmp_path / "synth", sizes, seed=1, sample_rate=16000, workers=1)
    flac = next(root.rglob("*.flac"))
    os.utime(flac, (0, 0))
    build_corpus(root, sizes, seed=1, sample_rate=16000, workers=1)
    assert flac.stat().st_mtime == 0  # not rendered again
    build_corpus(root, sizes, seed=2, sample_rate=16000, workers=1)
    assert not flac.exists() or flac.stat().st_mtime != 0
    assert '"seed": 2' in (root / synth.MARKER_NAME).read_text()


def test_foreign_directory_is_not_replaced(tmp_path):
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "mine.txt").write_text("keep me")
    with pytest.raises(SynthError, match="not a synthetic corpus"):
        build_corpus(tmp_path / "synth", {"train": 1, "dev": 1, "test": 1}, seed=1, sample_rate=16000, workers=1)
    assert (tmp_path / "synth" / "mine.txt").read_text() == "keep me"
