"""The DS2 network: exact output lengths, padding that never leaks, LSTM and CTC vs PyTorch."""
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

from ds2.config import ModelConfig, seed_preset  # noqa: E402
from ds2.model import BiLSTM, ConvBlock, CTCLoss, DeepSpeech2, TrainNetwork  # noqa: E402
from ds2.shapes import output_lengths  # noqa: E402

N_BINS = 33


def tiny_config(**changes) -> ModelConfig:
    cfg = ModelConfig(conv_channels=3, conv1_kernel=(5, 7), conv1_stride=(2, 2), conv2_kernel=(5, 5),
                      conv2_stride=(2, 2), rnn_hidden=8, rnn_layers=2, activation="hardtanh")
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module", autouse=True)
def pynative_mode():
    # Same kernels as graph mode without a compile per shape, which keeps these tests fast;
    # the training step itself is compiled in test_train.py and the slow seed-preset test.
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(3)


@pytest.mark.parametrize("strides", [((2, 2), (2, 1)), ((2, 2), (2, 2)), ((2, 3), (1, 2))])
def test_output_lengths_match_the_model(strides):
    cfg = tiny_config(conv1_stride=strides[0], conv2_stride=strides[1])
    model = DeepSpeech2(cfg, N_BINS)
    model.set_train(False)
    frames = np.array([41, 40, 39, 17, 1], dtype=np.int32)
    features = np.random.default_rng(0).standard_normal((5, 1, N_BINS, 41)).astype(np.float32)
    log_probs, lengths = model(ms.Tensor(features), ms.Tensor(frames))
    assert lengths.asnumpy().tolist() == [int(output_lengths(int(f), cfg)) for f in frames]
    assert log_probs.shape[0] == output_lengths(41, cfg)
    assert log_probs.shape[1:] == (5, len(cfg.labels))


@pytest.mark.parametrize("merge", ["sum", "concat"])
def test_padding_does_not_change_an_utterance_outputs(merge):
    cfg = tiny_config(rnn_merge=merge, activation="tanh")
    model = DeepSpeech2(cfg, N_BINS)
    model.set_train(False)  # batch statistics would mix utterances; eval mode must be exact
    rng = np.random.default_rng(1)
    short = rng.standard_normal((N_BINS, 26)).astype(np.float32)
    other = rng.standard_normal((N_BINS, 60)).astype(np.float32)
    alone, alone_len = model(ms.Tensor(short[None, None]), ms.Tensor(np.array([26], np.int32)))
    batch = np.zeros((2, 1, N_BINS, 64), np.float32)
    batch[0, 0, :, :60] = other
    batch[1, 0, :, :26] = short
    batch[1, 0, :, 26:] = 5.0  # padding content must not matter either, not only its length
    together, lengths = model(ms.Tensor(batch), ms.Tensor(np.array([60, 26], np.int32)))
    n = int(alone_len.asnumpy()[0])
    assert int(lengths.asnumpy()[1]) == n
    np.testing.assert_allclose(together.asnumpy()[:n, 1], alone.asnumpy()[:n, 0], atol=1e-5)


@pytest.mark.parametrize("time_kernel", [11, 4])
def test_convolution_by_time_taps_equals_conv2d_and_its_gradients(time_kernel):
    # Compiled with dynamic shapes, as training runs it, at several widths; an even kernel too.
    direct = ConvBlock(3, 4, (5, time_kernel), (2, 1), "hardtanh")
    tapped = ConvBlock(3, 4, (5, time_kernel), (2, 1), "hardtanh")
    tapped.conv.weight.set_data(direct.conv.weight.data.copy())
    tapped.conv.bias.set_data(direct.conv.bias.data.copy())
    tapped.set_time_taps(True)

    class SquaredOutput(ms.nn.Cell):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def construct(self, x, lengths):
            return (self.block(x, lengths)[0] ** 2).sum()

    def compiled(block):
        loss = SquaredOutput(block)
        loss.set_inputs(ms.Tensor(shape=[None, 3, 9, None], dtype=ms.float32), ms.Tensor(shape=[None], dtype=ms.int32))
        return ms.jit(ms.value_and_grad(loss, 0, block.trainable_params()))

    run_direct, run_tapped = compiled(direct), compiled(tapped)
    rng = np.random.default_rng(5)
    for batch, width in ((2, 13), (1, 16), (3, 37), (2, 4)):
        x = ms.Tensor(rng.standard_normal((batch, 3, 9, width)).astype(np.float32))
        lengths = ms.Tensor(np.full((batch,), width - 2, np.int32))
        (loss_a, (dx_a, dw_a)), (loss_b, (dx_b, dw_b)) = run_direct(x, lengths), run_tapped(x, lengths)
        np.testing.assert_allclose(loss_b.asnumpy(), loss_a.asnumpy(), rtol=1e-5)
        np.testing.assert_allclose(dx_b.asnumpy(), dx_a.asnumpy(), rtol=1e-4, atol=1e-5)
        for a, b in zip(dw_a, dw_b):
            np.testing.assert_allclose(b.asnumpy(), a.asnumpy(), rtol=1e-4, atol=1e-4)


def test_time_taps_apply_only_to_convolutions_with_time_stride_1():
    cfg = tiny_config(conv1_kernel=(5, 7), conv1_stride=(2, 2), conv2_kernel=(5, 11), conv2_stride=(2, 1))
    model = DeepSpeech2(cfg, N_BINS)
    model.set_conv_time_taps(True)
    assert [block.time_taps for block in model.conv] == [False, True]
    with pytest.raises(ValueError, match="time stride of 1"):
        model.conv[0].set_time_taps(True)


def test_the_training_step_uses_time_taps_on_cpu_only():
    from ds2.config import load_config
    from ds2.step import conv_time_taps
    assert conv_time_taps(load_config("seed"))
    assert not conv_time_taps(load_config("seed", overrides=["train.conv_time_taps=false"]))
    assert not conv_time_taps(load_config("seed", overrides=["train.device=GPU"]))   # measured on oneDNN only


def test_bilstm_matches_pytorch_gate_order_and_reversal():
    torch = pytest.importorskip("torch")
    lstm = BiLSTM(input_size=6, hidden_size=5)
    reference = torch.nn.LSTM(6, 5, bidirectional=True)
    for name, param in reference.named_parameters():  # weight_ih_l0_reverse -> weight_ih_reverse
        getattr(lstm, name.replace("_l0", "")).set_data(ms.Tensor(param.detach().numpy()))
    x = np.random.default_rng(2).standard_normal((12, 3, 6)).astype(np.float32)
    lengths = np.array([12, 7, 3], np.int32)
    forward, backward = lstm(ms.Tensor(x), ms.Tensor(lengths))
    ours = np.concatenate([forward.asnumpy(), backward.asnumpy()], axis=2)
    for b, n in enumerate(lengths):
        expected, _ = reference(torch.from_numpy(x[:n, b:b + 1]))
        np.testing.assert_allclose(ours[:n, b], expected.detach().numpy()[:, 0], atol=1e-5)


def test_ctc_reads_only_true_label_lengths_and_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    steps, batch, classes = 30, 3, 29
    log_probs = torch.randn(steps, batch, classes).log_softmax(-1)
    frames = np.array([30, 22, 15], np.int32)
    label_lengths = np.array([9, 4, 6], np.int32)
    labels = np.zeros((batch, 12), np.int32)
    for b, n in enumerate(label_lengths):
        labels[b, :n] = rng.integers(1, classes, n)
    loss = CTCLoss()(ms.Tensor(log_probs.numpy()), ms.Tensor(frames), ms.Tensor(labels),
                     ms.Tensor(label_lengths))
    junk = labels.copy()
    for b, n in enumerate(label_lengths):
        junk[b, n:] = rng.integers(1, classes, 12 - n)  # padding that would be real labels if read
    loss_junk = CTCLoss()(ms.Tensor(log_probs.numpy()), ms.Tensor(frames), ms.Tensor(junk),
                          ms.Tensor(label_lengths))
    expected = torch.nn.functional.ctc_loss(log_probs, torch.from_numpy(labels).long(),
                                            torch.from_numpy(frames).long(),
                                            torch.from_numpy(label_lengths).long(), reduction="none").mean()
    assert float(loss.asnumpy()) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss_junk.asnumpy()) == pytest.approx(float(expected), rel=1e-5)


def test_parameter_names_are_readable():
    names = [p.name for p in DeepSpeech2(tiny_config(), N_BINS).get_parameters()]
    for expected in ["conv.0.conv.weight", "conv.1.bn.gamma", "rnns.0.lstm.weight_ih",
                     "rnns.1.lstm.weight_hh_reverse", "rnns.1.bn.moving_mean", "fc_bn.beta", "fc.weight"]:
        assert expected in names


@pytest.mark.slow
def test_seed_preset_trains_one_step_on_librispeech_shaped_input():
    from ds2.step import build_optimizer, make_train_step

    ms.set_context(mode=ms.GRAPH_MODE)
    cfg = seed_preset()
    model = DeepSpeech2(cfg.model, cfg.features.n_bins)
    optimizer = build_optimizer(model, cfg.train)
    step = make_train_step(TrainNetwork(model), optimizer, cfg.train.grad_clip)
    rng = np.random.default_rng(5)
    frames = np.array([301, 260], np.int32)  # 3 s and 2.6 s at 10 ms per frame
    features = np.zeros((2, 1, cfg.features.n_bins, 304), np.float32)
    for b, n in enumerate(frames):
        features[b, 0, :, :n] = rng.standard_normal((cfg.features.n_bins, n))
    labels = rng.integers(1, len(cfg.model.labels), (2, 40)).astype(np.int32)
    before = model.rnns[4].lstm.weight_hh.asnumpy().copy()
    loss, grad_norm, applied = step(ms.Tensor(features), ms.Tensor(frames), ms.Tensor(labels),
                                    ms.Tensor(np.array([40, 31], np.int32)), ms.Tensor(1e-4, ms.float32))
    assert np.isfinite(float(loss.asnumpy())) and float(grad_norm.asnumpy()) > 0
    assert bool(applied.asnumpy())
    assert not np.array_equal(before, model.rnns[4].lstm.weight_hh.asnumpy())
