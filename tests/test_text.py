from collections import Counter

import pytest

from ds2.config import DEFAULT_LABELS
from ds2.text import (check_labels, decode, describe_chars, encode, label_index, min_ctc_frames,
                      normalize_transcript, out_of_label_chars)


def test_normalize_upper_cases_and_collapses_whitespace():
    assert normalize_transcript("  don't\tStop \n me now ") == "DON'T STOP ME NOW"


def test_normalize_keeps_other_characters_for_the_report():
    assert normalize_transcript("café, 2 cats!") == "CAFÉ, 2 CATS!"


def test_out_of_label_chars_counts_each_character():
    assert out_of_label_chars("CAFÉ, 2 CATS!!", DEFAULT_LABELS) == Counter({"É": 1, ",": 1, "2": 1, "!": 2})
    assert out_of_label_chars("IT'S FINE", DEFAULT_LABELS) == Counter()


def test_blank_is_not_a_transcript_character():
    assert out_of_label_chars("A_B", DEFAULT_LABELS) == Counter({"_": 1})


def test_encode_decode_round_trip():
    indices = encode("IT'S A CAT", DEFAULT_LABELS)
    assert indices[:4] == [DEFAULT_LABELS.index("I"), DEFAULT_LABELS.index("T"), 1, DEFAULT_LABELS.index("S")]
    assert 0 not in indices
    assert decode(indices, DEFAULT_LABELS) == "IT'S A CAT"


def test_encode_names_every_unknown_character():
    with pytest.raises(ValueError) as error:
        encode("HI! 42", DEFAULT_LABELS)
    message = str(error.value)
    assert "'!' x1" in message and "'4' x1" in message and "'2' x1" in message


def test_decode_drops_blanks():
    assert decode([0, 3, 0, 0, 4], DEFAULT_LABELS) == "BC"


def test_min_ctc_frames_adds_one_blank_per_adjacent_repeat():
    assert min_ctc_frames(encode("CAT", DEFAULT_LABELS)) == 3
    assert min_ctc_frames(encode("HELLO", DEFAULT_LABELS)) == 6       # LL
    assert min_ctc_frames(encode("AAA", DEFAULT_LABELS)) == 5         # A_A_A
    assert min_ctc_frames([]) == 0


@pytest.mark.parametrize("labels, problem", [("'AB ", "blank"), ("_AB", "space"), ("_AAB ", "duplicates")])
def test_check_labels_rejects_bad_label_strings(labels, problem):
    with pytest.raises(ValueError, match=problem):
        check_labels(labels)


def test_label_index_excludes_blank():
    index = label_index(DEFAULT_LABELS)
    assert "_" not in index and index[" "] == len(DEFAULT_LABELS) - 1


def test_describe_chars():
    assert describe_chars(Counter({"!": 2, "1": 1})) == "3 chars: '!' x2, '1' x1"
