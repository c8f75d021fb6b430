"""ds2.shapes against the network MindSpore builds: output frames (odd and even kernels), frequency rows,
and the name, shape and count of every trainable parameter."""
import numpy as np
import pytest

from ds2.config import ModelConfig, load_config
from ds2.config import Config, FeatureConfig
from ds2.shapes import (conv_output_length, duration_frames, forward_flops, input_frames, output_frames,
                        output_lengths, parameter_count, trainable_shapes, training_flops)

ms = pytest.importorskip("mindspore")

from ds2.model import DeepSpeech2, count_parameters  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)


def test_conv_output_length_for_odd_and_even_kernels():
    # padding kernel // 2 on both sides: an odd kernel keeps the length at stride 1, an even one adds a frame
    assert conv_output_length(100, 11, 1) == 100
    assert conv_output_length(100, 10, 1) == 101
    assert conv_output_length(101, 11, 2) == 51
    assert conv_output_length(101, 10, 2) == 51
    assert conv_output_length(100, 10, 2) == 51
    assert conv_output_length(np.array([100, 101]), 4, 3).tolist() == [34, 34]


@pytest.mark.parametrize("time_kernels", [(11, 5), (10, 4), (11, 4), (3, 6)])
def test_output_lengths_match_the_network(time_kernels):
    model_cfg = ModelConfig(conv_channels=2, conv1_kernel=(5, time_kernels[0]), conv2_kernel=(5, time_kernels[1]),
                            conv1_stride=(2, 2), conv2_stride=(2, 2), rnn_hidden=8, rnn_layers=1)
    model = DeepSpeech2(model_cfg, n_bins=21)
    model.set_train(False)
    for width in (37, 40, 64):
        features = ms.Tensor(np.zeros((2, 1, 21, width), np.float32))
        log_probs, lengths = model(features, ms.Tensor(np.array([width, width - 5], np.int32)))
        assert log_probs.shape[0] == output_lengths(width, model_cfg)          # the tensor the network made
        assert lengths.asnumpy().tolist() == [output_lengths(width, model_cfg), output_lengths(width - 5, model_cfg)]


def test_output_frames_of_a_duration():
    cfg = load_config("small")
    cfg.model.conv1_kernel, cfg.model.conv2_kernel = (11, 10), (11, 4)   # even time kernels
    cfg.model.conv1_stride, cfg.model.conv2_stride = (2, 2), (2, 3)
    frames = duration_frames(1.0, cfg.features)
    assert frames == input_frames(16000, cfg.features) == 101
    # 101 frames -> conv1 (time kernel 10, stride 2): 51 -> conv2 (time kernel 4, stride 3): 18
    assert output_frames(1.0, cfg) == output_lengths(101, cfg.model) == 18


@pytest.mark.parametrize("preset", ["small", "seed"])
def test_trainable_shapes_are_the_built_models(preset):
    cfg = load_config(preset)
    model = DeepSpeech2(cfg.model, cfg.features.n_bins)
    built = {p.name: tuple(p.shape) for p in model.trainable_params()}
    assert trainable_shapes(cfg.model, cfg.features.n_bins) == built
    assert list(trainable_shapes(cfg.model, cfg.features.n_bins)) == list(built)   # same order
    assert parameter_count(cfg.model, cfg.features.n_bins) == count_parameters(model)


def test_trainable_shapes_follow_merge_and_batch_norm_settings():
    model_cfg = ModelConfig(conv_channels=3, rnn_hidden=6, rnn_layers=3, rnn_merge="concat", rnn_batch_norm=False)
    model = DeepSpeech2(model_cfg, n_bins=41)
    assert trainable_shapes(model_cfg, 41) == {p.name: tuple(p.shape) for p in model.trainable_params()}


def test_forward_flops_counted_by_hand():
    cfg = Config(features=FeatureConfig(n_fft=8, win_length=8),   # 5 frequency bins
                 model=ModelConfig(conv_channels=2, conv1_kernel=(3, 3), conv1_stride=(2, 2), conv2_kernel=(3, 3),
                                   conv2_stride=(1, 1), rnn_hidden=4, rnn_layers=2))
    # 10 frames -> conv1: 5 frames x 3 rows, conv2: 5 x 3; BiLSTM input 2 x 3 = 6, output 4 (directions summed)
    conv = 2 * 3 * 3 * 1 * 2 * 3 * 5 + 2 * 3 * 3 * 2 * 2 * 3 * 5
    lstm = 2 * 5 * 2 * 16 * (6 + 4) + 2 * 5 * 2 * 16 * (4 + 4)
    output = 2 * 5 * 4 * 29
    assert forward_flops(10, cfg) == conv + lstm + output == 8540
    assert training_flops(10, cfg) == 3 * 8540


def test_seed_model_costs_about_ten_gflop_per_second_of_audio_forward():
    seed = load_config("seed")
    per_second = forward_flops(100, seed)
    assert 9.5e9 < per_second < 10.0e9          # convolutions about 1.1, five BiLSTM layers about 8.6
    assert forward_flops(1000, seed) == pytest.approx(10 * per_second, rel=0.01)   # linear in the frames
