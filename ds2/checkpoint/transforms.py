"""Array transforms between checkpoint layouts: shapes that differ by size-1 dimensions, the model
zoo's flat LSTM weights, output rows in another label order, neutral values for missing roles."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np


def fit_shape(value: np.ndarray, shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """`value` in `shape` when the two shapes differ only by size-1 dimensions, else None."""
    if tuple(value.shape) == tuple(shape):
        return value
    if [d for d in value.shape if d != 1] == [d for d in shape if d != 1]:
        return value.reshape(shape)
    return None


def split_flat_lstm(flat: np.ndarray, input_size: int, hidden_size: int) -> Dict[str, np.ndarray]:
    """One bidirectional layer's flat ops.LSTM weight vector (CPU layout) as ds2's per-direction tensors.

    The CPU kernel's layout, measured against it (tests/test_convert.py runs a network built on it):
    W_ih forward, W_ih backward, W_hh forward, W_hh backward, bias forward, bias backward; each W is
    [4H, in] row-major with gates (input, forget, cell, output), as ds2 and PyTorch order them, and
    one bias per direction (b_ih + b_hh), which goes to bias_ih with bias_hh zero.
    The GPU (cuDNN) layout has two biases per direction and an order not verified here: refused.
    """
    gates = 4 * hidden_size
    sizes = [("weight_ih", gates * input_size), ("weight_ih_reverse", gates * input_size),
             ("weight_hh", gates * hidden_size), ("weight_hh_reverse", gates * hidden_size),
             ("bias_ih", gates), ("bias_ih_reverse", gates)]
    expected = sum(size for _, size in sizes)
    flat = flat.reshape(-1)
    if flat.size == expected + 2 * gates:
        raise ValueError(f"flat LSTM weights of {flat.size} values are the GPU (cuDNN) layout with two bias "
                         f"vectors per direction; its order is not verified, so it is not converted")
    if flat.size != expected:
        raise ValueError(f"flat LSTM weights of {flat.size} values; a bidirectional layer of input {input_size} "
                         f"and hidden {hidden_size} has {expected} (CPU layout)")
    parts, start = {}, 0
    for name, size in sizes:
        parts[name] = flat[start:start + size]
        start += size
    return {
        "weight_ih": parts["weight_ih"].reshape(gates, input_size),
        "weight_hh": parts["weight_hh"].reshape(gates, hidden_size),
        "bias_ih": parts["bias_ih"],
        "bias_hh": np.zeros(gates, flat.dtype),
        "weight_ih_reverse": parts["weight_ih_reverse"].reshape(gates, input_size),
        "weight_hh_reverse": parts["weight_hh_reverse"].reshape(gates, hidden_size),
        "bias_ih_reverse": parts["bias_ih_reverse"],
        "bias_hh_reverse": np.zeros(gates, flat.dtype),
    }


def label_order(source_labels: str, target_labels: str) -> np.ndarray:
    """rows such that source_output[rows] is in target label order; raises if the label sets differ."""
    if len(set(source_labels)) != len(source_labels) or len(set(target_labels)) != len(target_labels):
        raise ValueError(f"labels repeat a character: source {source_labels!r}, target {target_labels!r}")
    if set(source_labels) != set(target_labels):
        raise ValueError(f"label sets differ: source {source_labels!r}, model {target_labels!r} "
                         f"(only in source: {sorted(set(source_labels) - set(target_labels))}, "
                         f"only in model: {sorted(set(target_labels) - set(source_labels))})")
    return np.array([source_labels.index(label) for label in target_labels])


def neutral_value(role: str, shape: Tuple[int, ...], eps: float) -> np.ndarray:
    """A value for a parameter the source has no counterpart of that makes it do nothing."""
    parameter = role.rsplit(".", 1)[1]
    if parameter == "gamma":
        return np.ones(shape, np.float32)
    if parameter == "moving_variance":
        # (x - 0) / sqrt((1 - eps) + eps) * 1 + 0 = x: an exact identity in inference.
        return np.full(shape, 1.0 - eps, np.float32)
    return np.zeros(shape, np.float32)   # beta, moving_mean, biases
