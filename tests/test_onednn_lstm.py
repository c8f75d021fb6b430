"""ds2's oneDNN LSTM operator (train.lstm_kernel): the same loss and gradients as MindSpore's kernel,
in a compiled graph with dynamic shapes and with one graph per shape, and a bounded cache."""
import ctypes
import os

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

from ds2 import lstm_kernel, onednn_lstm  # noqa: E402
from ds2.config import load_config  # noqa: E402
from ds2.errors import UserError  # noqa: E402
from ds2.model import DeepSpeech2, TrainNetwork  # noqa: E402
from tests.test_model import N_BINS, tiny_config  # noqa: E402

IN_CPU_IMAGE = os.environ.get("DS2_IMAGE_FLAVOR") == "cpu"
needs_library = pytest.mark.skipif(lstm_kernel.missing_reason() is not None and not IN_CPU_IMAGE,
                                   reason="the oneDNN LSTM library is built in the CPU image")


def test_the_cpu_image_has_the_library():
    if not IN_CPU_IMAGE:
        pytest.skip("checked in the CPU image")
    assert lstm_kernel.missing_reason() is None
    assert load_config("seed").train.lstm_kernel == "auto"
    assert lstm_kernel.chosen_kernel("auto", "CPU") == "onednn"


def test_auto_takes_the_builtin_kernel_where_the_operator_cannot_run(monkeypatch, tmp_path):
    monkeypatch.setenv(lstm_kernel.LIBRARY_VARIABLE, str(tmp_path / "absent.so"))
    assert lstm_kernel.chosen_kernel("auto", "CPU") == "builtin"
    assert lstm_kernel.chosen_kernel("auto", "GPU") == "builtin"
    assert lstm_kernel.chosen_kernel("builtin", "CPU") == "builtin"
    with pytest.raises(UserError, match="no oneDNN LSTM library at .*absent.so.*train.lstm_kernel=builtin"):
        lstm_kernel.chosen_kernel("onednn", "CPU")
    not_a_library = tmp_path / "libds2_onednn_lstm.so"
    not_a_library.write_text("not an ELF file")
    monkeypatch.setenv(lstm_kernel.LIBRARY_VARIABLE, str(not_a_library))
    assert lstm_kernel.chosen_kernel("auto", "CPU") == "builtin"
    with pytest.raises(UserError, match="does not load .*train.lstm_kernel=builtin"):
        lstm_kernel.chosen_kernel("onednn", "CPU")
    with pytest.raises(UserError, match="CPU only .*train.lstm_kernel=auto or builtin"):
        lstm_kernel.chosen_kernel("onednn", "GPU")
    assert not lstm_kernel.trains_on_operator("onednn", "CPU")   # training stops with the error above


def loss_and_gradients(operator, dynamic: bool, batches, recompute: bool = False):
    """The tiny model's loss and gradients for each batch, BiLSTM on `operator` (None: ops.LSTM)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(11)
    model = DeepSpeech2(tiny_config(rnn_layers=3, rnn_merge="concat"), N_BINS)
    model.set_lstm_operator(operator)
    if recompute:   # train.recompute_rnn: the backward pass runs each layer's forward again
        for layer in model.rnns:
            layer.recompute()
    network = TrainNetwork(model)
    network.set_train(True)
    if dynamic:
        network.set_inputs(ms.Tensor(shape=[None, 1, N_BINS, None], dtype=ms.float32),
                           ms.Tensor(shape=[None], dtype=ms.int32), ms.Tensor(shape=[None, None], dtype=ms.int32),
                           ms.Tensor(shape=[None], dtype=ms.int32))
    grad = ms.jit(ms.value_and_grad(network, None, network.trainable_params()))
    results = []
    for features, frames, labels, label_lengths in batches:
        loss, grads = grad(ms.Tensor(features), ms.Tensor(frames), ms.Tensor(labels), ms.Tensor(label_lengths))
        results.append((float(loss.asnumpy()), [g.asnumpy().copy() for g in grads]))
    return results


def random_batches():
    rng = np.random.default_rng(4)
    batches = []
    for batch, width in ((3, 41), (1, 30), (4, 57), (3, 41), (2, 17)):
        frames = rng.integers(width // 2, width + 1, batch).astype(np.int32)
        frames[0] = width
        features = rng.standard_normal((batch, 1, N_BINS, width)).astype(np.float32)
        label_lengths = rng.integers(1, 4, batch).astype(np.int32)
        labels = rng.integers(1, 20, (batch, 4)).astype(np.int32)
        batches.append((features, frames, labels, label_lengths))
    return batches


@needs_library
@pytest.mark.parametrize("dynamic, recompute", [(True, False), (False, False), (True, True)],
                         ids=["dynamic-shapes", "graph-per-shape", "recompute-rnn"])
def test_the_operator_gives_the_builtin_kernels_loss_and_gradients(dynamic, recompute):
    batches = random_batches()
    builtin = loss_and_gradients(None, dynamic, batches, recompute)
    calls_before = cache_report()[2]
    onednn = loss_and_gradients(onednn_lstm.forward_operator(), dynamic, batches, recompute)
    # 3 layers x 2 directions per batch (and again per layer under recompute): the operator did run
    assert cache_report()[2] >= calls_before + 6 * len(batches)
    for (want_loss, want_grads), (loss, grads) in zip(builtin, onednn):
        assert loss == pytest.approx(want_loss, rel=1e-5)
        assert len(grads) == len(want_grads)
        for want, got in zip(want_grads, grads):
            # atol: some gradients (BatchNorm shifts before another BatchNorm) are rounding noise around 0.
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def library():
    loaded = ctypes.CDLL(str(lstm_kernel.library_path()))
    loaded.lstm_workspace_floats.restype = ctypes.c_int64
    loaded.lstm_workspace_floats.argtypes = [ctypes.c_int64] * 4
    return loaded


def cache_report():
    """(shapes kept, arena bytes, forward calls so far) from the library MindSpore loaded too."""
    report = (ctypes.c_int64 * 3)()
    library().lstm_cache_report(report)
    return tuple(report)


@needs_library
def test_the_library_keeps_primitives_for_a_bounded_number_of_shapes():
    floats = [library().lstm_workspace_floats(steps, 2, 5, 3) for steps in range(1, 81)]
    assert all(f > 0 for f in floats) and floats == sorted(floats)   # longer sequences, larger workspace
    assert cache_report()[0] == 64
    assert library().lstm_workspace_floats(3, 2, 5, 0) == -1        # no LSTM of hidden size 0: -1, no crash
