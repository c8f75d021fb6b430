"""Which of the model's operators MindSpore's CPU backend runs in bfloat16 and float16, forward and
backward (GRAPH_MODE): can ds2 train in a lower precision on this CPU?

    python bench/dtype_support.py        # in the CPU image, a few seconds

Each operator the seed model uses (MatMul, Conv2D, LSTM, BatchNorm, the activations, log-softmax,
an elementwise product) runs on small random tensors cast to the dtype; a row says the output
dtype, or the first lines of MindSpore's refusal.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np


def output_dtype(run) -> str:
    """The dtype of run()'s result, or FAIL and the first two lines of MindSpore's refusal."""
    try:
        return str(run().dtype)
    except Exception as exc:  # noqa: BLE001
        lines = [l for l in str(exc).splitlines() if l.strip() and not l.startswith("-")]
        return "FAIL: " + " | ".join(lines[:2])[:220]


def main() -> None:
    import mindspore as ms
    from mindspore import nn, ops
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    # MindSpore writes its failure reports under ./rank_0: keep them out of the checkout.
    os.chdir(tempfile.mkdtemp(prefix="ds2-dtype-support-"))
    rng = np.random.default_rng(0)

    class Op(nn.Cell):
        """One operator with the inputs as they come: MatMul, matmul (MatMulExt), BatchMatMul, Conv2D."""

        def __init__(self, op):
            super().__init__()
            self.op = op

        def construct(self, *args):
            return self.op(*args)

    class Lstm(nn.Cell):
        def __init__(self):
            super().__init__()
            self.op = ops.LSTM(16, 8, 1, True, False, 0.0)

        def construct(self, x, h, c, w):
            return self.op(x, h, c, w)[0]

    class Unary(nn.Cell):
        def __init__(self, kind):
            super().__init__()
            self.kind = kind

        def construct(self, a):
            if self.kind == "tanh":
                return ops.tanh(a)
            if self.kind == "sigmoid":
                return ops.sigmoid(a)
            if self.kind == "log_softmax":
                return ops.log_softmax(a, -1)
            return a * a

    class Bn(nn.Cell):
        def __init__(self, dtype):
            super().__init__()
            self.bn = nn.BatchNorm1d(16, dtype=dtype) if dtype is not None else nn.BatchNorm1d(16)

        def construct(self, a):
            return self.bn(a)

    class Loss(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def construct(self, *args):
            return self.net(*args).astype(ms.float32).sum()

    cases = [("MatMul", lambda: Op(ops.MatMul()), [(4, 16), (16, 8)]),
             ("matmul (MatMulExt)", lambda: Op(ops.matmul), [(4, 16), (16, 8)]),
             ("BatchMatMul", lambda: Op(ops.BatchMatMul()), [(2, 4, 16), (2, 16, 8)]),
             ("Conv2D", lambda: Op(ops.Conv2D(8, (3, 3), pad_mode="pad", pad=1)), [(2, 1, 8, 8), (8, 1, 3, 3)]),
             ("LSTM", Lstm, [(5, 2, 16), (1, 2, 8), (1, 2, 8), (4 * 8 * (16 + 8) + 4 * 8, 1, 1)]),
             ("tanh", lambda: Unary("tanh"), [(4, 16)]), ("sigmoid", lambda: Unary("sigmoid"), [(4, 16)]),
             ("log_softmax", lambda: Unary("log_softmax"), [(4, 16)]), ("mul", lambda: Unary("mul"), [(4, 16)])]
    for dtype in (ms.bfloat16, ms.float16):
        for name, make, shapes in cases + [("BatchNorm1d", lambda: Bn(None), [(4, 16)])]:
            args = [ms.Tensor(rng.standard_normal(s).astype(np.float32)).astype(dtype) for s in shapes]
            record = {"op": name, "dtype": str(dtype)}
            net = make()
            record["forward"] = output_dtype(lambda: net(*args))
            record["backward"] = output_dtype(lambda: ms.jit(ms.grad(Loss(net), grad_position=0))(*args))
            print(f"{name:20} {record['dtype']:9} forward: {record['forward']}\n{'':30} backward: {record['backward']}",
                  flush=True)


if __name__ == "__main__":
    main()
