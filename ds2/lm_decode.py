"""CTC beam search with a word n-gram language model: flashlight-text's compiled lexicon decoder + KenLM.

    decoder = LmDecoder(labels, "runs/small/lm/train-2gram.arpa", alpha=0.5, beta=1.0, beam=64)
    text = decoder(log_probs)            # log_probs: [frames, labels], natural log, one utterance

The decoder is flashlight-text's LexiconDecoder (the decoder behind torchaudio's ctc_decoder, C++,
with KenLM bundled in its wheel). It searches label sequences that spell words of a lexicon,
here every word of the LM's vocabulary written in the model's labels, and scores a hypothesis as

    acoustic log-probability  +  alpha * log10 p_LM(words)  +  beta * number of words

(alpha and beta are the LM weight and word bonus; the LM scores are KenLM's log10, as in torchaudio).
The lexicon is a trie of spellings, each node holding the best LM unigram score of the words
below it, so a partial word is already weighed by the LM. Every spelling ends in the labels'
space, so a word ends where the model emits a space (spaces and blanks between words are free),
and one certain space frame appended to the utterance ends its last word. (Measured on the
embedded corpus, letting words end without a space gave the same test WER and twice the CER.)
A word outside the LM's vocabulary cannot be produced: the vocabulary is the closed set of words
the decoder knows.

Choosing alpha and beta: `tune` decodes a set's log-probabilities for each pair of a grid and
keeps the pair with the lowest WER; `save_settings` stores it beside the checkpoint, where
`load_settings` finds it.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ds2 import files
from ds2.errors import DataError, UserError, first_line
from ds2.text import BLANK, check_labels

# Decoder defaults. beam: hypotheses kept per frame; token_beam: labels tried per frame (the most
# likely ones); beam_threshold: hypotheses further than this below the best (in log-probability)
# are dropped. Chosen on the embedded corpus (docs/language-model.md): WER stops
# improving at 16-32 beams, and a threshold of 10 instead of 25 decoded about 10x faster there.
DEFAULT_BEAM = 64
DEFAULT_TOKEN_BEAM = 8
DEFAULT_BEAM_THRESHOLD = 10.0
DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 1.0
UNKNOWN_WORD = "<unk>"
IMPOSSIBLE = -1e9   # log-probability of the labels other than the space in the final frame
SETTINGS_SUFFIX = ".lm.json"   # best.ckpt -> best.ckpt.lm.json


class LmDecodeError(UserError, ValueError):
    """A decoder that cannot be built (no flashlight-text, no usable LM, labels without a space)."""


@dataclass(frozen=True)
class LmSettings:
    """What a tuned decoder needs besides the labels: stored next to a checkpoint."""
    lm_path: str
    alpha: float
    beta: float
    beam: int = DEFAULT_BEAM


def _flashlight():
    try:
        from flashlight.lib.text import decoder, dictionary
        from flashlight.lib.text.decoder.kenlm import KenLM
    except ImportError as exc:
        raise LmDecodeError(f"LM beam search needs flashlight-text with KenLM, which does not import here "
                            f"({first_line(exc)}); python -m envcheck --stage eval says why (the ds2 images have "
                            f"it), or decode without an LM: --no-lm") from None
    return decoder, dictionary, KenLM


@contextlib.contextmanager
def _quiet_stderr():
    """Discard what C++ code writes to file descriptor 2 meanwhile. KenLM writes "Loading the LM
    will be faster if you build a binary file", the file name and a 100-star bar at every load, and
    its errors come back as exceptions anyway."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def kenlm_reason(exc: BaseException) -> str:
    """What KenLM says is wrong, without the C++ location and signature it puts first ("... threw
    FormatLoadException.")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[1:]) if len(lines) > 1 and " threw " in lines[0] else first_line(exc)


class LmDecoder:
    """One loaded LM and lexicon; call it on an utterance's log-probabilities. Not thread-safe
    (the compiled decoder keeps its search state): use one per process."""

    def __init__(self, labels: str, lm_path: Union[str, Path], alpha: float = DEFAULT_ALPHA,
                 beta: float = DEFAULT_BETA, beam: int = DEFAULT_BEAM, token_beam: int = DEFAULT_TOKEN_BEAM,
                 beam_threshold: float = DEFAULT_BEAM_THRESHOLD, vocabulary: Optional[Sequence[str]] = None):
        from ds2.lm import ARPA_FIX, ArpaError, arpa_vocabulary

        check_labels(labels)
        fl_decoder, fl_dictionary, KenLM = _flashlight()
        lm_path = Path(lm_path)
        if not lm_path.is_file():
            raise LmDecodeError(f"no language model at {lm_path}")
        self.labels = labels
        self.space = labels.index(" ")
        words = list(vocabulary) if vocabulary is not None else arpa_vocabulary(lm_path)
        spellable = [w for w in words if w and all(c in labels[1:] and c != " " for c in w)]
        if not spellable:
            raise LmDecodeError(f"{lm_path}: none of its {len(words)} words can be spelled with the labels "
                                f"{labels!r} (an upper-case LM for upper-case labels?)")
        self.skipped_words = len(words) - len(spellable)

        self.words = fl_dictionary.Dictionary()
        for word in spellable:
            self.words.add_entry(word)
        self.words.add_entry(UNKNOWN_WORD)
        self.unknown = self.words.get_index(UNKNOWN_WORD)
        self.words.set_default_index(self.unknown)
        try:
            with _quiet_stderr():
                self.lm = KenLM(str(lm_path), self.words)
        except RuntimeError as exc:
            raise ArpaError(lm_path, f"KenLM could not load it: {kenlm_reason(exc)}", ARPA_FIX) from None

        # The lexicon trie: each word's spelling in label indices, with its unigram LM score.
        index = {char: i for i, char in enumerate(labels)}
        self.trie = fl_decoder.Trie(len(labels), self.space)
        start = self.lm.start(False)
        for word in spellable:
            word_index = self.words.get_index(word)
            _, score = self.lm.score(start, word_index)
            self.trie.insert([index[c] for c in word] + [self.space], word_index, score)
        self.trie.smear(fl_decoder.SmearingMode.MAX)

        self.settings = dict(alpha=alpha, beta=beta, beam=beam, token_beam=token_beam, beam_threshold=beam_threshold)
        self.decoder = self._search(**self.settings)

    def _search(self, alpha: float, beta: float, beam: int, token_beam: int, beam_threshold: float):
        fl_decoder, _, _ = _flashlight()
        options = fl_decoder.LexiconDecoderOptions(
            beam_size=beam, beam_size_token=min(token_beam, len(self.labels)), beam_threshold=beam_threshold,
            lm_weight=alpha, word_score=beta, unk_score=float("-inf"), sil_score=0.0, log_add=False,
            criterion_type=fl_decoder.CriterionType.CTC)
        return fl_decoder.LexiconDecoder(options, self.trie, self.lm, self.space, self.labels.index(BLANK),
                                         self.unknown, [], False)

    def with_weights(self, alpha: float, beta: float) -> "LmDecoder":
        """This decoder with another LM weight and word bonus, sharing its LM and lexicon."""
        other = copy.copy(self)
        other.settings = dict(self.settings, alpha=alpha, beta=beta)
        other.decoder = other._search(**other.settings)
        return other

    def __call__(self, log_probs: np.ndarray) -> str:
        """The best transcript of one utterance's [frames, labels] log-probabilities."""
        if log_probs.ndim != 2 or log_probs.shape[1] != len(self.labels):
            raise ValueError(f"log_probs must be [frames, {len(self.labels)} labels], got shape {log_probs.shape}")
        if len(log_probs) == 0:
            return ""
        emissions = np.ascontiguousarray(log_probs, dtype=np.float32)
        # A final, certain space ends the last word (an utterance does not end in a space).
        final = np.full((1, len(self.labels)), IMPOSSIBLE, np.float32)
        final[0, self.space] = 0.0
        emissions = np.concatenate([emissions, final])
        best = self.decoder.decode(emissions.ctypes.data, emissions.shape[0], emissions.shape[1])[0]
        return " ".join(self.words.get_entry(i) for i in best.words if i >= 0)


# ---------------------------------------------------------------------------------------------
# Choosing alpha and beta

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
DEFAULT_BETAS = (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0)


@dataclass
class TuneResult:
    alpha: float
    beta: float
    wer: float
    cer: float
    table: List[Tuple[float, float, float, float]]   # (alpha, beta, wer, cer) for every pair tried
    seconds: float


def tune(log_probs_list: Sequence[np.ndarray], references: Sequence[str], labels: str,
         lm_path: Union[str, Path], alphas: Sequence[float] = DEFAULT_ALPHAS,
         betas: Sequence[float] = DEFAULT_BETAS, beam: int = DEFAULT_BEAM,
         progress: Optional[Callable[[float, float, float], None]] = None, **options) -> TuneResult:
    """Grid search: decode every utterance with each (alpha, beta); the pair with the lowest WER
    (ties: lowest CER, then the smaller alpha and beta). The LM and lexicon are loaded once."""
    from ds2.metrics import error_rates

    if len(log_probs_list) != len(references) or not references:
        raise ValueError(f"{len(log_probs_list)} log-probability arrays for {len(references)} references")
    started = time.monotonic()
    base = LmDecoder(labels, lm_path, alphas[0], betas[0], beam, **options)
    table = []
    for alpha in alphas:
        for beta in betas:
            decoder = base.with_weights(alpha, beta)
            rates = error_rates(references, [decoder(lp) for lp in log_probs_list])
            table.append((alpha, beta, rates.wer, rates.cer))
            if progress is not None:
                progress(alpha, beta, rates.wer)
    alpha, beta, wer, cer = min(table, key=lambda row: (row[2], row[3], row[0], row[1]))
    return TuneResult(alpha, beta, wer, cer, table, time.monotonic() - started)


# ---------------------------------------------------------------------------------------------
# Tuned settings beside a checkpoint


def settings_path(checkpoint_path: Union[str, Path]) -> Path:
    checkpoint_path = Path(checkpoint_path)
    return checkpoint_path.with_name(checkpoint_path.name + SETTINGS_SUFFIX)


def save_settings(checkpoint_path: Union[str, Path], settings: LmSettings, details: Optional[Dict] = None) -> Path:
    """Write settings (and what the search measured) to <checkpoint>.lm.json. The LM's path is
    stored relative to that file, so the run folder can be mounted or moved elsewhere with its LM."""
    path = settings_path(checkpoint_path)
    stored = dict(asdict(settings), lm_path=os.path.relpath(os.path.abspath(settings.lm_path), os.path.abspath(path.parent)))
    return files.write_json(path, dict(stored, **(details or {})))


def _stored_settings(path: Path) -> Dict:
    """The JSON object of a tuned-settings file, or DataError."""
    fix = "remove it, or run ds2 tune-lm again"
    try:
        stored = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(path, f"not a tuned-LM settings file ({first_line(exc)})", fix) from None
    if not isinstance(stored, dict):
        raise DataError(path, "not a tuned-LM settings file (not a JSON object)", fix)
    return stored


def load_settings(checkpoint_path: Union[str, Path]) -> Optional[LmSettings]:
    """The settings stored beside checkpoint_path (the LM's path as a usable path), or None if there are none.
    DataError when the file is not one: alpha and beta must be finite numbers, beam a positive whole number."""
    path = settings_path(checkpoint_path)
    if not path.is_file():
        return None
    stored = _stored_settings(path)
    alpha, beta, beam = stored.get("alpha"), stored.get("beta"), stored.get("beam", DEFAULT_BEAM)
    lm_path = stored.get("lm_path")
    if not (isinstance(lm_path, str) and lm_path and "\0" not in lm_path and _finite(alpha) and _finite(beta)
            and isinstance(beam, int) and not isinstance(beam, bool) and beam > 0):
        raise DataError(path, "not a tuned-LM settings file (lm_path, finite alpha and beta, a positive beam)",
                        "remove it, or run ds2 tune-lm again")
    return LmSettings(lm_path=os.path.normpath(path.parent / lm_path), alpha=float(alpha), beta=float(beta), beam=beam)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def settings_details(checkpoint_path: Union[str, Path]) -> Dict:
    """Everything stored beside checkpoint_path by save_settings ({} if nothing)."""
    path = settings_path(checkpoint_path)
    return _stored_settings(path) if path.is_file() else {}


# ---------------------------------------------------------------------------------------------
# A set's model outputs on disk: decode or tune many times without running the model again


def save_log_probs(path: Union[str, Path], log_probs_list: Sequence[np.ndarray], references: Sequence[str],
                   ids: Sequence[str], labels: str) -> Path:
    """One .npz: every utterance's [frames, labels] log-probabilities (float32, concatenated, with
    their lengths), reference transcripts, utterance ids and the labels."""
    stored = io.BytesIO()
    np.savez_compressed(stored, log_probs=np.concatenate(list(log_probs_list)).astype(np.float32),
                        lengths=np.array([len(lp) for lp in log_probs_list]), references=np.array(list(references)),
                        ids=np.array(list(ids)), labels=np.array(labels))
    return files.write_bytes(path, stored.getvalue())


def load_log_probs(path: Union[str, Path]) -> Dict:
    """{log_probs: list of [frames, labels] arrays, references, ids: lists of str, labels: str}."""
    with np.load(path, allow_pickle=False) as stored:
        boundaries = np.cumsum(stored["lengths"])[:-1]
        return {"log_probs": np.split(stored["log_probs"], boundaries), "references": stored["references"].tolist(),
                "ids": stored["ids"].tolist(), "labels": str(stored["labels"])}
