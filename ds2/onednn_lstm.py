"""train.lstm_kernel: BiLSTM's directions on ds2's own oneDNN LSTM operator instead of MindSpore's kernel.

    operator = forward_operator()        # an ops.Custom; BiLSTM.set_operator(operator) uses it

MindSpore 2.7's CPU LSTM kernel makes its oneDNN primitives, its copies of the weights and its
scratchpad again at every step. ds2/native/onednn_lstm.cc keeps the primitives per shape and takes
every short-lived buffer from one arena that only grows (docs/performance.md has the measurements).
The image's build stage compiles it against the oneDNN wheels of docker/requirements/onednn.lock
(docker/build-lstm-kernel.sh) and puts it where ds2.lstm_kernel.library_path() looks, with oneDNN
beside it; ds2.lstm_kernel also says when training uses it (train.lstm_kernel).

The operator is one LSTM direction: x [T, N, C], weight_ih [4H, C], weight_hh [4H, H] and one bias
(bias_ih + bias_hh) in, y [T, N, H] and oneDNN's training workspace out; its bprop hands both to the
library's backward. Shapes are inferred by the library (NAMEInferShape), so one compiled graph serves
every batch shape (train.shapes=dynamic). Loss and gradients match MindSpore's kernel to float32
precision (tests/test_onednn_lstm.py, bench/onednn_lstm_step.py --check for the whole model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ds2.lstm_kernel import library_path


def _custom(library: Path, name: str, out_dtype, bprop=None):
    from mindspore import ops

    op = ops.Custom(f"{library}:{name}", out_shape=None, out_dtype=out_dtype, func_type="aot", bprop=bprop)
    # The library's NAMEInferShape gives the shapes: MindSpore finds it by these two attributes.
    op.add_prim_attr("reg_op_name", name)
    op.add_prim_attr("multi_output", True)
    return op


def forward_operator(library: Optional[Path] = None):
    """The differentiable forward operator: (x, w_ih, w_hh, bias) -> (y, workspace)."""
    library = Path(library or library_path()).resolve()
    backward = _custom(library, "lstm_backward", lambda x, *_: (x, x, x, x))

    def bprop(x, w_ih, w_hh, bias, out, dout):
        y, workspace = out
        return backward(x, w_ih, w_hh, bias, y, workspace, dout[0])

    return _custom(library, "lstm_forward", lambda x, *_: (x, x), bprop=bprop)
