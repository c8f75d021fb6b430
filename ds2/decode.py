"""CTC decoding: greedy (best path) and prefix beam search, both on [T, C] log probabilities.

CTC output frames carry one label each or the blank; a transcript is read by merging adjacent
repeats and then removing blanks ('AA_AB' -> 'AAB'). Greedy decoding takes the most likely
label per frame. Prefix beam search instead keeps the beam_width most likely *transcripts*
(prefixes), summing the probabilities of all alignments that collapse to each, so it can
find a transcript that no single best path spells (see tests/test_decode.py). It is plain
Python: about 1-10 ms per frame at beam 32, so decode large sets in several processes.

No language model here: ds2.lm_decode adds one (flashlight-text's compiled beam search with KenLM).
"""
from __future__ import annotations

import heapq
import math
from collections import defaultdict
from typing import Dict, List, Tuple

import numpy as np

NEG_INF = float("-inf")
# Rows of exp(log_probs) must sum to 1 within this: catches raw logits passed by mistake.
LOG_PROB_SUM_TOLERANCE = 1e-2
# Labels less likely than this at a frame (e^-8 ~ 3e-4) are not tried as extensions there: such
# an extension almost never enters a beam of plausible prefixes, and on the peaky outputs of a
# trained CTC model skipping them leaves a few labels per frame instead of 28, several times
# faster. pyctcdecode's default is -5. Pass float('-inf') to try every label.
DEFAULT_TOKEN_MIN_LOG_PROB = -8.0
# Prefixes kept per frame when none is asked for (decode.decoder=prefix with decode.beam=0).
DEFAULT_BEAM_WIDTH = 32


def _check_inputs(log_probs: np.ndarray, length: int, labels: str) -> None:
    if log_probs.ndim != 2 or log_probs.shape[1] != len(labels):
        raise ValueError(f"log_probs must be [frames, {len(labels)} labels], got shape {log_probs.shape}")
    if not 0 <= length <= log_probs.shape[0]:
        raise ValueError(f"length {length} outside 0..{log_probs.shape[0]} frames")


def greedy_decode(log_probs: np.ndarray, length: int, labels: str, blank: int = 0) -> str:
    """Most likely label per frame over the first length frames, repeats merged, blanks removed."""
    _check_inputs(log_probs, length, labels)
    best_path = np.argmax(log_probs[:length], axis=1)
    text = []
    previous = blank
    for index in best_path.tolist():
        if index != previous and index != blank:
            text.append(labels[index])
        previous = index
    return "".join(text)


def _log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow or underflow."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def prefix_beam_search(log_probs: np.ndarray, length: int, beam_width: int = DEFAULT_BEAM_WIDTH, blank: int = 0,
                       token_min_log_prob: float = DEFAULT_TOKEN_MIN_LOG_PROB) -> List[Tuple[Tuple[int, ...], float]]:
    """The beam after the last frame: (label-index prefix, log probability), most likely first.

    Each prefix carries two log probabilities: of all alignments so far that collapse to it and
    end in a blank, and of those that end in its last label. The split matters when the next
    frame repeats that label: after a blank the repeat is a new label, otherwise it merges.
    """
    if not np.allclose(np.exp(log_probs[:length]).sum(axis=1), 1.0, atol=LOG_PROB_SUM_TOLERANCE):
        raise ValueError("log_probs rows are not log-probabilities (apply log_softmax first)")
    # prefix -> [log P(ends in blank), log P(ends in its last label)]
    beams: Dict[Tuple[int, ...], List[float]] = {(): [0.0, NEG_INF]}
    for frame in log_probs[:length]:
        frame_list = frame.tolist()
        candidates = [index for index, value in enumerate(frame_list)
                      if index != blank and value >= token_min_log_prob]
        best_label = int(np.argmax(frame))
        if best_label != blank and best_label not in candidates:
            candidates.append(best_label)
        next_beams: Dict[Tuple[int, ...], List[float]] = defaultdict(lambda: [NEG_INF, NEG_INF])
        for prefix, (ends_blank, ends_label) in beams.items():
            total = _log_add(ends_blank, ends_label)
            same = next_beams[prefix]
            same[0] = _log_add(same[0], total + frame_list[blank])
            last = prefix[-1] if prefix else None
            for label in candidates:
                label_log_prob = frame_list[label]
                extended = next_beams[prefix + (label,)]
                if label == last:
                    # Repeat straight after the label: merges, the prefix stays the same.
                    same[1] = _log_add(same[1], ends_label + label_log_prob)
                    # Repeat after a blank: a new, doubled label.
                    extended[1] = _log_add(extended[1], ends_blank + label_log_prob)
                else:
                    extended[1] = _log_add(extended[1], total + label_log_prob)
        scored = [(_log_add(*scores), prefix, scores) for prefix, scores in next_beams.items()]
        # Impossible prefixes (e.g. a doubled label not yet preceded by a blank) have -inf: drop them.
        best = heapq.nlargest(beam_width, (item for item in scored if item[0] > NEG_INF), key=lambda item: item[0])
        beams = {prefix: scores for _, prefix, scores in best}
    return [(prefix, _log_add(*scores)) for prefix, scores in
            sorted(beams.items(), key=lambda item: _log_add(*item[1]), reverse=True)]


def beam_search_decode(log_probs: np.ndarray, length: int, labels: str, beam_width: int = DEFAULT_BEAM_WIDTH,
                       blank: int = 0, token_min_log_prob: float = DEFAULT_TOKEN_MIN_LOG_PROB) -> str:
    """Most likely transcript found by prefix beam search over the first length frames."""
    _check_inputs(log_probs, length, labels)
    best_prefix, _ = prefix_beam_search(log_probs, length, beam_width, blank, token_min_log_prob)[0]
    return "".join(labels[index] for index in best_prefix)
