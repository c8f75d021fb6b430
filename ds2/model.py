"""DeepSpeech2 in MindSpore: conv front-end, BiLSTM stack, linear output, CTC loss.

    model = DeepSpeech2(cfg.model, n_bins=cfg.features.n_bins)
    log_probs, out_lengths = model(features, frames)   # [T', B, C] log-probabilities, [B] int32
    loss = CTCLoss()(log_probs, out_lengths, labels, label_lengths)

Input features are [B, 1, n_bins, T] (padded on the right in time) with the true per-utterance
frame counts `frames`. Padding never reaches a real output frame:
- the input and the output of every conv block are set to zero past each utterance's length, so
  every convolution sees the same zeros it would see at the end of the unpadded utterance;
- the backward LSTM direction reads each utterance reversed by its own length (ReverseSequence),
  so it starts at the utterance's last real frame, not at the padding;
- CTC gets the exact output lengths (`output_lengths`), and the labels with their true lengths.
In eval mode an utterance's outputs are the same alone or padded in a batch (tests/test_model.py);
in training, BatchNorm statistics are batch statistics and so include the zeroed padding.

The LSTM is MindSpore's fused kernel (ops.LSTM), or for training on CPU ds2's own oneDNN operator
(train.lstm_kernel, ds2.native_ops), which gives the same values and gradients. nn.LSTM with `seq_length` falls back to a
Python loop over time steps unrolled into the graph (slow to compile, breaks on long inputs);
per-utterance reversal gives the same exact result with the fused kernel.

The model ends in log_softmax; nn.CTCLoss takes those log-probabilities as [T, B, C] with the
blank at index 0 (cfg.model.labels[0]). Forward values and gradients of BiLSTM and CTCLoss agree
with torch.nn.LSTM and torch.nn.functional.ctc_loss to float32 precision (tests/test_model.py).

Parameter names (what checkpoints store; ds2.checkpoint.layouts maps other code bases onto them):
  conv.<k>.conv.weight / .bias, conv.<k>.bn.{gamma,beta,moving_mean,moving_variance} (k = 0, 1);
  rnns.<i>.bn.* (BatchNorm before BiLSTM layers 1..n-1 when rnn_batch_norm);
  rnns.<i>.lstm.{weight_ih,weight_hh,bias_ih,bias_hh}[_reverse] in PyTorch's layout;
  fc_bn.* (BatchNorm before the output layer) and fc.weight (no bias).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Uniform, initializer

from ds2.config import ModelConfig
from ds2.shapes import conv_output_length, rnn_sizes


def time_mask(lengths: ms.Tensor, max_length: int, dtype=ms.float32) -> ms.Tensor:
    """[B, T] mask: 1 for t < lengths[b], 0 past the end of each utterance."""
    steps = ops.arange(0, max_length, dtype=ms.int32)
    return (steps.view(1, -1) < lengths.view(-1, 1)).astype(dtype)


def full_mask(mask: ms.Tensor, shape) -> ms.Tensor:
    """`mask` broadcast to `shape` as a tensor of its own, a constant for autodiff.

    Multiplying by the full mask keeps every Mul (forward and gradient) same-shaped: MindSpore's
    CPU kernels for a broadcasting Mul keep an index vector of 8 bytes per output element for as
    long as the kernel lives, one per Mul and per gradient Mul, which cost more than the mask.
    """
    return ops.stop_gradient(ops.broadcast_to(mask, shape))


def batch_norm(bn, x, operator=None):
    """bn(x); in training on `operator` (ds2.native_ops.batch_norm_operator) when one is given: the same
    output and gradients, and the same moving statistics (nn.BatchNorm keeps the new value's weight,
    1 - its momentum argument, as `momentum`)."""
    if operator is None or not bn.training:
        return bn(x)
    y, mean, variance = operator(x, bn.gamma, bn.beta)
    y = ops.depend(y, ops.assign(bn.moving_mean, bn.moving_mean * (1 - bn.momentum) + mean * bn.momentum))
    return ops.depend(y, ops.assign(bn.moving_variance,
                                    bn.moving_variance * (1 - bn.momentum) + variance * bn.momentum))


class Activation(nn.Cell):
    """tanh (the MindSpore reference) or hardtanh(0, 20) (deepspeech.pytorch)."""

    def __init__(self, name: str):
        super().__init__()
        if name not in ("tanh", "hardtanh"):
            raise ValueError(f"unknown activation {name!r}; use 'tanh' or 'hardtanh'")
        self.name = name

    def construct(self, x):
        if self.name == "tanh":
            return ops.tanh(x)
        return ops.clip_by_value(x, 0.0, 20.0)


class ConvBlock(nn.Cell):
    """Conv2d over (frequency, time) + BatchNorm + activation, then zero the padded time steps."""

    def __init__(self, in_channels: int, out_channels: int, kernel: Sequence[int],
                 stride: Sequence[int], activation: str):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        pad_f, pad_t = self.padding()
        # The conv bias is redundant before BatchNorm but kept so deepspeech.pytorch weights load 1:1.
        self.conv = nn.Conv2d(in_channels, out_channels, self.kernel, stride=self.stride,
                              pad_mode="pad", padding=(pad_f, pad_f, pad_t, pad_t), has_bias=True,
                              weight_init=_torch_default_init(in_channels * self.kernel[0] * self.kernel[1],
                                                              (out_channels, in_channels) + self.kernel),
                              bias_init=_torch_default_init(in_channels * self.kernel[0] * self.kernel[1],
                                                            (out_channels,)))
        self.bn = nn.BatchNorm2d(out_channels, momentum=0.9)
        self.act = Activation(activation)
        self.time_taps = False    # set_time_taps
        self.operator = None      # set_operator
        self.bn_operator = None   # DeepSpeech2.set_batch_norm_operator
        self.mask_operator = None  # DeepSpeech2.set_mask_operator
        self.batch_matmul = ops.BatchMatMul()   # the primitive: ops.matmul expands to transposes

    def tappable(self) -> bool:
        """Whether tap_conv can compute this convolution: a time stride of 1."""
        return self.stride[1] == 1

    def set_time_taps(self, on: bool):
        """Compute the convolution with tap_conv (True) or MindSpore's Conv2D (False): same result."""
        if on and not self.tappable():
            raise ValueError("time taps need a time stride of 1")
        self.time_taps = on

    def set_operator(self, operator):
        """Compute the convolution with `operator` (ds2.native_ops.ConvOperator for this block's stride and
        padding), or with MindSpore's Conv2D or tap_conv (None): same result. The operator comes first."""
        self.operator = operator

    def padding(self) -> Tuple[int, int]:
        """(frequency, time) padding on each side: half the kernel, as nn.Conv2d is built with."""
        return self.kernel[0] // 2, self.kernel[1] // 2

    def tap_conv(self, x):
        """self.conv(x) as one convolution with a time kernel of 1 and kt times the output channels
        (row o * kt + k holds output channel o's time tap k), then the taps shifted and summed.

        Why: MindSpore's CPU Conv2D takes plain NCHW, so oneDNN convolves through im2col with a
        GEMM of only out_channels rows, and keeps one image's whole im2col (in_channels x kernel
        area x output positions) as scratch memory per primitive. With a time kernel of 1 the GEMM
        has kt times the rows and the im2col is kt times smaller.
        """
        kf, kt = self.kernel
        batch, channels = x.shape[0], x.shape[1]
        out_channels = self.conv.weight.shape[0]
        taps = self.conv.weight.transpose(0, 3, 1, 2).reshape(out_channels * kt, channels, kf, 1)
        z = ops.conv2d(x, taps, None, stride=(self.stride[0], 1), pad_mode="pad", padding=(kf // 2, kt // 2))
        rows, span = z.shape[2], z.shape[3]        # span: the padded width, each tap at every step
        plane = rows * span
        # y[o, r, t] = sum_k z[o * kt + k, r, t + k]. Flattened per output channel, z's tap k
        # starts at k * plane; with the flat taps padded to kt * (plane + 1) and read as kt rows of
        # plane + 1, row k starts k elements later: every row is aligned with its own tap's shift.
        # The rows are summed before anything is sliced (the slices copy 11x less), and summed as
        # a product with ones: MindSpore's CPU ReduceSum over a middle axis is slower.
        flat = ops.concat((z.view(batch, out_channels, kt * plane),
                           ops.zeros((batch, out_channels, kt), z.dtype)), axis=2)
        aligned = flat.view(batch * out_channels, kt, plane + 1)
        summed = self.batch_matmul(ops.ones((batch * out_channels, 1, kt), z.dtype), aligned)
        y = summed.view(batch, out_channels, plane + 1)[:, :, :plane].view(batch, out_channels, rows, span)
        y = y[:, :, :, :span - kt + 1]
        return ops.bias_add(y, self.conv.bias)

    def construct(self, x, lengths):
        """x [B, C, F, T], lengths [B] (input frames) -> ([B, C', F', T'], output frames)."""
        if self.time_taps:
            x = self.tap_conv(x)
        elif self.operator is not None:
            x = self.operator(x, self.conv.weight, self.conv.bias)
        else:
            x = self.conv(x)
        x = self.act(batch_norm(self.bn, x, self.bn_operator))
        lengths = conv_output_length(lengths, self.kernel[1], self.stride[1])
        if self.mask_operator is not None:
            return self.mask_operator.last(x, lengths), lengths
        mask = time_mask(lengths, x.shape[3], x.dtype).view(x.shape[0], 1, 1, x.shape[3])
        return x * full_mask(mask, x.shape), lengths


def _torch_default_init(fan_in: int, shape: Tuple[int, ...]):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for conv, linear and LSTM weights."""
    return initializer(Uniform(1.0 / math.sqrt(fan_in)), shape, ms.float32)


class BiLSTM(nn.Cell):
    """One bidirectional LSTM layer, exact for padded batches, on the fused LSTM kernel.

    Gate order and weight shapes are PyTorch's: weight_ih [4H, in], weight_hh [4H, H], biases [4H]
    with gates (input, forget, cell, output).
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        gates = 4 * hidden_size
        for suffix in ("", "_reverse"):
            for name, shape in (("weight_ih", (gates, input_size)), ("weight_hh", (gates, hidden_size)),
                                ("bias_ih", (gates,)), ("bias_hh", (gates,))):
                setattr(self, name + suffix, ms.Parameter(_torch_default_init(hidden_size, shape),
                                                          name=name + suffix))
        self.lstm = ops.LSTM(input_size, hidden_size, num_layers=1, has_bias=True,
                             bidirectional=False, dropout=0.0)
        self.reverse = ops.ReverseSequence(seq_dim=0, batch_dim=1)
        # The fused kernel takes one flat weight vector: W_ih, W_hh, then the biases, which the
        # GPU kernel wants separately and the CPU kernel summed (as mindspore.nn.LSTM does it).
        self.separate_biases = ms.get_context("device_target") == "GPU"
        self.operator = None     # set_operator

    def set_operator(self, operator):
        """Run both directions on `operator` (ds2.native_ops.lstm_operator), or on ops.LSTM (None)."""
        self.operator = operator

    def _run(self, x, w_ih, w_hh, b_ih, b_hh):
        if self.operator is not None:
            output, _ = self.operator(x, w_ih, w_hh, b_ih + b_hh)
            return output
        if self.separate_biases:
            biases = ops.concat((b_ih, b_hh))
        else:
            biases = b_ih + b_hh
        weights = ops.concat((w_ih.view(-1), w_hh.view(-1), biases)).view(-1, 1, 1)
        state = ops.zeros((1, x.shape[1], self.hidden_size), x.dtype)
        output, _, _, _, _ = self.lstm(x, state, state, weights)
        return output

    def construct(self, x, lengths):
        """x [T, B, in], lengths [B] -> forward and backward outputs, each [T, B, H]."""
        forward = self._run(x, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        reversed_x = self.reverse(x, lengths)
        backward = self._run(reversed_x, self.weight_ih_reverse, self.weight_hh_reverse,
                             self.bias_ih_reverse, self.bias_hh_reverse)
        return forward, self.reverse(backward, lengths)


def sequence_batch_norm(bn: nn.BatchNorm1d, x, operator=None):
    """Apply a BatchNorm1d to every step of a [T, B, H] sequence (statistics over time and batch);
    `operator` as in batch_norm."""
    steps, batch, features = x.shape
    return batch_norm(bn, x.view(steps * batch, features), operator).view(steps, batch, features)


class RNNLayer(nn.Cell):
    """[optional BatchNorm] + BiLSTM + merge of the two directions (sum or concat)."""

    def __init__(self, input_size: int, hidden_size: int, batch_norm: bool, merge: str):
        super().__init__()
        self.bn = nn.BatchNorm1d(input_size, momentum=0.9) if batch_norm else None
        self.lstm = BiLSTM(input_size, hidden_size)
        if merge not in ("sum", "concat"):
            raise ValueError(f"unknown rnn_merge {merge!r}; use 'sum' or 'concat'")
        self.merge = merge
        self.bn_operator = None   # DeepSpeech2.set_batch_norm_operator
        self.mask_operator = None  # DeepSpeech2.set_mask_operator: zeroes the padding instead of `mask`

    def construct(self, x, lengths, mask):
        if self.bn is not None:
            x = sequence_batch_norm(self.bn, x, self.bn_operator)
        forward, backward = self.lstm(x, lengths)
        if self.merge == "sum":
            out = forward + backward
        else:
            out = ops.concat((forward, backward), axis=2)
        # Zero the padded steps so they do not pull the next BatchNorm's statistics.
        if self.mask_operator is not None:
            return self.mask_operator.first(out, lengths)
        return out * mask


class DeepSpeech2(nn.Cell):
    def __init__(self, cfg: ModelConfig, n_bins: int):
        super().__init__()
        self.cfg = cfg
        channels = cfg.conv_channels
        self.conv = nn.CellList([
            ConvBlock(1, channels, cfg.conv1_kernel, cfg.conv1_stride, cfg.activation),
            ConvBlock(channels, channels, cfg.conv2_kernel, cfg.conv2_stride, cfg.activation),
        ])
        rnn_input, rnn_output = rnn_sizes(n_bins, cfg)
        self.rnn_output = rnn_output
        layers = []
        for i in range(cfg.rnn_layers):
            layers.append(RNNLayer(rnn_input if i == 0 else rnn_output, cfg.rnn_hidden,
                                   batch_norm=cfg.rnn_batch_norm and i > 0, merge=cfg.rnn_merge))
        self.rnns = nn.CellList(layers)
        self.fc_bn = nn.BatchNorm1d(rnn_output, momentum=0.9)
        self.bn_operator = None   # set_batch_norm_operator (fc_bn's)
        self.mask_operator = None  # set_mask_operator
        self.fc = nn.Dense(rnn_output, len(cfg.labels), has_bias=False,
                           weight_init=_torch_default_init(rnn_output, (len(cfg.labels), rnn_output)))
        self.log_softmax = nn.LogSoftmax(axis=-1)

    def set_conv_time_taps(self, on: bool):
        """ConvBlock.set_time_taps on every convolution that tap_conv can compute."""
        for block in self.conv:
            if block.tappable():
                block.set_time_taps(on)

    def set_conv_operators(self, make_operator):
        """ConvBlock.set_operator on both blocks: make_operator(stride, padding) builds each block's (ds2's
        oneDNN convolution), or None for MindSpore's Conv2D."""
        for block in self.conv:
            block.set_operator(None if make_operator is None else make_operator(block.stride, block.padding()))

    def set_batch_norm_operator(self, operator):
        """Every BatchNorm in training on `operator` (ds2.native_ops.batch_norm_operator), or on
        nn.BatchNorm's kernel (None). Evaluation always runs nn.BatchNorm with the moving statistics."""
        for cell in list(self.conv) + list(self.rnns) + [self]:
            cell.bn_operator = operator

    def set_mask_operator(self, operator):
        """Zero the padded time steps with `operator` (ds2.native_ops.TimeMask) everywhere, or by a product
        with a broadcast mask (None): the same values and gradients."""
        for cell in list(self.conv) + list(self.rnns) + [self]:
            cell.mask_operator = operator

    def set_lstm_operator(self, operator):
        """BiLSTM.set_operator on every layer: ds2's oneDNN operator, or None for ops.LSTM."""
        for rnn in self.rnns:
            rnn.lstm.set_operator(operator)

    def construct(self, features, frames):
        """features [B, 1, F, T] float32, frames [B] int32 -> log_probs [T', B, C], lengths [B]."""
        # Whatever the padding holds, the first convolution must see zeros there, as it would
        # past the end of the unpadded utterance.
        if self.mask_operator is not None:
            x = self.mask_operator.last(features, frames)
        else:
            mask = time_mask(frames, features.shape[3], features.dtype).view(features.shape[0], 1, 1, features.shape[3])
            x = features * full_mask(mask, features.shape)
        x, lengths = self.conv[0](x, frames)
        x, lengths = self.conv[1](x, lengths)
        batch, channels, rows, steps = x.shape
        x = x.view(batch, channels * rows, steps).transpose(2, 0, 1)       # [T', B, C*F']
        # One [T', B, rnn_output] mask for every layer's output (the layers use the mask operator instead
        # when there is one).
        mask = None
        if self.mask_operator is None:
            mask = full_mask(time_mask(lengths, steps, x.dtype).transpose(1, 0).expand_dims(2),
                             (steps, batch, self.rnn_output))
        for rnn in self.rnns:
            x = rnn(x, lengths, mask)
        logits = self.fc(sequence_batch_norm(self.fc_bn, x, self.bn_operator).view(steps * batch, -1)).view(steps, batch, -1)
        return self.log_softmax(logits), lengths


class CTCLoss(nn.Cell):
    """Mean over the batch of the per-utterance CTC loss (summed over that utterance's frames).

    Labels are [B, S] padded with the blank id, but only the first label_lengths[b] entries of
    row b are read: the padding is never a label. Utterances whose labels cannot be aligned
    (output shorter than the label sequence) give no gradient (zero_infinity), and loss 0 on ds2's
    operator (train.ctc_kernel, the default on CPU); MindSpore's kernel gives them an infinite loss,
    which makes the step's loss infinite, and the step is then skipped.
    """

    def __init__(self, blank: int = 0):
        super().__init__()
        self.blank = blank
        self.ctc = nn.CTCLoss(blank=blank, reduction="none", zero_infinity=True)
        self.operator = None    # set_operator

    def set_operator(self, operator):
        """Compute the loss with `operator` (ds2.native_ops.ctc_operator, blank 0), or with MindSpore's
        CTCLoss (None): same loss and gradient."""
        if operator is not None and self.blank != 0:
            raise ValueError("ds2's CTC loss operator takes blank 0")
        self.operator = operator

    def construct(self, log_probs, out_lengths, labels, label_lengths):
        if self.operator is not None:
            per_utterance, _ = self.operator(log_probs, labels, out_lengths, label_lengths)
        else:
            per_utterance = self.ctc(log_probs, labels, out_lengths, label_lengths)
        return per_utterance.mean()


class TrainNetwork(nn.Cell):
    """Model + CTC loss in one cell: what the training step differentiates."""

    def __init__(self, model: DeepSpeech2, blank: int = 0):
        super().__init__()
        self.model = model
        self.loss = CTCLoss(blank)

    def construct(self, features, frames, labels, label_lengths):
        log_probs, out_lengths = self.model(features, frames)
        return self.loss(log_probs, out_lengths, labels, label_lengths)


def count_parameters(model: nn.Cell) -> int:
    return int(sum(np.prod(p.shape) for p in model.trainable_params()))
