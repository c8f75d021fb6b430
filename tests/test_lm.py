"""ds2.lm: modified Kneser-Ney ARPA models checked against hand-computed values and the properties every
backoff model has; LibriSpeech's official models downloaded and checked."""
import functools
import gzip
import hashlib
import http.server
import random
import threading
from collections import Counter

import pytest

from ds2 import lm
from ds2.config import DEFAULT_OFFICIAL_LM
from ds2.data.wordlist import WORDS

# The hand-computed model below: three sentences, order 2, discounts (D1, D2, D3+) = (0.5, 1.0, 1.5).
TINY = ["A B", "A", "B"]
FIXED = [(0.5, 1.0, 1.5), (0.5, 1.0, 1.5)]
# Unigrams use continuation counts: A follows <s> only (1), B follows A and <s> (2), </s> follows A and B (2);
# total 5, vocabulary A B </s> <unk> (4). gamma() = (0.5 + 1 + 1) / 5 = 0.5.
#   p(A) = (1 - 0.5)/5 + 0.5/4 = 0.225   p(B) = p(</s>) = (2 - 1)/5 + 0.125 = 0.325   p(<unk>) = 0.125
# Bigrams use plain counts: <s> A 2, <s> B 1, A B 1, A </s> 1, B </s> 2.
#   <s>: total 3, gamma = (1 + 0.5)/3 = 0.5: p(A|<s>) = 1/3 + 0.5 * 0.225, p(B|<s>) = 0.5/3 + 0.5 * 0.325
#   A:   total 2, gamma = (0.5 + 0.5)/2 = 0.5: p(B|A) = p(</s>|A) = 0.5/2 + 0.5 * 0.325 = 0.4125
#   B:   total 2, gamma = 1/2 = 0.5:           p(</s>|B) = 1/2 + 0.5 * 0.325 = 0.6625
HAND_COMPUTED = {
    ("A",): 0.225, ("B",): 0.325, ("</s>",): 0.325, ("<unk>",): 0.125,
    ("<s>", "A"): 1 / 3 + 0.1125, ("<s>", "B"): 0.5 / 3 + 0.1625,
    ("A", "B"): 0.4125, ("A", "</s>"): 0.4125, ("B", "</s>"): 0.6625,
}


def random_sentences(count, vocabulary=40, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS[:vocabulary]) for _ in range(rng.randint(1, 8))) for _ in range(count)]


def test_hand_computed_probabilities_and_backoffs():
    model = lm.kneser_ney(TINY, 2, discounts=FIXED)

    listed = {ngram: 10 ** logp for order in model.probabilities for ngram, logp in order.items()}
    assert listed.pop(("<s>",)) == pytest.approx(10 ** lm.LOG10_ZERO)   # <s> is never predicted
    assert listed == pytest.approx(HAND_COMPUTED)
    assert {ngram: 10 ** b for ngram, b in model.backoffs[0].items()} == pytest.approx(
        {("<s>",): 0.5, ("A",): 0.5, ("B",): 0.5})
    # An unseen bigram backs off: p(A | A) = gamma(A) p(A) = 0.5 * 0.225.
    assert 10 ** lm.log10_prob(model, "A", ["A"]) == pytest.approx(0.1125)
    assert 10 ** lm.log10_prob(model, "ZEBRA", ["A"]) == pytest.approx(0.5 * 0.125)   # unknown word


def test_discounts_follow_the_counts_of_counts():
    # Unigrams of a unigram model are counted plainly: 4 words once, 2 twice, 1 three times, 1 four times
    # (each its own sentence, so </s> is counted 15 times and does not change t1..t4).
    # Y = 4 / (4 + 2 * 2) = 0.5;  D1 = 1 - 2 Y 2/4 = 0.5;  D2 = 2 - 3 Y 1/2 = 1.25;  D3+ = 3 - 4 Y 1/1 = 1.
    sentences = ["A", "B", "C", "D"] + ["E", "F"] * 2 + ["G"] * 3 + ["H"] * 4
    model = lm.kneser_ney(sentences, 1)
    assert model.discounts == [pytest.approx((0.5, 1.25, 1.0))]
    assert model.fallback_orders == []


def test_no_ngram_seen_four_times_is_fine():
    # t4 = 0: D3+ = 3 - 4 Y 0 / t3 = 3 (lmplz computes the same).
    assert lm.discounts_from(Counter({1: 4, 2: 2, 3: 1})) == pytest.approx((0.5, 1.25, 3.0))
    assert lm.discounts_from(Counter({1: 4, 2: 2, 4: 1})) is None   # t3 = 0


def test_orders_without_usable_counts_of_counts_fall_back():
    model = lm.kneser_ney(["A B"] * 10, 2)   # every n-gram seen 10 times: t1..t4 are all 0
    assert model.discounts == [lm.FALLBACK_DISCOUNTS, lm.FALLBACK_DISCOUNTS]
    assert model.fallback_orders == [1, 2]
    assert "fallback" in lm.describe(model)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_is_a_probability_distribution(order):
    model = lm.kneser_ney(random_sentences(300), order)
    vocabulary = [ngram[0] for ngram in model.probabilities[0] if ngram != ("<s>",)]
    contexts = [()] + [ngram for n in range(order - 1) for ngram in model.probabilities[n]
                       if ngram[-1] != "</s>"]
    for context in contexts:
        total = sum(10 ** lm.log10_prob(model, word, context) for word in vocabulary)
        assert total == pytest.approx(1.0, abs=1e-9), context


@pytest.mark.parametrize("order", [2, 3])
def test_backoff_weights_give_unseen_words_exactly_the_mass_left(order):
    # b(h) = (1 - sum of p(w | h) over the words seen after h) / (1 - sum of p(w | shorter h) over them)
    model = lm.kneser_ney(random_sentences(300, seed=1), order)
    for n in range(1, order):
        for context, log_backoff in model.backoffs[n - 1].items():
            seen = [ngram[-1] for ngram in model.probabilities[n] if ngram[:-1] == context]
            left = 1 - sum(10 ** lm.log10_prob(model, w, context) for w in seen)
            lower = 1 - sum(10 ** lm.log10_prob(model, w, context[1:]) for w in seen)
            assert 10 ** log_backoff == pytest.approx(left / lower, rel=1e-9), context


def test_higher_orders_fit_the_training_text_better():
    sentences = random_sentences(500, seed=2)
    perplexities = [lm.perplexity(lm.kneser_ney(sentences, order), sentences) for order in (1, 2, 3)]
    assert perplexities[0] > perplexities[1] > perplexities[2]


def test_perplexity_of_the_hand_computed_model():
    # "A B": p(A|<s>) p(B|A) p(</s>|B) = (1/3 + 0.1125) * 0.4125 * 0.6625 over 3 tokens.
    model = lm.kneser_ney(TINY, 2, discounts=FIXED)
    expected = ((1 / 3 + 0.1125) * 0.4125 * 0.6625) ** (-1 / 3)
    assert lm.perplexity(model, ["A B"]) == pytest.approx(expected)


@pytest.mark.parametrize("suffix", [".arpa", ".arpa.gz"])
def test_arpa_file_round_trip(tmp_path, suffix):
    model = lm.kneser_ney(random_sentences(100), 3)
    path = lm.write_arpa(model, tmp_path / f"model{suffix}")
    read = lm.read_arpa(path)

    assert read.order == 3
    for n in range(3):
        assert read.probabilities[n] == pytest.approx(model.probabilities[n], abs=1e-6)
        # Below the highest order every n-gram is written with a backoff weight, 0 when it is no context.
        written = {ngram: 0.0 for ngram in model.probabilities[n]} if n < 2 else {}
        assert read.backoffs[n] == pytest.approx({**written, **model.backoffs[n]}, abs=1e-6)
    assert sorted(lm.arpa_vocabulary(path)) == sorted(model.vocabulary())
    assert not (tmp_path / f"model{suffix}.partial").exists()
    text = path.read_bytes()
    assert text.startswith(b"\\data\\") if suffix == ".arpa" else text[:2] == b"\x1f\x8b"


def test_a_damaged_arpa_file_is_refused(tmp_path):
    path = lm.write_arpa(lm.kneser_ney(TINY, 2), tmp_path / "model.arpa")
    lines = path.read_text().splitlines()
    del lines[lines.index("\\2-grams:") + 1]   # one bigram lost
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(lm.LmError, match="declares"):
        lm.read_arpa(path)
    (tmp_path / "text.txt").write_text("just words\n")
    with pytest.raises(lm.LmError, match="not an ARPA file"):
        lm.read_arpa(tmp_path / "text.txt")


def test_bad_input_is_refused():
    with pytest.raises(lm.LmError, match="reserve"):
        lm.kneser_ney(["A <s> B"], 2)
    with pytest.raises(lm.LmError, match="no words"):
        lm.kneser_ney(["", "  "], 2)
    with pytest.raises(lm.LmError, match="at least 1"):
        lm.kneser_ney(TINY, 0)


def test_kenlm_reads_the_file_as_we_do(tmp_path):
    """The decoder's own KenLM (bundled in flashlight-text) loads the ARPA file and scores every
    word in every context as log10_prob does."""
    dictionary = pytest.importorskip("flashlight.lib.text.dictionary")
    kenlm = pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    model = lm.kneser_ney(random_sentences(200), 3)
    path = lm.write_arpa(model, tmp_path / "model.arpa")
    words = model.vocabulary() + ["</s>", "NOTAWORD"]
    word_dict = dictionary.Dictionary(words)
    ken = kenlm.KenLM(str(path), word_dict)

    for first, second in [(a, b) for a in words[:6] for b in words[:6]]:
        state = ken.start(False)                                   # after <s>
        state, _ = ken.score(state, word_dict.get_index(first))
        state, _ = ken.score(state, word_dict.get_index(second))
        for word in words:
            _, score = ken.score(state, word_dict.get_index(word))
            expected = lm.log10_prob(model, word if word != "NOTAWORD" else "<unk>", ["<s>", first, second])
            assert score == pytest.approx(expected, abs=1e-5), (first, second, word)


# ---------------------------------------------------------------------------------------------
# Official LibriSpeech models


@pytest.fixture
def file_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_official_lm_is_downloaded_and_checked(tmp_path, file_server, monkeypatch):
    served, url = file_server
    content = b"\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\tA\n\n\\end\\\n"
    (served / "3-gram.pruned.1e-7.arpa.gz").write_bytes(content)
    monkeypatch.setitem(lm.OFFICIAL_LM_MD5, "3-gram.pruned.1e-7.arpa.gz", hashlib.md5(content).hexdigest())

    path = lm.download_official_lm("3-gram.pruned.1e-7.arpa.gz", tmp_path / "lm", base_url=url)
    assert path.read_bytes() == content

    (served / "3-gram.pruned.1e-7.arpa.gz").unlink()   # a second call uses the file it has
    assert lm.download_official_lm("3-gram.pruned.1e-7.arpa.gz", tmp_path / "lm", base_url=url) == path


def test_official_lm_with_a_wrong_checksum_is_discarded(tmp_path, file_server, monkeypatch):
    from ds2.data.librispeech import ChecksumError

    served, url = file_server
    (served / "3-gram.arpa.gz").write_bytes(b"not the official file")
    monkeypatch.setitem(lm.OFFICIAL_LM_MD5, "3-gram.arpa.gz", "0" * 32)
    with pytest.raises(ChecksumError):
        lm.download_official_lm("3-gram.arpa.gz", tmp_path / "lm", base_url=url)
    assert not (tmp_path / "lm" / "3-gram.arpa.gz").exists()


def test_unknown_official_lm_is_refused(tmp_path):
    with pytest.raises(lm.LmError, match="choose from"):
        lm.download_official_lm("5-gram.arpa.gz", tmp_path)


def test_official_checksums_are_md5_hex():
    assert all(len(md5) == 32 and int(md5, 16) >= 0 for md5 in lm.OFFICIAL_LM_MD5.values())
    assert DEFAULT_OFFICIAL_LM in lm.OFFICIAL_LM_MD5


def test_a_damaged_arpa_is_one_data_error_naming_the_line(tmp_path):
    from ds2.errors import DataError

    model = lm.kneser_ney(["THE CAT SAT", "THE DOG SAT"], order=2)
    text = lm.write_arpa(model, tmp_path / "good.arpa").read_text()
    for damage, message in [(text.replace("\\2-grams:", "\\3-grams:"), r"line \d+\): expected the \\2-grams: section"),
                            (text.replace("-0.", "-O.", 1), r"line \d+\): probability '-O\.\d+' is not a number"),
                            (text.replace("ngram 1=", "ngram 1=x"), r"line 2\): expected 'ngram N=count'")]:
        (tmp_path / "bad.arpa").write_text(damage)
        with pytest.raises(DataError, match=message):
            lm.read_arpa(tmp_path / "bad.arpa")
    gz = lm.write_arpa(model, tmp_path / "good.arpa.gz").read_bytes()
    (tmp_path / "cut.arpa.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match=r"cut.arpa.gz \(line \d+\): damaged or cut-off gzip data.*; build it again"):
        lm.read_arpa(tmp_path / "cut.arpa.gz")
    with gzip.open(tmp_path / "bomb.arpa.gz", "wb") as bomb:   # 64 MB without a line break, in 64 kB
        for _ in range(64):
            bomb.write(b"A" * (1 << 20))
    with pytest.raises(DataError, match=r"bomb.arpa.gz \(line 1\): a line longer than 65536 characters"):
        lm.read_arpa(tmp_path / "bomb.arpa.gz")
    (tmp_path / "latin1.arpa").write_bytes(text.replace("CAT", "CAT\xe9").encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        lm.read_arpa(tmp_path / "latin1.arpa")
