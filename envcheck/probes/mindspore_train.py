"""One real MindSpore training step on CPU in GRAPH_MODE: a tiny conv + BiLSTM + CTC network.

Forward, backward and an Adam step through `mindspore.jit`, as ds2's trainer does; passes when the
loss is finite and every parameter changed. This is the check that `import mindspore` and
`mindspore.run_check()` cannot make: graph compilation, the LSTM and CTC kernels and the optimizer.
"""
from __future__ import annotations

import importlib.util
import math
import time

from envcheck import progress
from envcheck.probes import imports

FEATURES, FRAMES, BATCH, CLASSES = 16, 20, 2, 6


def _network(ms, nn, ops):
    class TinyDeepSpeech(nn.Cell):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, (5, 5), stride=(2, 2), pad_mode="same", has_bias=False)
            self.lstm = nn.LSTM(4 * (FEATURES // 2), 16, num_layers=1, batch_first=True, bidirectional=True)
            self.fc = nn.Dense(32, CLASSES)
            self.ctc = nn.CTCLoss(blank=0, reduction="mean", zero_infinity=True)

        def construct(self, x, labels, input_lengths, label_lengths):
            h = ops.tanh(self.conv(x))                            # (batch, channels, features, frames)
            b, c, f, t = h.shape
            h = h.reshape(b, c * f, t).transpose(0, 2, 1)          # (batch, frames, channels * features)
            h, _ = self.lstm(h)
            log_probs = ops.log_softmax(self.fc(h), -1).transpose(1, 0, 2)  # (frames, batch, classes)
            return self.ctc(log_probs, labels, input_lengths, label_lengths)

    return TinyDeepSpeech()


def run(settings: dict) -> dict:
    if importlib.util.find_spec("mindspore") is None:
        return {"status": "fail", "summary": "mindspore is not installed", "findings": ["module-missing"],
                "details": {"missing_module": "mindspore"}}
    progress.mark("import mindspore")
    start = time.perf_counter()
    try:
        import numpy as np
        import mindspore as ms
        from mindspore import nn, ops
    except BaseException as exc:
        return imports.import_failure("mindspore", exc)
    import_s = time.perf_counter() - start

    progress.mark("build network")
    ms.set_context(mode=ms.GRAPH_MODE)
    if hasattr(ms, "set_device"):
        ms.set_device("CPU")
    else:
        ms.set_context(device_target="CPU")
    ms.set_seed(0)
    net = _network(ms, nn, ops)
    optimizer = nn.Adam(net.trainable_params(), learning_rate=1e-2)
    grad_fn = ms.value_and_grad(net, None, optimizer.parameters)

    @ms.jit
    def train_step(x, labels, input_lengths, label_lengths):
        loss, grads = grad_fn(x, labels, input_lengths, label_lengths)
        optimizer(grads)
        return loss

    rng = np.random.RandomState(0)
    x = ms.Tensor(rng.randn(BATCH, 1, FEATURES, FRAMES).astype(np.float32))
    labels = ms.Tensor(np.array([[1, 2, 3], [4, 5, 1]], np.int32))
    input_lengths = ms.Tensor(np.full(BATCH, FRAMES // 2, np.int32))
    label_lengths = ms.Tensor(np.full(BATCH, 3, np.int32))
    before = [p.asnumpy().copy() for p in net.trainable_params()]

    progress.mark("compile and run one training step")
    start = time.perf_counter()
    loss = float(train_step(x, labels, input_lengths, label_lengths).asnumpy())
    step_s = time.perf_counter() - start

    progress.mark("compare parameters")
    names = [p.name for p in net.trainable_params()]
    unchanged = [name for name, old, param in zip(names, before, net.trainable_params())
                 if np.array_equal(old, param.asnumpy())]
    details = {"mindspore": ms.__version__, "loss": loss, "parameters": len(names), "unchanged": unchanged,
               "import_s": round(import_s, 3), "compile_and_step_s": round(step_s, 3)}
    if not math.isfinite(loss):
        return {"status": "fail", "summary": f"training step gives a non-finite loss ({loss})", "details": details,
                "findings": ["train-loss-not-finite"]}
    if unchanged:
        return {"status": "fail", "summary": f"the optimizer step left {len(unchanged)} of {len(names)} parameters "
                f"unchanged, e.g. {unchanged[0]}", "details": details, "findings": ["train-params-unchanged"]}
    return {"status": "pass", "summary": f"mindspore {ms.__version__}: imported in {import_s:.1f} s; one GRAPH_MODE "
            f"step (compile included) in {step_s:.1f} s, loss {loss:.3f}, all {len(names)} parameters updated",
            "details": details}
