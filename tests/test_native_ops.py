"""ds2's own operators (train.lstm_kernel, train.conv_kernel, train.ctc_kernel): the same loss and
gradients as MindSpore's kernels, in a compiled graph with dynamic shapes and with one graph per shape,
bounded caches, and the choice of kernel with its errors."""
import ctypes
import os

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import ops  # noqa: E402

from ds2 import kernels, native_ops  # noqa: E402
from ds2.config import load_config  # noqa: E402
from ds2.errors import UserError  # noqa: E402
from ds2.model import DeepSpeech2, TrainNetwork  # noqa: E402
from tests.test_model import N_BINS, tiny_config  # noqa: E402

IN_CPU_IMAGE = os.environ.get("DS2_IMAGE_FLAVOR") == "cpu"
needs_library = pytest.mark.skipif(kernels.missing_reason("train.lstm_kernel") is not None and not IN_CPU_IMAGE,
                                   reason="ds2's native library is built in the CPU image")
SETTINGS = list(kernels.OPERATORS)


def test_the_cpu_image_has_the_library():
    if not IN_CPU_IMAGE:
        pytest.skip("checked in the CPU image")
    cfg = load_config("seed")
    for key in SETTINGS:
        assert kernels.missing_reason(key) is None
        assert getattr(cfg.train, key.split(".")[1]) == "auto"
        assert kernels.chosen_kernel(key, "auto", "CPU") == kernels.OPERATORS[key]["value"]


@pytest.mark.parametrize("key", SETTINGS)
def test_auto_takes_the_builtin_kernel_where_the_operator_cannot_run(monkeypatch, tmp_path, key):
    operator = kernels.OPERATORS[key]["value"]
    monkeypatch.setenv(kernels.LIBRARY_VARIABLE, str(tmp_path / "absent.so"))
    assert kernels.chosen_kernel(key, "auto", "CPU") == "builtin"
    assert kernels.chosen_kernel(key, "auto", "GPU") == "builtin"
    assert kernels.chosen_kernel(key, "builtin", "CPU") == "builtin"
    with pytest.raises(UserError, match=f"{key}={operator}: no ds2 native library at .*absent.so.*{key}=builtin"):
        kernels.chosen_kernel(key, operator, "CPU")
    not_a_library = tmp_path / "libds2_native.so"
    not_a_library.write_text("not an ELF file")
    monkeypatch.setenv(kernels.LIBRARY_VARIABLE, str(not_a_library))
    assert kernels.chosen_kernel(key, "auto", "CPU") == "builtin"
    with pytest.raises(UserError, match=f"does not load .*{key}=builtin"):
        kernels.chosen_kernel(key, operator, "CPU")
    with pytest.raises(UserError, match=f"CPU only .*{key}=auto or builtin"):
        kernels.chosen_kernel(key, operator, "GPU")
    assert not kernels.trains_on_operator(key, operator, "CPU")   # training stops with the error above


@needs_library
def test_a_library_without_an_operators_functions_is_an_older_build(monkeypatch, tmp_path):
    """A library that loads but lacks what MindSpore calls for one setting: auto falls back for that
    setting alone, an explicit value names the missing functions."""
    monkeypatch.setattr(kernels, "_inspect", lambda path: (None, frozenset(kernels.OPERATORS["train.lstm_kernel"]["exports"])))
    assert kernels.chosen_kernel("train.lstm_kernel", "auto", "CPU") == "onednn"
    assert kernels.chosen_kernel("train.conv_kernel", "auto", "CPU") == "builtin"
    with pytest.raises(UserError, match=r"lacks conv_forward, .* \(an older build\).*train.conv_kernel=builtin"):
        kernels.chosen_kernel("train.conv_kernel", "onednn", "CPU")


def loss_and_gradients(operators, dynamic: bool, batches, recompute: bool = False, model_changes=None):
    """The tiny model's loss, gradients and BatchNorm moving statistics after each batch, on `operators`
    ({"lstm", "conv", "ctc", "batch_norm", "mask"}: ds2's operator for each one named, MindSpore's kernels for
    the others)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(11)
    model = DeepSpeech2(tiny_config(**(model_changes or dict(rnn_layers=3, rnn_merge="concat"))), N_BINS)
    # Time taps as in training on CPU (train.conv_time_taps), but off where the convolution operator is
    # tested, so that it computes every convolution (taps come first).
    model.set_conv_time_taps("conv" not in operators)
    if "lstm" in operators:
        model.set_lstm_operator(native_ops.lstm_operator())
    if "conv" in operators:
        model.set_conv_operators(native_ops.ConvOperator)
    if recompute:   # train.recompute_rnn: the backward pass runs each layer's forward again
        for layer in model.rnns:
            layer.recompute()
    network = TrainNetwork(model)
    if "ctc" in operators:
        network.loss.set_operator(native_ops.ctc_operator())
    if "batch_norm" in operators:
        model.set_batch_norm_operator(native_ops.batch_norm_operator())
    if "mask" in operators:
        model.set_mask_operator(native_ops.TimeMask())
    network.set_train(True)
    if dynamic:
        network.set_inputs(ms.Tensor(shape=[None, 1, N_BINS, None], dtype=ms.float32),
                           ms.Tensor(shape=[None], dtype=ms.int32), ms.Tensor(shape=[None, None], dtype=ms.int32),
                           ms.Tensor(shape=[None], dtype=ms.int32))
    grad = ms.jit(ms.value_and_grad(network, None, network.trainable_params()))
    results = []
    for features, frames, labels, label_lengths in batches:
        loss, grads = grad(ms.Tensor(features), ms.Tensor(frames), ms.Tensor(labels), ms.Tensor(label_lengths))
        moving = [p.asnumpy().copy() for p in network.get_parameters() if "moving_" in p.name]
        results.append((float(loss.asnumpy()), [g.asnumpy().copy() for g in grads], moving))
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
def test_the_lstm_operator_gives_the_builtin_kernels_loss_and_gradients(dynamic, recompute):
    batches = random_batches()
    builtin = loss_and_gradients({}, dynamic, batches, recompute)
    calls_before = cache_report()[2]
    onednn = loss_and_gradients({"lstm"}, dynamic, batches, recompute)
    # 3 layers x 2 directions per batch (and again per layer under recompute): the operator did run
    assert cache_report()[2] >= calls_before + 6 * len(batches)
    assert_same(builtin, onednn)


def assert_same(want_results, results):
    """Per batch: the same loss, gradients and BatchNorm moving statistics after it."""
    assert len(results) == len(want_results)
    for (want_loss, want_grads, want_moving), (loss, grads, moving) in zip(want_results, results):
        assert loss == pytest.approx(want_loss, rel=1e-5)
        assert len(grads) == len(want_grads) and len(moving) == len(want_moving) > 0
        for want, got in zip(want_grads, grads):
            # atol: some gradients are rounding noise around 0: the convolutions' biases and the BatchNorm
            # shifts that another BatchNorm follows have a gradient of exactly 0 in exact arithmetic.
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=3e-5)
        for want, got in zip(want_moving, moving):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def conv_calls():
    """(forward, input-gradient, weight-gradient) calls of the convolution operator so far."""
    report = (ctypes.c_int64 * 5)()
    library().conv_cache_report(report)
    return tuple(report[2:])


@needs_library
@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-shapes", "graph-per-shape"])
@pytest.mark.parametrize("conv2_stride, activation", [((2, 2), "hardtanh"), ((2, 1), "tanh")],
                         ids=["strided", "time-stride-1"])
def test_the_conv_operator_gives_the_builtin_kernels_loss_and_gradients(dynamic, conv2_stride, activation):
    """Both convolutions on the operator, the second with a time stride of 2 and of 1 (which the builtin
    side computes by time taps): the model's loss and every gradient agree."""
    batches = random_batches()
    changes = dict(conv2_stride=conv2_stride, activation=activation)
    builtin = loss_and_gradients({}, dynamic, batches, model_changes=changes)
    before = conv_calls()
    ours = loss_and_gradients({"conv"}, dynamic, batches, model_changes=changes)
    forward, data, weights = (after - start for after, start in zip(conv_calls(), before))
    # Two convolutions per batch; the first convolution's input gradient is never computed.
    assert (forward, data, weights) == (2 * len(batches), len(batches), 2 * len(batches))
    assert_same(builtin, ours)


@needs_library
@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-shapes", "graph-per-shape"])
def test_every_operator_together_gives_the_builtin_kernels_loss_and_gradients(dynamic):
    batches = random_batches()
    everything = {"lstm", "conv", "ctc", "batch_norm", "mask"}
    assert_same(loss_and_gradients({}, dynamic, batches), loss_and_gradients(everything, dynamic, batches))


def batch_norm_calls():
    return library().batch_norm_calls()


@needs_library
@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-shapes", "graph-per-shape"])
def test_the_batch_norm_operator_gives_the_builtin_kernels_outputs_gradients_and_moving_statistics(dynamic):
    """Every BatchNorm of a model with BatchNorm before each BiLSTM layer but the first (2-D after the
    convolutions, 1-D on the sequences): loss, gradients and moving statistics after each batch."""
    batches = random_batches()
    changes = dict(rnn_layers=3, rnn_batch_norm=True)
    builtin = loss_and_gradients({}, dynamic, batches, model_changes=changes)
    before = batch_norm_calls()
    ours = loss_and_gradients({"batch_norm"}, dynamic, batches, model_changes=changes)
    assert batch_norm_calls() - before == 5 * len(batches)   # 2 after the convolutions, 2 before BiLSTMs, fc_bn
    assert_same(builtin, ours)


def library():
    loaded = ctypes.CDLL(str(kernels.library_path()))
    loaded.lstm_workspace_floats.restype = ctypes.c_int64
    loaded.lstm_workspace_floats.argtypes = [ctypes.c_int64] * 4
    loaded.ctc_loss_fallbacks.restype = ctypes.c_int64
    loaded.batch_norm_calls.restype = ctypes.c_int64
    loaded.time_mask_calls.restype = ctypes.c_int64
    return loaded


def cache_report():
    """(shapes kept, arena bytes, forward calls so far) from the library MindSpore loaded too."""
    report = (ctypes.c_int64 * 3)()
    library().lstm_cache_report(report)
    return tuple(report)


def random_geometries(count: int, seed: int):
    """Convolutions of random shape, stride and padding that give at least one output: (x shape, weight
    shape, stride, padding); every third has several input channels, the others one."""
    rng = np.random.default_rng(seed)
    geometries = []
    while len(geometries) < count:
        kernel = tuple(int(k) for k in rng.integers(1, 10, 2))
        stride = tuple(int(k) for k in rng.integers(1, 4, 2))
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        height, width = int(rng.integers(1, 30)), int(rng.integers(1, 50))
        if height + 2 * padding[0] < kernel[0] or width + 2 * padding[1] < kernel[1]:
            continue
        channels = 1 if len(geometries) % 3 else int(rng.integers(2, 10))
        x_shape = (int(rng.integers(1, 4)), channels, height, width)
        geometries.append((x_shape, (int(rng.integers(1, 20)), channels) + kernel, stride, padding))
    return geometries


@pytest.fixture(params=["avx2-where-present", "any-x86-64"])
def vector_build(request):
    """The one-channel convolution loops as the CPU allows, then their build for any x86-64 CPU."""
    library().conv_plain_vectors(int(request.param == "any-x86-64"))
    yield request.param
    library().conv_plain_vectors(0)


@needs_library
@pytest.mark.parametrize("x_shape, weight_shape, stride, padding", random_geometries(24, seed=5))
def test_the_conv_operator_matches_conv2d_on_random_geometries(x_shape, weight_shape, stride, padding,
                                                               vector_build):
    """Output and every gradient against MindSpore's Conv2D on shapes, strides and paddings drawn at random:
    one input channel (ds2's own loops, output channels in vectors of 8, in both builds) and several
    (oneDNN)."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    rng = np.random.default_rng(sum(x_shape) + sum(weight_shape))
    x = ms.Tensor(rng.standard_normal(x_shape).astype(np.float32))
    weight = ms.Tensor(rng.standard_normal(weight_shape).astype(np.float32))
    bias = ms.Tensor(rng.standard_normal(weight_shape[0]).astype(np.float32))
    operator = native_ops.ConvOperator(stride, padding)

    def builtin(x, weight, bias):
        y = ops.conv2d(x, weight, None, stride=stride, pad_mode="pad", padding=padding)
        return ops.bias_add(y, bias)

    want_y = builtin(x, weight, bias)
    np.testing.assert_allclose(operator(x, weight, bias).asnumpy(), want_y.asnumpy(), rtol=1e-4, atol=1e-4)
    dy = ms.Tensor(rng.standard_normal(want_y.shape).astype(np.float32))
    grads = ms.grad(lambda *a: (operator(*a) * dy).sum(), grad_position=(0, 1, 2))(x, weight, bias)
    want_grads = ms.grad(lambda *a: (builtin(*a) * dy).sum(), grad_position=(0, 1, 2))(x, weight, bias)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-4, atol=1e-4)


@needs_library
def test_the_library_keeps_primitives_for_a_bounded_number_of_shapes():
    floats = [library().lstm_workspace_floats(steps, 2, 5, 3) for steps in range(1, 81)]
    assert all(f > 0 for f in floats) and floats == sorted(floats)   # longer sequences, larger workspace
    assert cache_report()[0] == 64
    assert library().lstm_workspace_floats(3, 2, 5, 0) == -1        # no LSTM of hidden size 0: -1, no crash


def ctc_reference(log_probs, labels, input_lengths, label_lengths):
    """Float64 log-space CTC, blank 0: per-utterance loss (0 where the labels cannot be aligned) and
    d loss / d logits = softmax - occupancy (0 past each utterance's frames and where the loss is 0)."""
    steps, batch, classes = log_probs.shape
    losses, grads = np.zeros(batch), np.zeros((steps, batch, classes))
    for b in range(batch):
        frames = int(input_lengths[b])
        states = [0]
        for label in labels[b, :label_lengths[b]]:
            states += [int(label), 0]
        if frames == 0:
            continue
        x = log_probs[:frames, b].astype(np.float64)
        emit = x[:, states]
        skip = np.array([s >= 2 and states[s] != 0 and states[s] != states[s - 2] for s in range(len(states))])

        def later(a, k):     # a[s - k] at s (-inf before the start)
            return np.r_[np.full(k, -np.inf), a][:len(a)]

        def earlier(a, k):   # a[s + k] at s (-inf past the end)
            return np.r_[a, np.full(k, -np.inf)][k:]

        def step(stay, one, two, may_skip):
            return np.logaddexp(np.logaddexp(stay, one), np.where(may_skip, two, -np.inf))

        alpha = np.full((frames, len(states)), -np.inf)
        alpha[0, :2] = emit[0, :2]
        for t in range(1, frames):
            a = alpha[t - 1]
            alpha[t] = step(a, later(a, 1), later(a, 2), skip) + emit[t]
        beta = np.full((frames, len(states)), -np.inf)
        beta[frames - 1, -2:] = 0
        skip_from = earlier(skip.astype(float), 2) > 0     # state s may jump to s + 2
        for t in range(frames - 2, -1, -1):
            n = beta[t + 1] + emit[t + 1]
            beta[t] = step(n, earlier(n, 1), earlier(n, 2), skip_from)
        total = np.logaddexp.reduce(alpha[frames - 1, -2:])
        if not np.isfinite(total):
            continue
        losses[b] = -total
        occupancy = np.exp(alpha + beta - total)
        for s, label in enumerate(states):
            grads[:frames, b, label] -= occupancy[:, s]
        grads[:frames, b] += np.exp(x)
    return losses, grads


def ctc_case(rng, steps, batch, classes, width, floor=None):
    """Random logits and labels: label lengths from 0 to `width`, repeated neighbours, padding rows of
    garbage past each utterance's frames and labels, one utterance too short for its labels. floor: some
    classes' logits pushed down to it, so that their probabilities underflow (the log-space pass)."""
    logits = rng.normal(0, 3, (steps, batch, classes)).astype(np.float32)
    if floor is not None:
        logits[:, :, 1:classes // 2] = floor
    label_lengths = rng.integers(0, width + 1, batch).astype(np.int32)
    labels = rng.integers(1, classes, (batch, width)).astype(np.int32)
    labels[:, 1::3] = labels[:, 0::3][:, :labels[:, 1::3].shape[1]]     # repeated neighbours
    input_lengths = np.minimum(steps, 2 * label_lengths + rng.integers(0, 6, batch)).astype(np.int32)
    input_lengths[0] = steps
    if batch > 2:
        label_lengths[1], input_lengths[1] = width, max(1, width // 2)   # cannot be aligned
    return logits, labels, input_lengths, label_lengths


@needs_library
@pytest.mark.parametrize("mode", ["graph", "pynative"])
def test_the_ctc_operator_gives_the_exact_loss_and_gradient(mode):
    """Against a float64 reference: random batches, then one whose probabilities underflow double
    (the operator's log-space pass)."""
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    operator = native_ops.ctc_operator()

    def total_loss(logits, labels, input_lengths, label_lengths, weights):
        loss, _ = operator(ops.log_softmax(logits, -1), labels, input_lengths, label_lengths)
        return (loss * weights).sum()

    grad = ms.value_and_grad(total_loss, grad_position=0)
    if mode == "graph":
        grad = ms.jit(grad)

    def losses_of(*inputs):
        return operator(*inputs)[0]

    loss_only = ms.jit(losses_of) if mode == "graph" else None
    rng = np.random.default_rng(5)
    fallbacks_before = library().ctc_loss_fallbacks()
    cases = [ctc_case(rng, steps, batch, classes, width)
             for steps, batch, classes, width in ((30, 4, 7, 9), (1, 2, 5, 1), (57, 3, 29, 20), (12, 5, 4, 5))]
    cases.append(ctc_case(rng, 40, 3, 9, 12, floor=-900.0))
    for logits, labels, input_lengths, label_lengths in cases:
        weights = rng.uniform(0.5, 2, logits.shape[1]).astype(np.float32)   # the bprop scales by d loss
        log_probs = logits - np.log(np.exp(logits.astype(np.float64)).sum(-1, keepdims=True))
        want_losses, want_grads = ctc_reference(log_probs, labels, input_lengths, label_lengths)
        _, got = grad(*(ms.Tensor(a) for a in (logits, labels, input_lengths, label_lengths, weights)))
        np.testing.assert_allclose(got.asnumpy(), want_grads * weights[None, :, None], rtol=1e-4, atol=1e-5)
        if loss_only is not None:
            losses = loss_only(*(ms.Tensor(a) for a in (log_probs.astype(np.float32), labels, input_lengths,
                                                        label_lengths))).asnumpy()
            np.testing.assert_allclose(losses, want_losses, rtol=1e-5, atol=1e-3)
        assert (want_losses[1] == 0) if logits.shape[1] > 2 else True      # the utterance that cannot be aligned
    assert library().ctc_loss_fallbacks() > fallbacks_before


@needs_library
def test_the_ctc_operator_refuses_labels_and_lengths_out_of_range():
    ms.set_context(mode=ms.GRAPH_MODE)
    ctc = native_ops.ctc_operator()

    @ms.jit
    def operator(*inputs):
        return ctc(*inputs)[0]

    log_probs = ms.Tensor(np.log(np.full((6, 2, 5), 0.2, np.float32)))
    good = (np.array([[1, 2], [3, 3]], np.int32), np.array([6, 5], np.int32), np.array([2, 2], np.int32))
    assert operator(log_probs, *(ms.Tensor(a) for a in good)).asnumpy().shape == (2,)
    for labels, input_lengths, label_lengths in (
            (np.array([[1, 5], [3, 3]], np.int32), good[1], good[2]),        # a label id past the classes
            (good[0], np.array([7, 5], np.int32), good[2]),                  # more frames than log_probs has
            (good[0], good[1], np.array([3, 2], np.int32))):                 # more labels than the row holds
        with pytest.raises(RuntimeError):
            operator(log_probs, ms.Tensor(labels), ms.Tensor(input_lengths), ms.Tensor(label_lengths))


@needs_library
@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-shapes", "graph-per-shape"])
def test_the_mask_operator_gives_the_products_values_and_gradients(dynamic):
    """The padding zeroed by the operator after the features, each convolution block and each BiLSTM
    layer: loss and gradients as with the broadcast mask's product, on batches whose padding holds noise."""
    batches = random_batches()
    builtin = loss_and_gradients({}, dynamic, batches)
    before = library().time_mask_calls()
    ours = loss_and_gradients({"mask"}, dynamic, batches)
    # forward: features, 2 convolution blocks, 3 BiLSTM layers; backward: each but the features'
    assert library().time_mask_calls() - before == 11 * len(batches)
    assert_same(builtin, ours)
