"""MindSpore's fused LSTM kernel against oneDNN's LSTM primitives kept for the life of a shape, on ds2's layer shapes.

    python bench/onednn_lstm.py --binary runs/onednn_lstm --preset seed --cycles 2

One direction of one BiLSTM layer, forward and backward, as ds2 trains it: MindSpore's kernel through
ds2.model.BiLSTM (ops.LSTM and its gradient, compiled, the weights as parameters) in this process, and
bench/onednn_lstm.cc (oneDNN 3.2 from the index's onednn-cpu-gomp wheel; primitives, weight layouts and
one scratchpad made once for the shape) as a child, alternating, CYCLES times. Both print wall and CPU
milliseconds per repeat: on a shared machine the CPU time is the steadier figure.

Building the binary (Debian bullseye's g++ 10, as the images' base; the wheels from the index):
    pip download --no-deps -d runs/onednn onednn-devel-cpu-gomp==2023.2.0 onednn-cpu-gomp==2023.2.0
    (cd runs/onednn && for w in *.whl; do unzip -q -o $w -d x; done)
    docker run --rm -v $PWD:/src -w /src ds2-base:py3.9-bullseye sh -c 'apt-get update && apt-get install -y g++ &&
      X=runs/onednn/x; g++ -O2 -std=c++17 -I$X/onednn_devel_cpu_gomp-2023.2.0.data/data/include bench/onednn_lstm.cc
      -o runs/onednn_lstm -L$X/onednn_cpu_gomp-2023.2.0.data/data/lib -ldnnl
      -Wl,-rpath,"\\$ORIGIN/onednn/x/onednn_cpu_gomp-2023.2.0.data/data/lib"'
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def layer_shape(preset: str, width: int, batch: int):
    """(steps, batch, input, hidden) of the seed's second BiLSTM layer (input = hidden) at `width` frames."""
    from ds2.config import load_config
    from ds2.shapes import output_lengths

    cfg = load_config(preset)
    return output_lengths(width, cfg.model), batch, cfg.model.rnn_hidden, cfg.model.rnn_hidden


def direction_value_and_grad(steps: int, batch: int, inputs: int, hidden: int, direction=None, seed=None):
    """(compiled value-and-grad of (y * dy).sum() for one direction of one BiLSTM layer, x, dy).

    `direction(x, w_ih, w_hh, b_ih, b_hh) -> y` runs the direction; default: ds2's BiLSTM on MindSpore's
    kernel. The gradients are of x and BiLSTM's weights; x and dy are uniform in [-1, 1], drawn from `seed`
    (0 when None), which also seeds MindSpore's weight initialisation when given.
    """
    import mindspore as ms

    from ds2.model import BiLSTM

    if seed is not None:
        ms.set_seed(seed)
    layer = BiLSTM(inputs, hidden)
    params = [layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh]
    run = direction or layer._run

    def loss(x, dy):
        return (run(x, *params) * dy).sum()

    grad = ms.jit(ms.value_and_grad(loss, grad_position=0, weights=params))
    rng = np.random.default_rng(0 if seed is None else seed)
    x = ms.Tensor(rng.uniform(-1, 1, (steps, batch, inputs)).astype(np.float32))
    dy = ms.Tensor(rng.uniform(-1, 1, (steps, batch, hidden)).astype(np.float32))
    return grad, x, dy


def mindspore_repeats(steps: int, batch: int, inputs: int, hidden: int, repeats: int, direction=None):
    """Wall and CPU time of each repeat of the compiled value-and-grad of one direction of one layer.

    `direction` as in direction_value_and_grad (bench/onednn_lstm_op.py passes its custom operator).
    """
    from ds2.config import load_config
    from ds2.runtime import configure_mindspore

    cfg = load_config("small", overrides=["train.threads=2"])
    configure_mindspore(cfg)
    grad, x, dy = direction_value_and_grad(steps, batch, inputs, hidden, direction)
    grad(x, dy)[0].asnumpy()   # compile
    lines = []
    for r in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        value, grads = grad(x, dy)
        value.asnumpy()
        input_grad, weight_grads = grads
        for g in (input_grad, *weight_grads):   # wait for every gradient, not only the loss
            g.asnumpy()
        lines.append(f"repeat {r}: total {1000 * (time.perf_counter() - wall):.1f} ms, "
                     f"CPU {1000 * (time.process_time() - cpu):.1f} ms")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, help="bench/onednn_lstm.cc built (see above)")
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--width", type=int, default=1428, help="padded input frames (default: the seed's most frequent)")
    parser.add_argument("--batch", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = layer_shape(args.preset, args.width, args.batch)
    if args.child:
        print("\n".join(mindspore_repeats(*shape, args.repeats)))
        return 0
    if not Path(args.binary).exists():
        parser.error(f"no binary {args.binary}: build bench/onednn_lstm.cc first (see --help)")
    print(f"one direction of one layer: steps, batch, input, hidden = {shape}")
    for cycle in range(1, args.cycles + 1):
        for name, command in (("MindSpore ops.LSTM", [sys.executable, __file__, "--child", "--binary", args.binary,
                                                      "--preset", args.preset, "--width", str(args.width),
                                                      "--batch", str(args.batch), "--repeats", str(args.repeats)]),
                              ("oneDNN 3.2 kept primitives", [args.binary, *map(str, shape), str(args.repeats)])):
            out = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
            print(f"cycle {cycle}, {name}:")
            print("\n".join("  " + line for line in out.strip().splitlines() if not line.startswith("[")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
