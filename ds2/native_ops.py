"""ds2's own operators (train.lstm_kernel, train.conv_kernel, train.ctc_kernel): MindSpore AOT custom
operators from the library the CPU image builds from ds2/native/*.cc (docker/build-native.sh, against
the oneDNN wheels of docker/requirements/onednn.lock), found where ds2.kernels.library_path() says.

    lstm = lstm_operator()               # BiLSTM.set_operator(lstm)
    conv = ConvOperator(stride, padding)  # ConvBlock.set_operator(conv)
    ctc = ctc_operator()                 # CTCLoss.set_operator(ctc)
    bn = batch_norm_operator()           # DeepSpeech2.set_batch_norm_operator(bn); ds2.model.batch_norm
    mask = TimeMask()                    # DeepSpeech2.set_mask_operator(mask)

Why each exists (docs/speed-levers.md has the measurements):
- LSTM: MindSpore 2.7's CPU LSTM kernel makes its oneDNN primitives, its copies of the weights and its
  scratchpad again at every step; ds2/native/onednn_lstm.cc keeps the primitives per shape and takes
  every short-lived buffer from one arena that only grows. One LSTM direction: x [T, N, C], weight_ih
  [4H, C], weight_hh [4H, H] and one bias (bias_ih + bias_hh) in, y [T, N, H] and oneDNN's training
  workspace out; its bprop hands both to the library's backward.
- Convolution: MindSpore's CPU Conv2D gives oneDNN plain NCHW, so oneDNN convolves through im2col;
  ds2/native/onednn_conv.cc lets oneDNN choose its layouts and reorders into them.
- CTC loss: ds2/native/ctc_loss.cc computes the loss and its gradient in one pass, in probability
  space with per-step scaling (log space where that underflows).
- BatchNorm in training: ds2/native/batch_norm.cc, two or three passes over memory.
- Zeroing the padded time steps: ds2/native/time_mask.cc, a copy and a memset instead of a mask
  broadcast to the activation's shape and a product.
Shapes are inferred by the library (NAMEInferShape), so one compiled graph serves every batch shape
(train.shapes=dynamic). Each gives MindSpore's kernel's values and gradients to float32 precision
(tests/test_native_ops.py, tests/test_onednn_lstm.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ds2.kernels import library_path


def _custom(library: Path, name: str, out_dtype, bprop=None):
    op = ops.Custom(f"{library}:{name}", out_shape=None, out_dtype=out_dtype, func_type="aot", bprop=bprop)
    # The library's NAMEInferShape gives the shapes: MindSpore finds it by these two attributes (and then
    # takes out_dtype as one dtype per output).
    op.add_prim_attr("reg_op_name", name)
    op.add_prim_attr("multi_output", True)
    return op


def _library(library: Optional[Path]) -> Path:
    return Path(library or library_path()).resolve()


def lstm_operator(library: Optional[Path] = None):
    """The differentiable LSTM direction: (x, w_ih, w_hh, bias) -> (y, workspace)."""
    library = _library(library)
    backward = _custom(library, "lstm_backward", lambda x, *_: (x, x, x, x))

    def bprop(x, w_ih, w_hh, bias, out, dout):
        y, workspace = out
        return backward(x, w_ih, w_hh, bias, y, workspace, dout[0])

    return _custom(library, "lstm_forward", lambda x, *_: (x, x), bprop=bprop)


class ConvOperator(nn.Cell):
    """A differentiable 2-D convolution with this stride and symmetric padding:
    operator(x [N, C, H, W], weight [O, C, KH, KW], bias [O]) -> y [N, O, OH, OW].

    The library reads stride and padding from the shape of a constant it is given, the geometry marker
    [stride_h, stride_w, pad_h + 1, pad_w + 1] (a shape function sees shapes only). The input and weight
    gradients are two operators, so that the graph drops the input gradient nobody reads.
    """

    def __init__(self, stride: Sequence[int], padding: Sequence[int], library: Optional[Path] = None):
        super().__init__()
        library = _library(library)
        self.geometry = ms.Tensor(np.zeros((stride[0], stride[1], padding[0] + 1, padding[1] + 1), np.float32))
        backward_data = _custom(library, "conv_backward_data", (ms.float32,))
        backward_weights = _custom(library, "conv_backward_weights", (ms.float32, ms.float32))

        def bprop(x, weight, bias, geometry, out, dout):
            dy = dout[0]
            dweight, dbias = backward_weights(x, weight, geometry, dy)
            return backward_data(x, weight, geometry, dy)[0], dweight, dbias, ops.zeros_like(geometry)

        self.forward = _custom(library, "conv_forward", (ms.float32,), bprop=bprop)

    def construct(self, x, weight, bias):
        return self.forward(x, weight, bias, self.geometry)[0]


def ctc_operator(library: Optional[Path] = None):
    """The differentiable CTC loss: (log_probs [T, B, C], labels [B, S] int32, input_lengths [B] int32,
    label_lengths [B] int32) -> (loss [B], d loss / d log_probs [T, B, C]). Blank is 0; an utterance whose
    labels cannot be aligned has loss 0 and no gradient (as MindSpore's zero_infinity)."""
    def bprop(log_probs, labels, input_lengths, label_lengths, out, dout):
        gradient = out[1] * dout[0].reshape(1, -1, 1)
        return gradient, ops.zeros_like(labels), ops.zeros_like(input_lengths), ops.zeros_like(label_lengths)

    return _custom(_library(library), "ctc_loss_forward", (ms.float32, ms.float32), bprop=bprop)


def batch_norm_operator(library: Optional[Path] = None):
    """The differentiable BatchNorm of training, epsilon 1e-5: (x [N, C, ...], gamma [C], beta [C]) ->
    (y, batch mean [C], unbiased batch variance [C]); the statistics carry no gradient (they feed the
    moving statistics only: ds2.model.batch_norm)."""
    library = _library(library)
    backward = _custom(library, "batch_norm_backward", (ms.float32, ms.float32, ms.float32))

    def bprop(x, gamma, beta, out, dout):
        _, mean, variance = out
        return backward(x, gamma, mean, variance, dout[0])

    return _custom(library, "batch_norm_forward", (ms.float32, ms.float32, ms.float32), bprop=bprop)


class TimeMask(nn.Cell):
    """Differentiable zeroing of padded time steps: last(x [B, ..., T], lengths [B]) and first(x [T, B, ...],
    lengths [B]) give x with every step t >= lengths[b] of utterance b zeroed; the gradient is dy zeroed
    the same way. ds2.model.full_mask's product computes the same."""

    def __init__(self, library: Optional[Path] = None):
        super().__init__()
        library = _library(library)
        self.last_op = self._differentiable(library, "mask_time_last")
        self.first_op = self._differentiable(library, "mask_time_first")

    @staticmethod
    def _differentiable(library: Path, name: str):
        plain = _custom(library, name, (ms.float32,))

        def bprop(x, lengths, out, dout):
            return plain(dout[0], lengths)[0], ops.zeros_like(lengths)

        return _custom(library, name, (ms.float32,), bprop=bprop)

    def last(self, x, lengths):
        return self.last_op(x, lengths.astype(ms.int32))[0]

    def first(self, x, lengths):
        return self.first_op(x, lengths.astype(ms.int32))[0]
