"""Where a transcript sits in time: CTC forced alignment of its labels to the model's output frames, and
word start and end times from it.

    spans = align(log_probs, encode("HI THERE", labels))     # (first frame, last frame) of each label
    words = word_times("HI THERE", spans, frame_seconds)     # [Word("HI", 0.12, 0.36), ...]

The alignment is the most likely CTC path (Viterbi) that spells exactly the given labels, so it works for
whatever decoder produced the transcript (greedy, prefix beam search, LM beam search): CTC paths put a
label on one or more consecutive frames, with blanks (and repeats) between them. A word spans from the
first frame of its first letter to the end of the last frame of its last letter.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

NEG_INF = -np.inf


class Word(NamedTuple):
    word: str
    start: float        # seconds
    end: float


def align(log_probs: np.ndarray, targets: Sequence[int], blank: int = 0) -> Optional[List[Tuple[int, int]]]:
    """(first frame, last frame) of every target label on the most likely CTC path that spells `targets`
    over log_probs [frames, labels]; None when there are too few frames to spell them."""
    frames = log_probs.shape[0]
    if not len(targets):
        return []
    # The extended sequence: blank, y1, blank, y2, ..., yL, blank. State s emits extended[s].
    extended = np.full(2 * len(targets) + 1, blank, dtype=np.int64)
    extended[1::2] = targets
    states = len(extended)
    # A state may be entered from two states back when it is a label that differs from the label there
    # (between equal labels the blank is required, or they would merge).
    skip = np.zeros(states, dtype=bool)
    skip[3::2] = extended[3::2] != extended[1:-2:2]
    score = np.full(states, NEG_INF)
    score[:2] = log_probs[0, extended[:2]]
    back = np.zeros((frames, states), dtype=np.int8)    # how many states back each best step came from
    for t in range(1, frames):
        stay = score
        step = np.concatenate(([NEG_INF], score[:-1]))
        jump = np.where(skip, np.concatenate(([NEG_INF, NEG_INF], score[:-2])), NEG_INF)
        choices = np.stack([stay, step, jump])
        best = np.argmax(choices, axis=0)
        score = choices[best, np.arange(states)] + log_probs[t, extended]
        back[t] = best
    last = states - 1 if score[-1] >= score[-2] else states - 2
    if score[last] == NEG_INF:
        return None
    path = np.empty(frames, dtype=np.int64)
    state = last
    for t in range(frames - 1, -1, -1):
        path[t] = state
        state -= back[t, state]
    spans: List[Tuple[int, int]] = []
    for t, state in enumerate(path.tolist()):
        if state % 2 == 1:
            label = state // 2
            if label == len(spans):
                spans.append((t, t))
            else:
                spans[label] = (spans[label][0], t)
    return spans


def word_times(text: str, spans: Sequence[Tuple[int, int]], frame_seconds: float) -> List[Word]:
    """The words of text (split at spaces) with their times, from the spans align() gave for text's labels."""
    words: List[Word] = []
    start = None
    for position, char in enumerate(text + " "):
        if char != " " and start is None:
            start = position
        elif char == " " and start is not None:
            first, last = spans[start][0], spans[position - 1][1]
            words.append(Word(text[start:position], round(first * frame_seconds, 3),
                              round((last + 1) * frame_seconds, 3)))
            start = None
    return words


def path_log_prob(log_probs: np.ndarray, spans: Sequence[Tuple[int, int]], targets: Sequence[int],
                  first: int, last: int, blank: int = 0) -> float:
    """Mean per-frame log-probability of the aligned path over frames first..last (inclusive): each frame
    inside a label's span scored on that label, every other frame on the blank."""
    chosen = np.full(log_probs.shape[0], blank, dtype=np.int64)
    for (start, end), label in zip(spans, targets):
        chosen[start:end + 1] = label
    frames = np.arange(first, last + 1)
    return float(log_probs[frames, chosen[frames]].mean()) if len(frames) else 0.0
