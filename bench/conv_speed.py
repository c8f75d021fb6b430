"""The first convolution and its weight gradient: MindSpore's Conv2D against ds2's operator (train.conv_kernel).

    python bench/conv_speed.py                        # the small preset's most frequent batch: 4 x 1428 frames
    python bench/conv_speed.py --preset seed --batch 11

The first convolution has one input channel (the spectrogram), which ds2's operator computes with loops of
its own rather than oneDNN's (ds2/native/onednn_conv.cc). Both sides run in a compiled graph: the
convolution of random features with the preset's kernel, stride and padding, the bias added, and the
gradient of the sum of its outputs with respect to the weight and bias (the input gradient, as in training, is
not computed). --repeats calls after 3 of warm-up. Printed: milliseconds per call for each and their
ratio. The operator's library: ds2.kernels.library_path() ($DS2_NATIVE_LIBRARY, else the CPU image's).
"""
from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("small", "seed"), default="small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=1428)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.frames < 1 or args.repeats < 1:
        parser.error("--batch, --frames and --repeats take positive numbers")

    from ds2.config import load_config
    from bench.harness import milliseconds_per_call, require_operator
    from ds2.kernels import library_path
    require_operator(parser, "train.conv_kernel", "onednn")

    import mindspore as ms
    from mindspore import nn, ops

    from ds2 import native_ops
    from ds2.model import DeepSpeech2

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    cfg = load_config(preset=args.preset, path=None, overrides=[])
    n_bins = cfg.features.n_bins
    block = DeepSpeech2(cfg.model, n_bins).conv[0]
    stride, padding = tuple(block.stride), tuple(block.padding())
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((args.batch, 1, n_bins, args.frames)).astype(np.float32))
    library = ctypes.CDLL(str(library_path()))

    class FirstConvolution(nn.Cell):
        def __init__(self, operator):
            super().__init__()
            self.weight = ms.Parameter(ms.Tensor(block.conv.weight.asnumpy()), name="weight")
            self.bias = ms.Parameter(ms.Tensor(block.conv.bias.asnumpy()), name="bias")
            self.operator = operator

        def construct(self, x):
            if self.operator is not None:
                y = self.operator(x, self.weight, self.bias)
            else:
                y = ops.bias_add(ops.conv2d(x, self.weight, None, stride=stride, pad_mode="pad", padding=padding),
                                 self.bias)
            return y.sum()

    weight_shape = tuple(block.conv.weight.shape)
    print(f"{args.preset}: x [{args.batch}, 1, {n_bins}, {args.frames}], weight {list(weight_shape)}, stride "
          f"{list(stride)}, padding {list(padding)}; {args.repeats} calls of the forward and weight gradient")
    results = {}
    for name, operator in (("MindSpore's Conv2D", None), ("ds2's operator", native_ops.ConvOperator(stride, padding))):
        network = FirstConvolution(operator)
        grad = ms.jit(ms.value_and_grad(network, None, network.trainable_params()))
        report = (ctypes.c_int64 * 5)()
        library.conv_cache_report(report)
        calls_before = report[2]
        results[name] = milliseconds_per_call(lambda: grad(x)[1][0].asnumpy(), args.repeats, warmup=3)
        library.conv_cache_report(report)
        if operator is not None and report[2] - calls_before != args.repeats + 3:
            raise SystemExit("conv_speed: the operator did not run once per call")
        print(f"{name}: {results[name]:.2f} ms per call")
    ratio = results["ds2's operator"] / results["MindSpore's Conv2D"]
    print(f"ds2's operator / MindSpore's: {ratio:.3f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
