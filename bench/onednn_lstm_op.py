"""One LSTM direction on ds2's oneDNN operator (ds2.native_ops.lstm_operator), checked and timed against ops.LSTM.

    python bench/onednn_lstm_op.py --check
    python bench/onednn_lstm_op.py --preset seed --cycles 2

The operator train.lstm_kernel=onednn trains with (ds2/native/onednn_lstm.cc, built in the CPU image at
ds2.kernels.DEFAULT_LIBRARY; --library or $DS2_NATIVE_LIBRARY for another build), taking the weights
as ds2.model.BiLSTM holds them. --check compares loss and gradients (input and all four weights) with
BiLSTM on MindSpore's kernel on a small shape and on the seed's layer shape; without it the compiled
value-and-grad of one direction runs on MindSpore's kernel and on the operator, each in a child
process (OMP_WAIT_POLICY=passive, as the oneDNN side waits on GNU OpenMP), alternating CYCLES times,
printing wall and CPU milliseconds per repeat (bench/onednn_lstm.mindspore_repeats).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.onednn_lstm import direction_value_and_grad, layer_shape, mindspore_repeats  # noqa: E402

SMALL_SHAPE = (20, 3, 16, 8)   # steps, batch, input, hidden


def onednn_direction(library: str):
    """`run(x, w_ih, w_hh, b_ih, b_hh) -> y` on the operator, differentiable (x [T, N, C] -> y [T, N, H])."""
    from ds2.native_ops import lstm_operator

    forward = lstm_operator(Path(library))

    def run(x, w_ih, w_hh, b_ih, b_hh):
        y, _ = forward(x, w_ih, w_hh, b_ih + b_hh)
        return y

    return run


def loss_and_grads(shape, direction=None, seed: int = 0):
    """Loss (y * dy).sum() and its gradients (x, w_ih, w_hh, b_ih, b_hh) as numpy, on BiLSTM's weights."""
    grad, x, dy = direction_value_and_grad(*shape, direction=direction, seed=seed)
    value, (input_grad, weight_grads) = grad(x, dy)
    # Copies: asnumpy() can share the tensor's buffer, which the runtime hands to the next graph's outputs.
    return value.asnumpy().copy(), [g.asnumpy().copy() for g in (input_grad, *weight_grads)]


def compare(shape, direction) -> bool:
    """Print how far `direction`'s loss and gradients are from MindSpore's kernel's; True if within float32 tolerance."""
    names = ("loss", "d x", "d w_ih", "d w_hh", "d b_ih", "d b_hh")
    reference_loss, reference_grads = loss_and_grads(shape)
    loss, grads = loss_and_grads(shape, direction)
    agree = True
    print(f"steps, batch, input, hidden = {shape}")
    for name, want, got in zip(names, [reference_loss, *reference_grads], [loss, *grads]):
        scale = max(float(np.abs(want).max()), 1e-6)
        worst = float(np.abs(got - want).max()) / scale
        ok = want.shape == got.shape and worst < 1e-4
        agree &= ok
        print(f"  {name:7s} {str(want.shape):16s} largest |value| {scale:.3e}, "
              f"largest difference / largest |value| {worst:.2e} {'ok' if ok else 'DIFFERS'}")
    return agree


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", help="the operator's library (default: $DS2_ONEDNN_LSTM or the image's)")
    parser.add_argument("--check", action="store_true", help="compare loss and gradients with MindSpore's kernel")
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--width", type=int, default=1428, help="padded input frames (default: the seed's most frequent)")
    parser.add_argument("--batch", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--child", choices=("kernel", "operator"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from ds2.kernels import library_path

    args.library = args.library or str(library_path())
    if not Path(args.library).exists():
        parser.error(f"no library {args.library}: run in the CPU image, or build ds2/native "
                     "(docker/build-native.sh)")
    shape = layer_shape(args.preset, args.width, args.batch)
    if args.child:
        direction = onednn_direction(args.library) if args.child == "operator" else None
        print("\n".join(mindspore_repeats(*shape, args.repeats, direction=direction)))
        return 0
    if args.check:
        from ds2.config import load_config
        from ds2.runtime import configure_mindspore

        configure_mindspore(load_config("small", overrides=["train.threads=2"]))
        direction = onednn_direction(args.library)
        agree = all([compare(SMALL_SHAPE, direction), compare(shape, direction)])
        return 0 if agree else 1
    print(f"one direction of one layer: steps, batch, input, hidden = {shape}")
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    for cycle in range(1, args.cycles + 1):
        for child, name in (("kernel", "MindSpore ops.LSTM"), ("operator", "AOT operator, oneDNN 3.2 kept primitives")):
            command = [sys.executable, __file__, "--child", child, "--library", args.library, "--preset", args.preset,
                       "--width", str(args.width), "--batch", str(args.batch), "--repeats", str(args.repeats)]
            out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=env).stdout
            print(f"cycle {cycle}, {name}:")
            print("\n".join("  " + line for line in out.strip().splitlines() if line.startswith("repeat")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
