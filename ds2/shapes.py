"""The network's arithmetic without MindSpore: feature frames of audio, frames and frequency rows through
the convolutions, and the name and shape of every trainable parameter.

ds2.model builds the network from these numbers, and batching, preprocessing, the memory plan, envcheck
and the benchmark's PyTorch twin read them here; importing MindSpore for them would cost each of those
processes about a second and half a gigabyte.
"""
from __future__ import annotations

from typing import Dict, Tuple

from ds2.config import Config, FeatureConfig, ModelConfig


def input_frames(num_samples, features: FeatureConfig):
    """Feature frames of num_samples samples: centred framing (see ds2.features), ints or numpy arrays."""
    padded = num_samples + 2 * (features.n_fft // 2)
    return 1 + (padded - features.n_fft) // features.hop_length


def duration_frames(duration: float, features: FeatureConfig) -> int:
    """Feature frames of audio lasting `duration` seconds at the feature sample rate."""
    return input_frames(int(round(duration * features.sample_rate)), features)


def conv_output_length(length, kernel: int, stride: int):
    """Length after a convolution padded by kernel // 2 on both sides (ints or numpy arrays)."""
    padding = kernel // 2
    return (length + 2 * padding - kernel) // stride + 1


def output_lengths(frames, cfg: ModelConfig):
    """Exact number of output frames for inputs of `frames` frames (int or numpy int array)."""
    length = conv_output_length(frames, cfg.conv1_kernel[1], cfg.conv1_stride[1])
    return conv_output_length(length, cfg.conv2_kernel[1], cfg.conv2_stride[1])


def output_frames(duration: float, cfg: Config) -> int:
    """Model output frames for audio lasting `duration` seconds (exact for audio at the feature rate)."""
    return int(output_lengths(duration_frames(duration, cfg.features), cfg.model))


def output_bins(n_bins: int, cfg: ModelConfig) -> int:
    """Frequency rows left after the two convolutions."""
    rows = conv_output_length(n_bins, cfg.conv1_kernel[0], cfg.conv1_stride[0])
    return conv_output_length(rows, cfg.conv2_kernel[0], cfg.conv2_stride[0])


def conv1_bins(n_bins: int, cfg: ModelConfig) -> int:
    """Frequency rows after the first convolution."""
    return conv_output_length(n_bins, cfg.conv1_kernel[0], cfg.conv1_stride[0])


def time_stride(cfg: ModelConfig) -> int:
    """Input frames per output frame: the product of the conv layers' time strides."""
    return cfg.conv1_stride[1] * cfg.conv2_stride[1]


def rnn_sizes(n_bins: int, cfg: ModelConfig) -> Tuple[int, int]:
    """(input features of the first BiLSTM layer, features each BiLSTM layer outputs)."""
    return cfg.conv_channels * output_bins(n_bins, cfg), cfg.rnn_hidden * (2 if cfg.rnn_merge == "concat" else 1)


def trainable_shapes(cfg: ModelConfig, n_bins: int) -> Dict[str, Tuple[int, ...]]:
    """{parameter name: shape} of every trainable parameter of ds2.model.DeepSpeech2, in its order.

    BatchNorm running statistics are not trainable and not listed.
    """
    shapes: Dict[str, Tuple[int, ...]] = {}
    channels = cfg.conv_channels
    for k, (kernel, inputs) in enumerate(((cfg.conv1_kernel, 1), (cfg.conv2_kernel, channels))):
        shapes[f"conv.{k}.conv.weight"] = (channels, inputs) + tuple(kernel)
        shapes[f"conv.{k}.conv.bias"] = (channels,)
        shapes[f"conv.{k}.bn.gamma"] = (channels,)
        shapes[f"conv.{k}.bn.beta"] = (channels,)
    rnn_input, rnn_output = rnn_sizes(n_bins, cfg)
    gates = 4 * cfg.rnn_hidden
    for i in range(cfg.rnn_layers):
        layer_input = rnn_input if i == 0 else rnn_output
        if cfg.rnn_batch_norm and i > 0:
            shapes[f"rnns.{i}.bn.gamma"] = (layer_input,)
            shapes[f"rnns.{i}.bn.beta"] = (layer_input,)
        for suffix in ("", "_reverse"):
            shapes[f"rnns.{i}.lstm.weight_ih{suffix}"] = (gates, layer_input)
            shapes[f"rnns.{i}.lstm.weight_hh{suffix}"] = (gates, cfg.rnn_hidden)
            shapes[f"rnns.{i}.lstm.bias_ih{suffix}"] = (gates,)
            shapes[f"rnns.{i}.lstm.bias_hh{suffix}"] = (gates,)
    shapes["fc_bn.gamma"] = (rnn_output,)
    shapes["fc_bn.beta"] = (rnn_output,)
    shapes["fc.weight"] = (len(cfg.labels), rnn_output)
    return shapes


def parameter_count(cfg: ModelConfig, n_bins: int) -> int:
    """Trainable parameters of the network (what ds2.model.count_parameters counts on the built model)."""
    total = 0
    for shape in trainable_shapes(cfg, n_bins).values():
        size = 1
        for dim in shape:
            size *= dim
        total += size
    return total


# A backward pass costs about twice its forward pass (gradients for the inputs and for the weights).
TRAINING_FLOPS_PER_FORWARD = 3


def forward_flops(frames: int, cfg: Config) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of the forward pass over one utterance of `frames` input
    frames, padding excluded: the two convolutions, every BiLSTM layer's input and recurrent products in
    both directions, and the output layer. Element-wise work (BatchNorm, activations, gates) is left out:
    it is a small share and not matrix products, which is what the machine's GEMM rate measures."""
    model, n_bins = cfg.model, cfg.features.n_bins
    t1 = int(conv_output_length(frames, model.conv1_kernel[1], model.conv1_stride[1]))
    t2 = int(output_lengths(frames, model))
    f1, f2 = conv1_bins(n_bins, model), output_bins(n_bins, model)
    channels = model.conv_channels
    conv = 2 * model.conv1_kernel[0] * model.conv1_kernel[1] * 1 * channels * f1 * t1
    conv += 2 * model.conv2_kernel[0] * model.conv2_kernel[1] * channels * channels * f2 * t2
    rnn_input, rnn_output = rnn_sizes(n_bins, model)
    gates = 4 * model.rnn_hidden
    rnn = 0
    for layer in range(model.rnn_layers):
        layer_input = rnn_input if layer == 0 else rnn_output
        rnn += 2 * t2 * 2 * gates * (layer_input + model.rnn_hidden)   # 2 directions
    output = 2 * t2 * rnn_output * len(model.labels)
    return conv + rnn + output


def training_flops(frames: int, cfg: Config) -> int:
    """FLOPs of one training step's forward and backward passes over one utterance (see forward_flops)."""
    return TRAINING_FLOPS_PER_FORWARD * forward_flops(frames, cfg)
