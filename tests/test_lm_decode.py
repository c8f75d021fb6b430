"""ds2.lm_decode: LM beam search reads what the acoustics and the language model say together, alpha and
beta weigh them, tune() picks the pair with the lowest WER, and settings live beside the checkpoint."""
import json

import numpy as np
import pytest

from ds2 import lm, lm_decode
from ds2.errors import DataError
from ds2.decode import greedy_decode
from tests.helpers import label_frames

pytest.importorskip("flashlight.lib.text.decoder.kenlm")

LABELS = "_'ABCDEFGHIJKLMNOPQRSTUVWXYZ "


def frames(*spec):
    return label_frames(LABELS, *spec)


@pytest.fixture(scope="module")
def arpa(tmp_path_factory):
    """A bigram model in which CAT follows THE (and ends a sentence) far more often than COT does."""
    path = tmp_path_factory.mktemp("lm") / "test.arpa"
    lm.build_arpa(["THE CAT"] * 20 + ["THE COT"] * 2 + ["A DOG SAT"] * 5 + ["A B"] * 3 + ["AB"], 2, path)
    return path


def test_clear_speech_is_read_word_for_word(arpa):
    decoder = lm_decode.LmDecoder(LABELS, arpa, alpha=0.5, beta=1.0)
    assert decoder(frames(*list("THE DOG SAT"))) == "THE DOG SAT"
    assert decoder(np.zeros((0, len(LABELS)), np.float32)) == ""


def test_only_words_of_the_lexicon_come_out(arpa):
    # The acoustics prefer K to C; KAT is no word of the LM, CAT is.
    log_probs = frames(*list("THE "), {"K": 0.6, "C": 0.4}, *list("AT"))
    assert greedy_decode(log_probs, len(log_probs), LABELS) == "THE KAT"
    assert lm_decode.LmDecoder(LABELS, arpa, alpha=0.0, beta=0.0)(log_probs) == "THE CAT"


def test_alpha_weighs_the_language_model_against_the_acoustics(arpa):
    # The acoustics slightly prefer O (COT), the LM strongly prefers CAT after THE.
    log_probs = frames(*list("THE C"), {"O": 0.55, "A": 0.45}, "T")
    assert lm_decode.LmDecoder(LABELS, arpa, alpha=0.0, beta=0.0)(log_probs) == "THE COT"
    assert lm_decode.LmDecoder(LABELS, arpa, alpha=2.0, beta=0.0)(log_probs) == "THE CAT"


def test_beta_rewards_each_word(arpa):
    # A space is slightly less likely than a blank between A and B: AB, unless each word earns a bonus.
    log_probs = frames("A", {" ": 0.45, "_": 0.55}, "B")
    assert lm_decode.LmDecoder(LABELS, arpa, alpha=0.0, beta=-2.0)(log_probs) == "AB"
    assert lm_decode.LmDecoder(LABELS, arpa, alpha=0.0, beta=2.0)(log_probs) == "A B"


def test_words_end_at_a_space(arpa):
    # THE and CAT are words, THECAT is not: without a space the decoder cannot split them.
    assert lm_decode.LmDecoder(LABELS, arpa, alpha=0.5, beta=1.0)(frames(*list("THE CAT"))) == "THE CAT"
    assert lm_decode.LmDecoder(LABELS, arpa, alpha=0.5, beta=1.0)(frames(*list("THECAT"))) != "THE CAT"


def test_with_weights_shares_the_lm_and_changes_only_the_weights(arpa):
    log_probs = frames(*list("THE C"), {"O": 0.55, "A": 0.45}, "T")
    base = lm_decode.LmDecoder(LABELS, arpa, alpha=0.0, beta=0.0)
    heavier = base.with_weights(2.0, 0.0)
    assert heavier.lm is base.lm and heavier.trie is base.trie
    assert (base(log_probs), heavier(log_probs)) == ("THE COT", "THE CAT")


def test_tune_picks_the_pair_with_the_lowest_wer(arpa):
    log_probs = [frames(*list("THE C"), {"O": 0.55, "A": 0.45}, "T"), frames(*list("A DOG SAT"))]
    result = lm_decode.tune(log_probs, ["THE CAT", "A DOG SAT"], LABELS, arpa, alphas=(0.0, 2.0), betas=(0.0, 1.0))

    assert len(result.table) == 4
    assert result.alpha == 2.0 and result.beta == 0.0 and result.wer == 0.0   # ties: the smaller beta
    assert {(a, b): wer for a, b, wer, _ in result.table}[(0.0, 0.0)] == pytest.approx(1 / 5)


def test_words_the_labels_cannot_spell_are_left_out(tmp_path):
    lm.build_arpa(["THE CAT", "THE 2ND CAT", "naïve"], 1, tmp_path / "mixed.arpa")
    assert lm_decode.LmDecoder(LABELS, tmp_path / "mixed.arpa").skipped_words == 2
    lm.build_arpa(["lower case words"], 1, tmp_path / "lower.arpa")
    with pytest.raises(lm_decode.LmDecodeError, match="none of its 3 words"):
        lm_decode.LmDecoder(LABELS, tmp_path / "lower.arpa")
    with pytest.raises(lm_decode.LmDecodeError, match="no language model"):
        lm_decode.LmDecoder(LABELS, tmp_path / "missing.arpa")


def test_settings_live_beside_the_checkpoint(tmp_path):
    checkpoint = tmp_path / "runs" / "small" / "checkpoints" / "best.ckpt"
    checkpoint.parent.mkdir(parents=True)
    assert lm_decode.load_settings(checkpoint) is None
    settings = lm_decode.LmSettings(lm_path=str(tmp_path / "runs" / "data" / "lm" / "train-1gram.arpa"),
                                    alpha=0.75, beta=2.0, beam=32)
    path = lm_decode.save_settings(checkpoint, settings, {"dev_wer": 0.08})
    assert path == checkpoint.parent / "best.ckpt.lm.json"
    assert lm_decode.load_settings(checkpoint) == settings
    assert lm_decode.settings_details(checkpoint)["dev_wer"] == 0.08

    # The LM's path is kept relative to the settings file: the runs folder can move with its LM.
    assert json.loads(path.read_text())["lm_path"] == "../../data/lm/train-1gram.arpa"
    (tmp_path / "runs").rename(tmp_path / "moved")
    moved = lm_decode.load_settings(tmp_path / "moved" / "small" / "checkpoints" / "best.ckpt")
    assert moved.lm_path == str(tmp_path / "moved" / "data" / "lm" / "train-1gram.arpa")

    path = lm_decode.settings_path(tmp_path / "moved" / "small" / "checkpoints" / "best.ckpt")
    moved_checkpoint = tmp_path / "moved" / "small" / "checkpoints" / "best.ckpt"
    for damaged in ['{"alpha": "much"}', 'not json', '{"lm_path": "a.arpa", "alpha": NaN, "beta": 1}', "[]",
                    '{"lm_path": "a.arpa", "alpha": 1' + '0' * 400 + ', "beta": 1, "beam": 8}',
                    b'{"lm_path": "\xff.arpa", "alpha": 1, "beta": 1}']:
        path.write_bytes(damaged if isinstance(damaged, bytes) else damaged.encode())
        with pytest.raises(DataError, match=r"best.ckpt.lm.json: not a tuned-LM settings file .*; remove it, or run "
                                            r"ds2 tune-lm again"):
            lm_decode.load_settings(moved_checkpoint)


def test_loading_the_lm_writes_nothing_to_stderr(arpa, capfd):
    lm_decode.LmDecoder(LABELS, arpa)
    assert capfd.readouterr().err == ""   # KenLM's "Loading the LM ..." and its star bar are discarded
    with pytest.raises(DataError, match="bad.arpa: KenLM could not load it: This ngram implementation assumes at "
                                        "least a bigram model. Byte: 18; build it again"):
        bad = arpa.parent / "bad.arpa"
        bad.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\tA\n\n\\end\\\n")
        lm_decode.LmDecoder(LABELS, bad, vocabulary=["A"])


def test_log_probs_round_trip(tmp_path):
    log_probs = [frames("A"), frames(*list("THE CAT"))]
    path = lm_decode.save_log_probs(tmp_path / "dev.npz", log_probs, ["A", "THE CAT"], ["u1", "u2"], LABELS)
    loaded = lm_decode.load_log_probs(path)
    assert loaded["references"] == ["A", "THE CAT"] and loaded["ids"] == ["u1", "u2"] and loaded["labels"] == LABELS
    for ours, theirs in zip(loaded["log_probs"], log_probs):
        np.testing.assert_array_equal(ours, theirs)
