"""ds2 convert: model-zoo and deepspeech.pytorch checkpoints become ds2 checkpoints that compute the same
outputs; a torch checkpoint that would run code is refused without running it (the reader itself:
tests/test_checkpoint_torch_unpickler.py)."""
import argparse
import math
import re

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
torch = pytest.importorskip("torch")

from mindspore import nn, ops  # noqa: E402

from ds2 import convert  # noqa: E402
from ds2.checkpoint import layouts, storage  # noqa: E402
from ds2.config import DEFAULT_LABELS, Config, ModelConfig  # noqa: E402
from ds2.step import build_training_state  # noqa: E402
from ds2.checkpoint.transforms import label_order  # noqa: E402
from tests.helpers import RunsACommand  # noqa: E402

CHANNELS, KERNEL1, KERNEL2, HIDDEN = 4, (5, 3), (3, 3), 8


def convert_command(cfg, source, output, *extra):
    """`ds2 convert` as the CLI runs it: its own argument parser, then run()."""
    parser = argparse.ArgumentParser()
    convert.add_arguments(parser)
    return convert.run(cfg, parser.parse_args([str(source), "--output", str(output), *extra]))


def load_converted(cfg, path):
    """The converted file restored the way ds2 train --resume and eval do today (ds2.checkpoint.storage.restore)."""
    values, meta = storage.load(path)
    model, _, optimizer, _ = build_training_state(cfg, compile_step=False)
    storage.restore(values, model, optimizer)
    model.set_train(False)
    return model, meta


# ---------------------------------------------------------------------------------------------
# The MindSpore model zoo's layout: MaskConv conv1/bn1/conv2/bn2 without conv bias, tanh; BatchRNN "RNN"
# with one flat ops.LSTM weight vector per bidirectional layer, directions summed; fc = SequenceWise(Dense)
# without bias; labels with blank last. Written for this test from that description.


class ZooMaskConv(nn.Cell):
    def __init__(self):
        super().__init__()
        pad1, pad2 = (KERNEL1[0] // 2,) * 2 + (KERNEL1[1] // 2,) * 2, (KERNEL2[0] // 2,) * 2 + (KERNEL2[1] // 2,) * 2
        self.conv1 = nn.Conv2d(1, CHANNELS, KERNEL1, stride=(2, 2), pad_mode="pad", padding=pad1, has_bias=False)
        self.bn1 = nn.BatchNorm2d(CHANNELS)
        self.conv2 = nn.Conv2d(CHANNELS, CHANNELS, KERNEL2, stride=(2, 1), pad_mode="pad", padding=pad2, has_bias=False)
        self.bn2 = nn.BatchNorm2d(CHANNELS)
        self.tanh = nn.Tanh()

    def construct(self, x):
        return self.tanh(self.bn2(self.conv2(self.tanh(self.bn1(self.conv1(x))))))


class ZooBatchRNN(nn.Cell):
    def __init__(self, input_size, layers, rng):
        super().__init__()
        sizes = [input_size] + [HIDDEN] * (layers - 1)
        self.lstms = [ops.LSTM(size, HIDDEN, 1, True, True, 0.0) for size in sizes]
        bound = 1 / math.sqrt(HIDDEN)
        self.weight = ms.ParameterTuple([
            ms.Parameter(ms.Tensor(rng.uniform(-bound, bound, ((size + HIDDEN) * HIDDEN * 8 + 8 * HIDDEN, 1, 1))
                                   .astype(np.float32)), name=f"weight{i}")
            for i, size in enumerate(sizes)])

    def construct(self, x):
        steps, batch, _ = x.shape
        state = ops.zeros((2, batch, HIDDEN), ms.float32)
        for i, lstm in enumerate(self.lstms):
            x, _, _, _, _ = lstm(x, state, state, self.weight[i])
            x = x.view(steps, batch, 2, HIDDEN).sum(2)
        return x


class ZooSequenceWise(nn.Cell):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def construct(self, x):
        steps, batch, _ = x.shape
        return self.module(x.view(steps * batch, -1)).view(steps, batch, -1)


class ZooDeepSpeech(nn.Cell):
    def __init__(self, n_bins, layers, rng):
        super().__init__()
        rows = ((n_bins + 2 * (KERNEL1[0] // 2) - KERNEL1[0]) // 2 + 1 + 2 * (KERNEL2[0] // 2) - KERNEL2[0]) // 2 + 1
        self.conv = ZooMaskConv()
        self.RNN = ZooBatchRNN(CHANNELS * rows, layers, rng)
        self.fc = ZooSequenceWise(nn.Dense(HIDDEN, len(layouts.ZOO_LABELS), has_bias=False))

    def construct(self, x):
        x = self.conv(x)
        batch, channels, rows, steps = x.shape
        x = x.view(batch, channels * rows, steps).transpose(2, 0, 1)
        return self.fc(self.RNN(x))   # logits [T, B, classes], blank last


def randomize_batchnorms_ms(cell, rng):
    """Non-trivial BatchNorm statistics and affine values, so a mapping mistake shows in the outputs."""
    for name, param in cell.parameters_and_names():
        if name.endswith(("moving_mean", "beta", "gamma", "moving_variance")):
            low = 0.5 if name.endswith(("moving_variance", "gamma")) else -0.5
            param.set_data(ms.Tensor(rng.uniform(low, low + 1.0, param.shape).astype(np.float32)))


ZOO_CFG = ModelConfig(conv_channels=CHANNELS, conv1_kernel=KERNEL1, conv2_kernel=KERNEL2, rnn_hidden=HIDDEN,
                      rnn_layers=2, activation="tanh", rnn_batch_norm=False)


def zoo_config(tmp_path):
    cfg = Config(run_dir=str(tmp_path / "run"), model=ZOO_CFG)
    cfg.features.n_fft = cfg.features.win_length = 32
    return cfg


@pytest.fixture(scope="module")
def zoo_checkpoint(tmp_path_factory):
    """(path, network) of a zoo-layout training checkpoint as the zoo's MindSpore 1.x saved it: weights,
    Adam moments, beta powers of shape (1,), global_step."""
    rng = np.random.default_rng(3)
    ms.set_seed(3)
    network = ZooDeepSpeech(17, ZOO_CFG.rnn_layers, rng)
    randomize_batchnorms_ms(network, rng)
    network.set_train(False)
    adam = nn.Adam(network.trainable_params())
    entries = [{"name": param.name, "data": param} for param in network.get_parameters()]
    entries += [{"name": name, "data": param} for name, param in adam.parameters_and_names()
                if name.startswith(("moment1.", "moment2."))]
    entries += [{"name": name, "data": ms.Parameter(ms.Tensor(np.array([value], dtype)), name=name)}
                for name, value, dtype in (("beta1_power", 0.9 ** 5, np.float32), ("beta2_power", 0.999 ** 5, np.float32),
                                           ("global_step", 5, np.int32))]
    path = tmp_path_factory.mktemp("zoo") / "deepspeech2_zoo.ckpt"
    ms.save_checkpoint(entries, str(path))
    return path, network


def test_zoo_checkpoint_converts_to_identical_outputs(tmp_path, zoo_checkpoint, capsys):
    source, zoo_network = zoo_checkpoint
    cfg = zoo_config(tmp_path)
    output = tmp_path / "converted.ckpt"

    assert convert_command(cfg, source, output) == 0
    printed = capsys.readouterr().out
    model, meta = load_converted(cfg, output)

    features = np.random.default_rng(4).standard_normal((2, 1, 17, 24)).astype(np.float32)
    zoo_logits = zoo_network(ms.Tensor(features)).asnumpy()
    zoo_log_probs = zoo_logits - np.log(np.exp(zoo_logits).sum(-1, keepdims=True))
    log_probs, lengths = model(ms.Tensor(features), ms.Tensor(np.array([24, 24], np.int32)))
    rows = label_order(layouts.ZOO_LABELS, DEFAULT_LABELS)
    np.testing.assert_allclose(log_probs.asnumpy(), zoo_log_probs[..., rows], rtol=0, atol=1e-5)
    assert log_probs.shape == zoo_logits.shape and lengths.asnumpy().tolist() == [12, 12]
    assert meta["converted_from"]["layout"] == "reference-zoo" and meta["step"] == 0
    assert "restarting the optimizer" in printed and "filled" in printed   # no conv bias, no BatchNorm before fc


def test_zoo_checkpoint_against_a_config_with_rnn_batchnorm_says_which_override(tmp_path, zoo_checkpoint, capsys):
    source, _ = zoo_checkpoint
    cfg = zoo_config(tmp_path)
    cfg.model.rnn_batch_norm = True

    assert convert_command(cfg, source, tmp_path / "out.ckpt") == 1

    assert "--set model.rnn_batch_norm=false" in capsys.readouterr().err
    assert not (tmp_path / "out.ckpt").exists()


# ---------------------------------------------------------------------------------------------
# deepspeech.pytorch's layout: MaskConv(Sequential(Conv2d, BatchNorm2d, Hardtanh(0, 20), Conv2d, BatchNorm2d,
# Hardtanh(0, 20))) masking padded frames after every module; BatchRNN layers with SequenceWise(BatchNorm1d)
# before LSTMs 2..n, bidirectional LSTM on packed sequences, directions summed; fc = Sequential(SequenceWise(
# Sequential(BatchNorm1d, Linear without bias))); blank first. Written for this test from that description.

TORCH_LAYERS = 3
AUDIO_CONF = {"sample_rate": 16000, "window_size": 0.02, "window_stride": 0.01, "window": "hamming"}
TORCH_BINS = 161   # int(16000 * 0.02) // 2 + 1


class TorchSequenceWise(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        steps, batch = x.shape[:2]
        return self.module(x.reshape(steps * batch, -1)).reshape(steps, batch, -1)


class TorchMaskConv(torch.nn.Module):
    def __init__(self, seq_module):
        super().__init__()
        self.seq_module = seq_module

    def forward(self, x, lengths):
        for module in self.seq_module:
            x = module(x)
            padded = torch.arange(x.shape[3]).view(1, 1, 1, -1) >= lengths.view(-1, 1, 1, 1)
            x = x.masked_fill(padded, 0)
        return x


class TorchBatchRNN(torch.nn.Module):
    def __init__(self, input_size, batch_norm):
        super().__init__()
        self.batch_norm = TorchSequenceWise(torch.nn.BatchNorm1d(input_size)) if batch_norm else None
        self.rnn = torch.nn.LSTM(input_size, HIDDEN, bidirectional=True, bias=True)

    def forward(self, x, lengths):
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        x, _ = self.rnn(torch.nn.utils.rnn.pack_padded_sequence(x, lengths))
        x, _ = torch.nn.utils.rnn.pad_packed_sequence(x)
        return x.view(x.shape[0], x.shape[1], 2, -1).sum(2)


class TorchDeepSpeech(torch.nn.Module):
    def __init__(self, n_classes):
        super().__init__()
        self.conv = TorchMaskConv(torch.nn.Sequential(
            torch.nn.Conv2d(1, CHANNELS, KERNEL1, stride=(2, 2), padding=(KERNEL1[0] // 2, KERNEL1[1] // 2)),
            torch.nn.BatchNorm2d(CHANNELS), torch.nn.Hardtanh(0, 20),
            torch.nn.Conv2d(CHANNELS, CHANNELS, KERNEL2, stride=(2, 1), padding=(KERNEL2[0] // 2, KERNEL2[1] // 2)),
            torch.nn.BatchNorm2d(CHANNELS), torch.nn.Hardtanh(0, 20)))
        rows = ((TORCH_BINS + 2 * (KERNEL1[0] // 2) - KERNEL1[0]) // 2 + 1 + 2 * (KERNEL2[0] // 2) - KERNEL2[0]) // 2 + 1
        self.rnns = torch.nn.Sequential(*[TorchBatchRNN(CHANNELS * rows if i == 0 else HIDDEN, batch_norm=i > 0)
                                          for i in range(TORCH_LAYERS)])
        self.fc = torch.nn.Sequential(TorchSequenceWise(torch.nn.Sequential(
            torch.nn.BatchNorm1d(HIDDEN), torch.nn.Linear(HIDDEN, n_classes, bias=False))))

    def forward(self, x, frames):
        lengths = (frames + 2 * (KERNEL1[1] // 2) - KERNEL1[1]) // 2 + 1   # conv2's time stride is 1
        x = self.conv(x, lengths)
        batch, channels, rows, steps = x.shape
        x = x.view(batch, channels * rows, steps).permute(2, 0, 1)
        for rnn in self.rnns:
            x = rnn(x, lengths)
        return torch.log_softmax(self.fc(x), dim=-1), lengths   # [T, B, classes]


TORCH_CFG = ModelConfig(conv_channels=CHANNELS, conv1_kernel=KERNEL1, conv2_kernel=KERNEL2, rnn_hidden=HIDDEN,
                        rnn_layers=TORCH_LAYERS, activation="hardtanh", rnn_batch_norm=True)


def torch_config(tmp_path, model=TORCH_CFG):
    cfg = Config(run_dir=str(tmp_path / "run"), model=model)
    cfg.features.window = "hamming"   # deepspeech.pytorch's default; n_fft 320 and hop 160 are ds2's already
    return cfg


@pytest.fixture(scope="module")
def torch_checkpoint(tmp_path_factory):
    """(path, network) of a deepspeech.pytorch v2-style package: hyper-parameters + state_dict."""
    torch.manual_seed(5)
    network = TorchDeepSpeech(len(DEFAULT_LABELS))
    with torch.no_grad():   # non-trivial BatchNorm statistics and affine values
        for module in network.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    network.eval()
    path = tmp_path_factory.mktemp("torch") / "deepspeech_pytorch.pth"
    torch.save({"version": "2.0", "hidden_size": HIDDEN, "hidden_layers": TORCH_LAYERS, "rnn_type": "lstm",
                "audio_conf": AUDIO_CONF, "labels": list(DEFAULT_LABELS), "bidirectional": True,
                "state_dict": network.state_dict()}, str(path))
    return path, network


def assert_same_outputs(model, torch_network, seed):
    """The converted model's log-probabilities match the torch network's to 1e-5, and their best paths are equal,
    on two utterances of different lengths, zero-padded as deepspeech.pytorch's loader pads them."""
    frames = np.array([30, 21], np.int32)
    features = np.random.default_rng(seed).standard_normal((2, 1, TORCH_BINS, 30)).astype(np.float32)
    features[1, :, :, 21:] = 0
    with torch.no_grad():
        expected, expected_lengths = torch_network(torch.from_numpy(features), torch.from_numpy(frames).long())
    log_probs, lengths = model(ms.Tensor(features), ms.Tensor(frames))

    assert lengths.asnumpy().tolist() == expected_lengths.tolist()
    for b, length in enumerate(expected_lengths.tolist()):   # padded output frames are not outputs
        ours, theirs = log_probs.asnumpy()[:length, b], expected.numpy()[:length, b]
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
        assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_deepspeech_pytorch_checkpoint_converts_to_matching_outputs(tmp_path, torch_checkpoint):
    source, torch_network = torch_checkpoint
    cfg = torch_config(tmp_path)
    output = tmp_path / "converted.ckpt"

    assert convert_command(cfg, source, output) == 0
    model, meta = load_converted(cfg, output)

    assert_same_outputs(model, torch_network, seed=6)
    assert meta["converted_from"]["layout"] == "deepspeech.pytorch"


def test_deepspeech_pytorch_against_another_architecture_names_each_override(tmp_path, torch_checkpoint, capsys):
    source, _ = torch_checkpoint
    cfg = torch_config(tmp_path, ModelConfig(conv_channels=CHANNELS, conv1_kernel=KERNEL1, conv2_kernel=KERNEL2,
                                             rnn_hidden=HIDDEN, rnn_layers=TORCH_LAYERS, activation="tanh",
                                             rnn_batch_norm=False))
    cfg.features.window = "hann"   # the checkpoint's audio_conf sets it: no override needed

    assert convert_command(cfg, source, tmp_path / "out.ckpt") == 1

    captured = capsys.readouterr()
    for override in ("--set model.activation=hardtanh", "--set model.rnn_batch_norm=true"):
        assert override in captured.err
    assert "features.window" not in captured.err and "features.window: hamming from the checkpoint" in captured.out


def test_convert_refuses_a_torch_checkpoint_that_would_run_code_unrun(tmp_path, capsys):
    """The reader's refusal (tests/test_checkpoint_torch_unpickler.py) is the command's one-line error."""
    marker = tmp_path / "command-ran"
    path = tmp_path / "malicious.pth"
    torch.save({"state_dict": {"fc.0.module.1.weight": torch.zeros(2, 2)}, "hook": RunsACommand(marker)}, str(path))

    assert convert_command(torch_config(tmp_path), path, tmp_path / "out.ckpt") == 1
    assert "refusing to read" in capsys.readouterr().err
    assert not marker.exists()


def test_convert_names_the_file_and_the_fix_for_a_file_that_is_no_checkpoint(tmp_path, capsys):
    """Neither torch's nor MindSpore's format: MindSpore's reason, with the file and what to give instead."""
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.ckpt").write_text("not a checkpoint\n")
    for name, said in [("empty.pth", "it is empty"), ("text.ckpt", "MindSpore cannot read it")]:
        assert convert_command(torch_config(tmp_path), tmp_path / name, tmp_path / "out.ckpt") == 1
        error = capsys.readouterr().err
        assert error.startswith(f"ds2 convert: {tmp_path / name}: {said} (") and error.count("\n") == 1
        assert error.rstrip().endswith("give a MindSpore .ckpt, or a deepspeech.pytorch .pth / .ckpt as it was saved")
    assert not (tmp_path / "out.ckpt").exists()


# ---------------------------------------------------------------------------------------------
# deepspeech.pytorch V3: a PyTorch Lightning checkpoint as released (tests/deepspeech_pytorch_v3.py makes
# it as that code base saves one: omegaconf configs in hyper_parameters, Lightning's keys, torch.save).


@pytest.fixture(scope="module")
def v3_checkpoint(tmp_path_factory, torch_checkpoint):
    """(path, network) of a V3 Lightning checkpoint of the same network as the V2 package."""
    from tests import deepspeech_pytorch_v3 as v3

    _, network = torch_checkpoint
    config = v3.training_config(hidden_size=HIDDEN, hidden_layers=TORCH_LAYERS)
    path = tmp_path_factory.mktemp("v3") / "librispeech_pretrained_v3.ckpt"
    v3.save(v3.lightning_checkpoint(network, DEFAULT_LABELS, config), path)
    return path, network


def test_v3_checkpoint_converts_to_matching_outputs_and_paths(tmp_path, v3_checkpoint, capsys):
    source, torch_network = v3_checkpoint
    cfg = Config(run_dir=str(tmp_path / "run"), model=TORCH_CFG)   # window 'hann': the checkpoint's 'hamming' wins
    output = tmp_path / "converted.ckpt"

    assert convert_command(cfg, source, output) == 0
    assert "features.window: hamming from the checkpoint" in capsys.readouterr().out
    values, meta = storage.load(output)
    assert meta["config"]["features"]["window"] == "hamming" and meta["config"]["features"]["n_fft"] == 320
    stored = Config(run_dir=str(tmp_path / "run"), model=TORCH_CFG)
    stored.features.window = "hamming"
    model, _ = load_converted(stored, output)

    assert_same_outputs(model, torch_network, seed=7)


def test_v3_checkpoint_labels_set_the_converted_config(tmp_path, torch_checkpoint):
    from tests import deepspeech_pytorch_v3 as v3

    _, network = torch_checkpoint
    labels = "_ ABCDEFGHIJKLMNOPQRSTUVWXYZ'"   # the same characters in another order
    path = tmp_path / "other_labels.ckpt"
    v3.save(v3.lightning_checkpoint(network, labels, v3.training_config()), path)

    assert convert_command(torch_config(tmp_path), path, tmp_path / "out.ckpt") == 0
    _, meta = storage.load(tmp_path / "out.ckpt")
    assert meta["config"]["model"]["labels"] == labels


def test_v3_checkpoint_with_an_unknown_class_is_refused_by_name(tmp_path, torch_checkpoint, capsys):
    from tests import deepspeech_pytorch_v3 as v3

    _, network = torch_checkpoint
    marker = tmp_path / "command-ran"
    path = tmp_path / "with_extra.ckpt"
    checkpoint_dict = v3.lightning_checkpoint(network, DEFAULT_LABELS, v3.training_config(),
                                              extra={"loops": RunsACommand(marker)})
    v3.save(checkpoint_dict, path)

    assert convert_command(torch_config(tmp_path), path, tmp_path / "out.ckpt") == 1
    assert re.search(r"would import (posix|os)\.system", capsys.readouterr().err)
    assert not marker.exists()
