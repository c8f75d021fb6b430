"""Frame and frequency-bin arithmetic of the convolutional front-end, without importing MindSpore.

Batching, data checks and the benchmark's PyTorch twin need these numbers; importing MindSpore for
them would cost each of those processes about a second and half a gigabyte.
"""
from __future__ import annotations

from ds2.config import ModelConfig


def conv_output_length(length, kernel: int, stride: int):
    """Length after a convolution padded by kernel // 2 on both sides (ints or numpy arrays)."""
    padding = kernel // 2
    return (length + 2 * padding - kernel) // stride + 1


def output_lengths(frames, cfg: ModelConfig):
    """Exact number of output frames for inputs of `frames` frames (int or numpy int array)."""
    length = conv_output_length(frames, cfg.conv1_kernel[1], cfg.conv1_stride[1])
    return conv_output_length(length, cfg.conv2_kernel[1], cfg.conv2_stride[1])


def output_bins(n_bins: int, cfg: ModelConfig) -> int:
    """Frequency rows left after the two convolutions."""
    rows = conv_output_length(n_bins, cfg.conv1_kernel[0], cfg.conv1_stride[0])
    return conv_output_length(rows, cfg.conv2_kernel[0], cfg.conv2_stride[0])
