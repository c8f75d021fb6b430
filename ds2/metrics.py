"""Word and character error rates, corpus-level: total edits / total reference length; and the reader of
a training run's metrics.jsonl.

Summing edits over the corpus (instead of averaging per-utterance rates) weights every word
equally, as deepspeech.pytorch and the report do. CER ignores spaces, as they do too, so the
numbers are comparable with the published 9.90 / 3.32.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import Levenshtein

from ds2.errors import finite_number

# Fields a metrics.jsonl record of each kind must hold as finite numbers (ds2.plot draws them).
REQUIRED_NUMBERS = {"dev": ("dev_cer", "dev_wer")}
# How many skipped lines a reader names (it counts them all).
NAMED_BAD_LINES = 3


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


# ---------------------------------------------------------------------------------------------
# metrics.jsonl: one JSON object per line, written by ds2 train


def _record_problem(record: Any) -> str:
    """Why a parsed line is not a metrics record, or ''."""
    if not isinstance(record, dict):
        return "not a JSON object"
    step = record.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return "no step number"
    if not isinstance(record.get("kind"), str):
        return "no kind"
    for name in REQUIRED_NUMBERS.get(record["kind"], ()):
        if not finite_number(record.get(name)):
            return f"{name} is not a finite number"
    return ""


def read_metrics_log(path: Union[str, Path]) -> Tuple[List[Dict[str, Any]], List[str]]:
    """(the records of a metrics.jsonl, its skipped lines as "line N: why").

    A line that is not a record (cut off by a kill, damaged, not UTF-8, a record without its step) is
    skipped and named; the lines after it are kept. NaN and infinity, which Python's json writes but JSON
    does not allow, are read as None: the value is unknown, the rest of the record stands.
    """
    records: List[Dict[str, Any]] = []
    skipped: List[str] = []
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=lambda _: None)
        except (json.JSONDecodeError, RecursionError):
            skipped.append(f"line {number}: not JSON")
            continue
        if "\ufffd" in line:
            skipped.append(f"line {number}: not UTF-8")
            continue
        problem = _record_problem(record)
        if problem:
            skipped.append(f"line {number}: {problem}")
            continue
        records.append(record)
    return records, skipped


def describe_skipped(path: Union[str, Path], skipped: List[str]) -> str:
    """One line saying which lines of a metrics log were skipped."""
    named = "; ".join(skipped[:NAMED_BAD_LINES]) + ("; ..." if len(skipped) > NAMED_BAD_LINES else "")
    return f"{path}: {len(skipped)} lines are not metrics records and were skipped ({named})"
