"""Word n-gram language models in ARPA format: built from transcripts, or LibriSpeech's official ones.

Building: interpolated modified Kneser-Ney (Chen & Goodman 1998, as KenLM's lmplz computes it),
written in plain Python because KenLM's builder, lmplz, is a C++ program with Boost dependencies
that no wheel on the package index ships. It holds every n-gram count in memory: fine for the
transcripts of a training set, not for a billion-word corpus (use the official LibriSpeech
models, or lmplz, for that).

    sentences (upper-case words)  ->  counts per order  ->  adjusted counts  ->  discounts
        ->  interpolated probabilities and backoff weights  ->  ARPA file

The model, for a word w after the context h (the previous order-1 words, fewer at the start):
- The highest order counts n-grams as they occur. A lower order counts, for each n-gram, the
  number of different words seen before it (its continuation count): a word that follows many
  different contexts is a likely continuation of an unseen one. N-grams that start with <s> have
  no word before them and keep their plain counts.
- Three discounts per order, D1, D2, D3+, for n-grams counted once, twice, three or more times,
  come from that order's counts of counts t1..t4:
      Y = t1 / (t1 + 2 t2),  D1 = 1 - 2 Y t2 / t1,  D2 = 2 - 3 Y t3 / t2,  D3+ = 3 - 4 Y t4 / t3.
  A small corpus can lack n-grams seen once, twice or three times (t1, t2 or t3 = 0) or give a
  discount outside [0, k]; then the order uses FALLBACK_DISCOUNTS (lmplz's --discount_fallback
  values), and the build says so. The models equal lmplz's (KenLM 0.3.0, --discount_fallback):
  bench/lm_vs_lmplz.py compares them (docs/language-model.md).
- p(w | h) = (a(hw) - D(a(hw))) / a(h.)  +  gamma(h) p(w | h minus its first word), where a(h.)
  sums a(hv) over the words v seen after h, and gamma(h) = sum of the discounts taken / a(h.) is
  the mass left for the lower order. Unigrams interpolate with the uniform distribution over the
  vocabulary (every word seen, </s> and <unk>).
- An ARPA file lists log10 p(w | h) for every n-gram seen and log10 gamma(h) as the backoff weight
  of every context seen: for an unseen n-gram, p(w | h) = gamma(h) p(w | shorter h) (read_arpa and
  log10_prob below follow that rule, as every ARPA reader does).

LibriSpeech's official models (OpenSLR resource 11) are downloaded, resumed and MD5-checked like
the corpus.
"""
from __future__ import annotations

import gzip
import math
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple, Union

from ds2 import files
from ds2.config import Config
from ds2.errors import DataError, UserError

SENTENCE_START, SENTENCE_END, UNKNOWN = "<s>", "</s>", "<unk>"
# lmplz's --discount_fallback defaults, for orders whose counts of counts give no valid discounts.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
# What ARPA files (and KenLM) write for log10(0): <s> is never predicted.
LOG10_ZERO = -99.0

OPENSLR_LM_URL = "https://www.openslr.org/resources/11"
# MD5 of the official files, as in OpenSLR's resources/11/md5sum.txt. Not fetched from there by us
# (no network when written): quoted by one public project that checks them when it downloads,
# whose values for the corpus archives (resource 12) agree with ds2.data.librispeech.OFFICIAL_MD5.
OFFICIAL_LM_MD5 = {
    "3-gram.pruned.1e-7.arpa.gz": "9a0f1325bcaf3a0f7b7be4be10823c2a",
    "3-gram.pruned.3e-7.arpa.gz": "8f67ec741827742eee05799ab7605b50",
    "3-gram.arpa.gz": "74cbb837e582378c26c602e1c8cbcb9c",
    "4-gram.arpa.gz": "6abdcd5b055bd482e4f9defe91d40408",
    "librispeech-vocab.txt": "bf3cc7a50112831ed8b0afa40cae96a5",
}

Ngram = Tuple[str, ...]


class LmError(UserError, ValueError):
    """An LM that cannot be built or read; the message says why."""


class ArpaError(DataError, LmError):
    """An ARPA file (plain or gzip) that is not one: the file, the line, what is wrong and the fix."""


# An ARPA line is a probability, up to a few words and a backoff weight: far shorter than this.
MAX_ARPA_LINE_CHARS = 1 << 16
# What to do about an ARPA file that cannot be read.
ARPA_FIX = "build it again with ds2 lm (make lm), or give another ARPA file"


@dataclass
class NgramModel:
    """probabilities[n - 1][ngram] = log10 p(last word | the others); backoffs[n - 1][ngram] = log10
    of the weight for words unseen after ngram (absent = 0, i.e. weight 1)."""
    order: int
    probabilities: List[Dict[Ngram, float]]
    backoffs: List[Dict[Ngram, float]]
    discounts: List[Tuple[float, float, float]] = field(default_factory=list)   # per order, D1 D2 D3+
    fallback_orders: List[int] = field(default_factory=list)                    # orders that used the fallback

    def vocabulary(self) -> List[str]:
        """Words the model can predict, in file order, without <s>, </s> and <unk>."""
        return [ngram[0] for ngram in self.probabilities[0] if ngram[0] not in (SENTENCE_START, SENTENCE_END, UNKNOWN)]


# ---------------------------------------------------------------------------------------------
# Building


def sentence_tokens(sentence: str) -> List[str]:
    words = sentence.split()
    for marker in (SENTENCE_START, SENTENCE_END, UNKNOWN):
        if marker in words:
            raise LmError(f"a sentence contains {marker!r}, which ARPA files reserve: {sentence!r}")
    return [SENTENCE_START] + words + [SENTENCE_END]


def count_ngrams(sentences: Iterable[str], order: int) -> List[Counter]:
    """counts[n - 1][ngram]: how often each n-gram, n = 1..order, occurs in the padded sentences."""
    if order < 1:
        raise LmError(f"the order of an n-gram model is at least 1, got {order}")
    counts: List[Counter] = [Counter() for _ in range(order)]
    for sentence in sentences:
        tokens = sentence_tokens(sentence)
        if len(tokens) == 2:
            continue   # an empty transcript says nothing about words
        for n in range(1, order + 1):
            ngrams = counts[n - 1]
            for start in range(len(tokens) - n + 1):
                ngrams[tuple(tokens[start:start + n])] += 1
    if not counts[0]:
        raise LmError("no words to build a language model from")
    return counts


def adjusted_counts(counts: List[Counter]) -> List[Counter]:
    """Kneser-Ney counts: the highest order as counted; below it, each n-gram's number of distinct
    left neighbours, except n-grams that start with <s> (nothing can precede them)."""
    order = len(counts)
    adjusted = [Counter() for _ in range(order)]
    adjusted[order - 1] = Counter(counts[order - 1])
    for n in range(order - 1, 0, -1):
        left_neighbours = adjusted[n - 1]
        for longer in counts[n]:
            left_neighbours[longer[1:]] += 1
        for ngram, count in counts[n - 1].items():
            if ngram[0] == SENTENCE_START:
                left_neighbours[ngram] = count
    # The unigram <s> is never predicted: it takes no part in the unigram distribution.
    adjusted[0].pop((SENTENCE_START,), None)
    return adjusted


def discounts_from(count_of_counts: Counter) -> Optional[Tuple[float, float, float]]:
    """(D1, D2, D3+) from the counts of counts t1..t4, or None when they give no valid discounts."""
    t1, t2, t3, t4 = (count_of_counts[k] for k in (1, 2, 3, 4))
    if min(t1, t2, t3) == 0:   # t4 = 0 is fine: D3+ = 3 (lmplz agrees)
        return None
    y = t1 / (t1 + 2 * t2)
    discounts = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
    if any(not 0 <= d <= k for k, d in zip((1, 2, 3), discounts)):
        return None
    return discounts


def _discount(discounts: Tuple[float, float, float], count: int) -> float:
    return discounts[min(count, 3) - 1]


def kneser_ney(sentences: Iterable[str], order: int,
               discounts: Optional[Sequence[Tuple[float, float, float]]] = None) -> NgramModel:
    """Interpolated modified Kneser-Ney model of order `order`; `discounts` (one triple per order,
    lowest first) replaces the estimated ones."""
    adjusted = adjusted_counts(count_ngrams(sentences, order))
    model = NgramModel(order, [dict() for _ in range(order)], [dict() for _ in range(order)])
    for n in range(1, order + 1):
        if discounts is not None:
            chosen = tuple(discounts[n - 1])
        else:
            chosen = discounts_from(Counter(adjusted[n - 1].values()))
            if chosen is None:
                chosen = FALLBACK_DISCOUNTS
                model.fallback_orders.append(n)
        model.discounts.append(chosen)

    vocabulary_size = len(adjusted[0]) + 1   # the words and </s> (<s> is not predicted), and <unk>
    lower: Dict[Ngram, float] = {}   # the previous order's probabilities (not logarithms)
    for n in range(1, order + 1):
        d = model.discounts[n - 1]
        by_context: Dict[Ngram, List[Tuple[str, int]]] = defaultdict(list)
        for ngram, count in adjusted[n - 1].items():
            by_context[ngram[:-1]].append((ngram[-1], count))
        probabilities: Dict[Ngram, float] = {}
        for context, followers in by_context.items():
            total = sum(count for _, count in followers)
            left_over = sum(_discount(d, count) for _, count in followers) / total   # gamma(context)
            for word, count in followers:
                shorter = 1.0 / vocabulary_size if n == 1 else lower[context[1:] + (word,)]
                probabilities[context + (word,)] = (count - _discount(d, count)) / total + left_over * shorter
            if n == 1:
                probabilities[(UNKNOWN,)] = left_over / vocabulary_size
            else:
                model.backoffs[n - 2][context] = _log10(left_over)
        model.probabilities[n - 1] = {ngram: _log10(p) for ngram, p in probabilities.items()}
        lower = probabilities
    # <s> starts every sentence and is never predicted; it is listed for its backoff weight.
    model.probabilities[0][(SENTENCE_START,)] = LOG10_ZERO
    return model


def _log10(p: float) -> float:
    return math.log10(p) if p > 0 else LOG10_ZERO


# ---------------------------------------------------------------------------------------------
# ARPA files


def write_arpa(model: NgramModel, path: Union[str, Path]) -> Path:
    """Write model as an ARPA file (gzip-compressed if path ends in .gz), n-grams sorted."""
    path = Path(path)
    # KenLM's query code needs at least two orders: a unigram model gets an empty bigram section.
    orders = max(model.order, 2)
    probabilities = model.probabilities + [{}] * (orders - model.order)
    backoffs = model.backoffs + [{}] * (orders - model.order)

    def write(target: Path) -> None:
        with _open_text(target, "w") as out:
            out.write("\\data\\\n")
            for n in range(1, orders + 1):
                out.write(f"ngram {n}={len(probabilities[n - 1])}\n")
            for n in range(1, orders + 1):
                out.write(f"\n\\{n}-grams:\n")
                for ngram in sorted(probabilities[n - 1]):
                    line = f"{probabilities[n - 1][ngram]:.7f}\t{' '.join(ngram)}"
                    if n < orders:   # every lower-order n-gram gets a backoff weight, 0 (weight 1) if no context, as lmplz writes
                        line += f"\t{backoffs[n - 1].get(ngram, 0.0):.7f}"
                    out.write(line + "\n")
            out.write("\n\\end\\\n")

    return files.write_with(path, write)


def _open_text(path: Union[str, Path], mode: str) -> TextIO:
    if str(path).endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def read_arpa(path: Union[str, Path], max_order: Optional[int] = None,
              words: Optional[AbstractSet[str]] = None) -> NgramModel:
    """The n-grams of an ARPA file (.gz read as it is), up to max_order; with `words`, only the
    n-grams made of those words (and <s>, </s>, <unk>): all that scoring text of those words needs,
    so LibriSpeech's large models fit in memory for a perplexity. ArpaError on anything else."""
    kept = None if words is None else set(words) | {SENTENCE_START, SENTENCE_END, UNKNOWN}
    probabilities: List[Dict[Ngram, float]] = []
    backoffs: List[Dict[Ngram, float]] = []
    declared: List[int] = []
    number = 0
    try:
        with _open_text(path, "r") as lines:
            # Lines are read with a bound, so a file without line breaks (a gzip bomb) is not read whole.
            for number, line in enumerate(iter(lambda: lines.readline(MAX_ARPA_LINE_CHARS + 1), ""), 1):
                if len(line) > MAX_ARPA_LINE_CHARS:
                    raise ArpaError(None, f"a line longer than {MAX_ARPA_LINE_CHARS} characters")
                if _read_arpa_line(line.strip(), max_order, kept, declared, probabilities, backoffs) == "end":
                    break
    except ArpaError as exc:
        raise ArpaError(path, exc.problem, ARPA_FIX, place=f"line {number}") from None
    except UnicodeDecodeError as exc:
        raise ArpaError(path, f"not UTF-8 text ({exc.reason})", ARPA_FIX, place=f"line {number + 1}") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArpaError(path, f"damaged or cut-off gzip data ({exc})", ARPA_FIX, place=f"line {number + 1}") from None
    if not probabilities:
        raise ArpaError(path, "not an ARPA file: no \\1-grams: section", ARPA_FIX)
    for n, (expected, found) in enumerate(zip(declared, probabilities), 1):
        if expected != len(found) and kept is None:
            raise ArpaError(path, f"the header declares {expected} {n}-grams, the file lists {len(found)} "
                                  f"(cut off?)", ARPA_FIX)
    return NgramModel(len(probabilities), probabilities, backoffs)


def _arpa_number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ArpaError(None, f"{what} {text!r} is not a number") from None
    if math.isnan(value) or value == math.inf:
        raise ArpaError(None, f"{what} {text!r} is not a log10 value")
    return value


def _read_arpa_line(line: str, max_order: Optional[int], kept: Optional[AbstractSet[str]], declared: List[int],
                    probabilities: List[Dict[Ngram, float]], backoffs: List[Dict[Ngram, float]]) -> str:
    """Take one stripped line of an ARPA file into the lists; "end" when reading should stop. ArpaError
    (without the file: read_arpa adds it) when the line cannot be where it is."""
    section = len(probabilities)
    if not line:
        return ""
    if line.startswith("ngram ") and section == 0:
        count = line.split("=", 1)[-1].strip()
        if not count.isdigit():
            raise ArpaError(None, f"expected 'ngram N=count', got {line[:80]!r}")
        declared.append(int(count))
    elif line.endswith("-grams:") and line.startswith("\\"):
        order = line[1:-len("-grams:")]
        if not order.isdigit() or int(order) != section + 1:
            raise ArpaError(None, f"expected the \\{section + 1}-grams: section, got {line[:80]!r}")
        if max_order is not None and int(order) > max_order:
            return "end"
        probabilities.append({})
        backoffs.append({})
    elif line == "\\end\\":
        return "end"
    elif section > 0:
        fields = line.split()
        if len(fields) not in (section + 1, section + 2):
            raise ArpaError(None, f"expected a {section}-gram line, got {line[:80]!r}")
        ngram = tuple(fields[1:section + 1])
        if kept is not None and not kept.issuperset(ngram):
            return ""
        probabilities[-1][ngram] = _arpa_number(fields[0], "probability")
        if len(fields) == section + 2:
            backoffs[-1][ngram] = _arpa_number(fields[-1], "backoff weight")
    return ""


def arpa_vocabulary(path: Union[str, Path]) -> List[str]:
    """The words of an ARPA file (its unigrams, without <s>, </s>, <unk>): a decoder's lexicon.
    Reads only the unigram section, so it is quick on LibriSpeech's large models too."""
    return read_arpa(path, max_order=1).vocabulary()


def log10_prob(model: NgramModel, word: str, context: Sequence[str] = ()) -> float:
    """log10 p(word | context) by the ARPA backoff rule (context: the preceding words, oldest first)."""
    context = tuple(context)[-(model.order - 1):] if model.order > 1 else ()
    backoff_sum = 0.0
    while True:
        ngram = context + (word,)
        probability = model.probabilities[len(ngram) - 1].get(ngram)
        if probability is not None:
            return backoff_sum + probability
        if not context:
            return backoff_sum + model.probabilities[0].get((UNKNOWN,), LOG10_ZERO)
        backoff_sum += model.backoffs[len(context) - 1].get(context, 0.0)
        context = context[1:]


def perplexity(model: NgramModel, sentences: Iterable[str]) -> float:
    """10 ** (-mean log10 p) over every word and sentence end of sentences: how many words the
    model hesitates between on average (a uniform model over V words and </s>: V + 1)."""
    total, count = 0.0, 0
    for sentence in sentences:
        tokens = sentence_tokens(sentence)
        for i in range(1, len(tokens)):
            total += log10_prob(model, tokens[i], tokens[:i])
            count += 1
    if count == 0:
        raise LmError("no sentences to measure perplexity on")
    return 10 ** (-total / count)


def perplexity_of_file(path: Union[str, Path], sentences: Sequence[str]) -> Tuple[float, int, int]:
    """(perplexity of the ARPA file at path on sentences, words of the sentences it does not know,
    words in all); reads only the n-grams those sentences can use."""
    words = [word for sentence in sentences for word in sentence.split()]
    model = read_arpa(path, words=set(words))
    known = {ngram[0] for ngram in model.probabilities[0]}
    return perplexity(model, sentences), sum(word not in known for word in words), len(words)


def build_arpa(sentences: Iterable[str], order: int, path: Union[str, Path]) -> NgramModel:
    """kneser_ney then write_arpa: the model written to path, returned for its summary."""
    model = kneser_ney(sentences, order)
    write_arpa(model, path)
    return model


def describe(model: NgramModel) -> str:
    """One line per order: n-gram count, discounts, and whether they fell back."""
    lines = []
    for n in range(1, model.order + 1):
        d1, d2, d3 = model.discounts[n - 1] if model.discounts else (float("nan"),) * 3
        note = " (fallback: too few n-grams seen 1-4 times to estimate them)" if n in model.fallback_orders else ""
        lines.append(f"  {n}-grams: {len(model.probabilities[n - 1])}, discounts {d1:.3f} {d2:.3f} {d3:.3f}{note}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# LibriSpeech's official models


def lm_dir(cfg: Config) -> Path:
    """Where `ds2 lm` writes: beside the corpus, since an LM is made from its transcripts (or for it)."""
    return Path(cfg.data.data_dir) / "lm"


def lm_path_for(cfg: Config) -> Path:
    """The LM `ds2 lm` writes for cfg, and `ds2 tune-lm` tunes unless told another."""
    if cfg.lm.official:
        return lm_dir(cfg) / cfg.lm.official
    return lm_dir(cfg) / f"train-{cfg.lm.order}gram.arpa"


def official_lm_url(cfg: Config) -> str:
    """lm.url, or the corpus mirror's resource 11 (LibriSpeech's LMs) beside its resource 12 (the corpus)."""
    if cfg.lm.url:
        return cfg.lm.url
    corpus = cfg.data.librispeech_url.rstrip("/")
    if corpus.endswith("/12"):
        return corpus[:-len("12")] + "11"
    raise LmError(f"cannot tell where the official LMs are from data.librispeech_url={cfg.data.librispeech_url} "
                  f"(it does not end in /resources/12); set lm.url to the folder that holds {cfg.lm.official}")


def download_official_lm(name: str, dest_dir: Union[str, Path], base_url: str = OPENSLR_LM_URL,
                         md5: str = "") -> Path:
    """dest_dir/name: found there, or downloaded (resuming a partial download) and checked against
    md5, or OFFICIAL_LM_MD5's entry for name when md5 is empty."""
    from ds2.data.librispeech import download

    if name not in OFFICIAL_LM_MD5 and not md5:
        raise LmError(f"unknown official LibriSpeech LM {name!r}; choose from {', '.join(OFFICIAL_LM_MD5)} "
                      f"(or give its MD5 in lm.md5)")
    dest = Path(dest_dir) / name
    if dest.is_file():
        return dest
    return download(f"{base_url.rstrip('/')}/{name}", dest, md5 or OFFICIAL_LM_MD5[name], mirror_setting="lm.url")
