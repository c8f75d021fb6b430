"""Word and character error rates, corpus-level: total edits / total reference length.

Summing edits over the corpus (instead of averaging per-utterance rates) weights every word
equally, as deepspeech.pytorch and the report do. CER ignores spaces, as they do too, so the
numbers are comparable with the published 9.90 / 3.32.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import Levenshtein


@dataclass
class UtteranceErrors:
    word_edits: int
    words: int        # in the reference
    char_edits: int
    chars: int        # in the reference, spaces excluded


@dataclass
class ErrorRates:
    wer: float
    cer: float
    word_edits: int
    words: int
    char_edits: int
    chars: int
    per_utterance: List[UtteranceErrors] = field(default_factory=list)


def word_edits(reference: str, hypothesis: str) -> int:
    """Word-level Levenshtein distance (substitutions + insertions + deletions of whole words)."""
    ref_words, hyp_words = reference.split(), hypothesis.split()
    # python-Levenshtein compares characters: give each distinct word its own character.
    codes: Dict[str, str] = {}
    for word in ref_words + hyp_words:
        codes.setdefault(word, chr(len(codes)))
    return Levenshtein.distance("".join(codes[w] for w in ref_words), "".join(codes[w] for w in hyp_words))


def char_edits(reference: str, hypothesis: str) -> int:
    """Character-level Levenshtein distance, spaces removed from both."""
    return Levenshtein.distance(reference.replace(" ", ""), hypothesis.replace(" ", ""))


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    per_utterance = [UtteranceErrors(word_edits(ref, hyp), len(ref.split()),
                                     char_edits(ref, hyp), len(ref.replace(" ", "")))
                     for ref, hyp in zip(references, hypotheses)]
    words = sum(u.words for u in per_utterance)
    chars = sum(u.chars for u in per_utterance)
    if words == 0 or chars == 0:
        raise ValueError("the references are empty: error rates are undefined")
    total_word_edits = sum(u.word_edits for u in per_utterance)
    total_char_edits = sum(u.char_edits for u in per_utterance)
    return ErrorRates(wer=total_word_edits / words, cer=total_char_edits / chars,
                      word_edits=total_word_edits, words=words, char_edits=total_char_edits, chars=chars,
                      per_utterance=per_utterance)


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    return error_rates(references, hypotheses).wer


def corpus_cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    return error_rates(references, hypotheses).cer
