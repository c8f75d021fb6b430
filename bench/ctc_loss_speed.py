"""The CTC loss and its gradient: MindSpore's nn.CTCLoss against ds2's operator (train.ctc_kernel).

    python bench/ctc_loss_speed.py                    # the small preset's most frequent batch's size
    python bench/ctc_loss_speed.py --steps 714 --batch 11 --labels 300,500

Both in a compiled graph (forward and gradient with respect to log_probs, the loss averaged over the
batch as ds2.model.CTCLoss does), on the same random log_probs [T, B, 29] and labels, --repeats calls
after 5 of warm-up. Printed: milliseconds per call for each, and how many utterances the operator
computed in log space (where probabilities underflow double). The operator's library:
ds2.kernels.library_path() ($DS2_NATIVE_LIBRARY, else the CPU image's).
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

CLASSES = 29    # the default alphabet: blank, apostrophe, A-Z, space


def random_batch(steps: int, batch: int, label_range: Sequence[int], seed: int):
    """log_probs [steps, batch, CLASSES], labels, input lengths (the longest is `steps`), label lengths."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (steps, batch, CLASSES))
    log_probs = (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)
    label_lengths = rng.integers(label_range[0], label_range[1] + 1, batch).astype(np.int32)
    labels = rng.integers(1, CLASSES, (batch, int(label_lengths.max()))).astype(np.int32)
    input_lengths = np.maximum(label_lengths + 10, steps - rng.integers(0, steps // 8 + 1, batch))
    input_lengths = np.minimum(input_lengths, steps).astype(np.int32)
    input_lengths[0] = steps
    return log_probs, labels, input_lengths, label_lengths


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=357, help="output frames (default 357: the small preset's 1428 input frames)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--labels", default="150,250", help="label lengths drawn from this range (default 150,250)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    label_range = [int(v) for v in args.labels.split(",")]
    if len(label_range) != 2 or not 0 <= label_range[0] <= label_range[1] or label_range[1] > args.steps:
        parser.error("--labels takes LOW,HIGH with 0 <= LOW <= HIGH <= --steps")

    from bench.harness import milliseconds_per_call, require_operator
    from ds2.kernels import library_path
    require_operator(parser, "train.ctc_kernel", "native")

    import mindspore as ms
    from mindspore import nn

    from ds2 import native_ops
    from ds2.model import CTCLoss

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    library = ctypes.CDLL(str(library_path()))
    library.ctc_loss_calls.restype = ctypes.c_int64
    library.ctc_loss_fallbacks.restype = ctypes.c_int64
    batch = [ms.Tensor(a) for a in random_batch(args.steps, args.batch, label_range, args.seed)]

    class Loss(nn.Cell):
        def __init__(self, operator):
            super().__init__()
            self.ctc = CTCLoss()
            self.ctc.set_operator(operator)

        def construct(self, log_probs, labels, input_lengths, label_lengths):
            return self.ctc(log_probs, input_lengths, labels, label_lengths)

    print(f"log_probs [{args.steps}, {args.batch}, {CLASSES}], label lengths "
          f"{batch[3].asnumpy().tolist()}, input lengths {batch[2].asnumpy().tolist()}; {args.repeats} calls")
    results = {}
    for name, operator in (("MindSpore's CTCLoss", None), ("ds2's operator", native_ops.ctc_operator())):
        grad = ms.jit(ms.value_and_grad(Loss(operator), grad_position=0))
        calls = library.ctc_loss_calls()
        results[name] = milliseconds_per_call(lambda: grad(*batch)[1].asnumpy(), args.repeats, warmup=5)
        if operator is not None and library.ctc_loss_calls() - calls != args.repeats + 5:
            raise SystemExit("ctc_loss_speed: the operator did not run once per call")
        print(f"{name}: {results[name]:.2f} ms per call (loss and gradient)")
    ratio = results["ds2's operator"] / results["MindSpore's CTCLoss"]
    print(f"ds2's operator / MindSpore's: {ratio:.3f}x the time; "
          f"utterances in log space: {library.ctc_loss_fallbacks()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
