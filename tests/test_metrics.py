import pytest

from ds2.metrics import char_edits, corpus_cer, corpus_wer, error_rates, read_metrics_log, word_edits


def test_word_edits_hand_worked():
    # THE CAT SAT -> THE BAT SAT ON: substitute CAT->BAT, insert ON
    assert word_edits("THE CAT SAT", "THE BAT SAT ON") == 2
    assert word_edits("HELLO WORLD", "HELLO") == 1               # delete WORLD
    assert word_edits("A AB", "AB A") == 2                         # two substitutions, whole words
    assert word_edits("A B C", "A B C") == 0
    assert word_edits("A B", "") == 2


def test_char_edits_ignore_spaces():
    # THECATSAT -> THEBATSATON: substitute C->B, insert O, N
    assert char_edits("THE CAT SAT", "THE BAT SAT ON") == 3
    assert char_edits("HELLO WORLD", "HELLOWORLD") == 0
    assert char_edits("HELLO WORLD", "HELLO") == 5


def test_corpus_rates_sum_edits_over_the_corpus():
    references = ["THE CAT SAT", "HELLO WORLD"]
    hypotheses = ["THE BAT SAT ON", "HELLO"]
    rates = error_rates(references, hypotheses)
    # words: (2 + 1) / (3 + 2); chars: (3 + 5) / (9 + 10)
    assert (rates.word_edits, rates.words, rates.char_edits, rates.chars) == (3, 5, 8, 19)
    assert rates.wer == pytest.approx(0.6)                 # not the mean of 2/3 and 1/2
    assert rates.cer == pytest.approx(8 / 19)
    assert [u.word_edits for u in rates.per_utterance] == [2, 1]
    assert corpus_wer(references, hypotheses) == pytest.approx(0.6)
    assert corpus_cer(references, hypotheses) == pytest.approx(8 / 19)


def test_many_distinct_words():
    reference = " ".join(f"W{i}" for i in range(3000))
    assert word_edits(reference, reference.replace("W7 ", "X ")) == 1


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 references but 1"):
        error_rates(["A", "B"], ["A"])
    with pytest.raises(ValueError, match="empty"):
        error_rates([""], ["A"])


def test_a_bad_line_in_metrics_jsonl_is_skipped_and_named_and_later_records_are_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"kind": "train", "step": 1, "loss": 2.0}\n'
                     b'{"kind": "train", "st\n'                                  # cut off by a kill
                     b'{"kind": "train", "step": 2, "loss": NaN, "lr": Infinity}\n'
                     b'{"kind": "dev", "step": 2, "dev_cer": 0.5, "dev_wer": NaN}\n'
                     b'{"kind": "train", "step": 3, "note": "\xff"}\n'
                     b'[1, 2]\n'
                     b'{"kind": "dev", "step": 3, "dev_cer": 1' + b'0' * 400 + b', "dev_wer": 0.5}\n'
                     b'{"kind": "train", "step": 4, "loss": 1.0}\n')
    records, skipped = read_metrics_log(path)
    assert [r["step"] for r in records] == [1, 2, 4]
    assert records[1]["loss"] is None and records[1]["lr"] is None
    assert skipped == ["line 2: not JSON", "line 4: dev_wer is not a finite number", "line 5: not UTF-8",
                       "line 6: not a JSON object", "line 7: dev_cer is not a finite number"]
