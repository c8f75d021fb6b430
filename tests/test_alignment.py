"""CTC forced alignment: it finds the frames a transcript's labels sit on, and word times follow."""
import numpy as np

from ds2.alignment import align, path_log_prob, word_times
from ds2.decode import greedy_decode
from ds2.text import encode

from .serving_helpers import LABELS, path_log_probs, spelled


def test_align_recovers_the_frames_of_every_label():
    path, spans = spelled("HI THERE")
    log_probs = path_log_probs(path)
    assert greedy_decode(log_probs, len(log_probs), LABELS) == "HI THERE"
    assert align(log_probs, encode("HI THERE", LABELS)) == spans


def test_align_keeps_doubled_letters_apart():
    # "LL" needs a blank between the two L's; the path has one, and each L keeps its own frames.
    path, spans = spelled("ALL", frames_per_label=1, gap=1)
    assert align(path_log_probs(path), encode("ALL", LABELS)) == spans


def test_align_follows_the_transcript_not_the_best_path():
    # The best path spells "CAT"; aligning "CAR" still places R, on the frames where T was best.
    path, spans = spelled("CAT")
    aligned = align(path_log_probs(path), encode("CAR", LABELS))
    assert aligned[:2] == spans[:2] and aligned[2][0] >= spans[1][1] + 1


def test_align_says_when_the_labels_cannot_fit():
    assert align(path_log_probs([0, 0]), encode("ABC", LABELS)) is None
    assert align(path_log_probs([0, 0]), encode("AA", LABELS)) is None   # needs A, blank, A
    assert align(path_log_probs([0, 0, 0]), encode("AA", LABELS)) == [(0, 0), (2, 2)]
    assert align(path_log_probs([0, 0]), []) == []


def test_word_times_span_first_to_last_letter():
    path, spans = spelled("HI THERE", frames_per_label=2, gap=1, lead=3)
    words = word_times("HI THERE", spans, frame_seconds=0.04)
    assert [w.word for w in words] == ["HI", "THERE"]
    assert words[0].start == round(3 * 0.04, 3) and words[0].end == round((spans[1][1] + 1) * 0.04, 3)
    assert words[1].start == round(spans[3][0] * 0.04, 3) and words[1].end == round((spans[-1][1] + 1) * 0.04, 3)


def test_path_log_prob_is_the_mean_over_the_frames_asked():
    path, spans = spelled("A", frames_per_label=2, gap=0, lead=1)
    log_probs = path_log_probs(path)
    targets = encode("A", LABELS)
    expected = np.mean([log_probs[t, label] for t, label in enumerate(path)])
    assert abs(path_log_prob(log_probs, spans, targets, 0, len(path) - 1) - expected) < 1e-6
