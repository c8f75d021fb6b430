"""Transcripts: normalisation and label encoding.

The label string (cfg.model.labels) maps characters to model output indices; index 0 is the
CTC blank '_'. Transcripts are normalised (upper case, single spaces) but characters outside the
label set are never dropped silently: `out_of_label_chars` reports them and callers decide
(preprocess skips and counts such utterances).
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, List

BLANK = "_"


def check_labels(labels: str) -> None:
    """Raise ValueError unless labels has the blank first, a space, and no duplicates."""
    if not labels or labels[0] != BLANK:
        raise ValueError(f"labels must start with the CTC blank {BLANK!r}, got {labels[:1]!r}")
    if " " not in labels:
        raise ValueError("labels must contain a space (the word separator)")
    duplicates = sorted(char for char, count in Counter(labels).items() if count > 1)
    if duplicates:
        raise ValueError(f"labels contain duplicates: {''.join(duplicates)!r}")


def label_index(labels: str) -> Dict[str, int]:
    """character -> output index, blank excluded (a transcript never contains the blank)."""
    check_labels(labels)
    return {char: index for index, char in enumerate(labels) if index != 0}


def normalize_transcript(text: str) -> str:
    """Upper-case and collapse all whitespace runs (tabs, newlines) to single spaces.

    Nothing else is removed: punctuation or digits stay and are reported by out_of_label_chars,
    so a corpus with unexpected characters is noticed instead of quietly losing them.
    """
    return " ".join(text.upper().split())


def out_of_label_chars(text: str, labels: str) -> Counter:
    """Characters of text that have no label (the blank counts as no label), with counts."""
    known = label_index(labels)
    return Counter(char for char in text if char not in known)


def describe_chars(chars: Counter) -> str:
    """'3 chars: '!' x2, '1' x1' -- for problem reports."""
    parts = ", ".join(f"{char!r} x{count}" for char, count in chars.most_common())
    return f"{sum(chars.values())} chars: {parts}"


def encode(text: str, labels: str) -> List[int]:
    """Label indices of text. Raises ValueError naming every character without a label."""
    known = label_index(labels)
    unknown = Counter(char for char in text if char not in known)
    if unknown:
        raise ValueError(f"transcript has characters outside the label set ({describe_chars(unknown)}): {text!r}")
    return [known[char] for char in text]


def decode(indices: Iterable[int], labels: str) -> str:
    """Characters of label indices, blanks removed. No CTC collapsing: see ds2.decode for that."""
    return "".join(labels[index] for index in indices if index != 0)


def min_ctc_frames(indices: List[int]) -> int:
    """Fewest output frames CTC needs to emit this label sequence.

    One frame per label, plus one blank between each pair of equal adjacent labels
    (without it 'LL' would collapse to 'L').
    """
    repeats = sum(1 for previous, current in zip(indices, indices[1:]) if previous == current)
    return len(indices) + repeats
