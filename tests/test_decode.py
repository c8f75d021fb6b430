import itertools
import math
from collections import defaultdict

import numpy as np
import pytest

from ds2.decode import beam_search_decode, greedy_decode, prefix_beam_search

LABELS = "_AB"  # blank, A, B


def log_probs_from(rows):
    return np.log(np.array(rows, dtype=np.float64))


def one_hot_path(path):
    """Near-certain frames spelling path (indices into LABELS)."""
    rows = np.full((len(path), len(LABELS)), 0.01)
    rows[np.arange(len(path)), path] = 0.98
    return np.log(rows)


def test_greedy_merges_repeats_then_drops_blanks():
    assert greedy_decode(one_hot_path([1, 1, 0, 1, 2, 2, 0]), 7, LABELS) == "AAB"
    assert greedy_decode(one_hot_path([0, 0, 0]), 3, LABELS) == ""
    assert greedy_decode(one_hot_path([2, 0, 0, 2]), 4, LABELS) == "BB"


def test_decoders_ignore_frames_past_length():
    log_probs = one_hot_path([1, 0, 2, 2])
    assert greedy_decode(log_probs, 2, LABELS) == "A"
    assert beam_search_decode(log_probs, 2, LABELS) == "A"


def test_beam_search_finds_what_the_best_path_misses():
    # Two frames, P(blank) = 0.6, P(A) = 0.4 each. Best path: blank blank -> "" (0.36).
    # But "A" is spelled by A A, A _, _ A: 0.16 + 0.24 + 0.24 = 0.64.
    log_probs = log_probs_from([[0.6, 0.4, 0.0 + 1e-12], [0.6, 0.4, 1e-12]])
    assert greedy_decode(log_probs, 2, LABELS) == ""
    assert beam_search_decode(log_probs, 2, LABELS, beam_width=4) == "A"
    beams = dict(prefix_beam_search(log_probs, 2, beam_width=4, token_min_log_prob=-math.inf))
    assert beams[(1,)] == pytest.approx(math.log(0.64))
    assert beams[()] == pytest.approx(math.log(0.36))


def test_doubled_label_needs_a_blank_between():
    # A, blank, A -> "AA"; A, A -> "A"
    assert beam_search_decode(one_hot_path([1, 0, 1]), 3, LABELS) == "AA"
    assert beam_search_decode(one_hot_path([1, 1, 1]), 3, LABELS) == "A"


def brute_force(probabilities):
    """Probability of every transcript, summing every alignment (feasible for tiny inputs)."""
    totals = defaultdict(float)
    frames, classes = probabilities.shape
    for path in itertools.product(range(classes), repeat=frames):
        collapsed = tuple(label for i, label in enumerate(path) if label != 0 and (i == 0 or path[i - 1] != label))
        totals[collapsed] += float(np.prod(probabilities[np.arange(frames), path]))
    return totals


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_equals_exhaustive_enumeration(seed):
    logits = np.random.RandomState(seed).randn(5, 3) * 2
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    exact = brute_force(probabilities)
    beams = prefix_beam_search(np.log(probabilities), 5, beam_width=1000, token_min_log_prob=-math.inf)
    assert {prefix: pytest.approx(math.exp(score)) for prefix, score in beams} == exact
    best = max(exact, key=exact.get)
    assert beam_search_decode(np.log(probabilities), 5, LABELS, beam_width=1000) == "".join(LABELS[i] for i in best)


def test_long_input_is_numerically_stable():
    # 2000 frames multiply to ~1e-600: only log space survives.
    rows = np.tile([0.5, 0.3, 0.2], (2000, 1))
    beams = prefix_beam_search(np.log(rows), 2000, beam_width=8)
    assert all(np.isfinite(score) for _, score in beams)


def test_raw_logits_are_refused():
    with pytest.raises(ValueError, match="log_softmax"):
        beam_search_decode(np.random.RandomState(0).randn(4, 3), 4, LABELS)


def test_shape_checks():
    with pytest.raises(ValueError, match="labels"):
        greedy_decode(np.zeros((4, 5)), 4, LABELS)
    with pytest.raises(ValueError, match="length"):
        greedy_decode(one_hot_path([1, 2]), 3, LABELS)
