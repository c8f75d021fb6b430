"""ds2.checkpoint.reconcile: training-state checkpoints in old and new MindSpore layouts load into a fresh model
and optimizer; what does not fit is refused with a table before any value is set."""
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

from ds2.checkpoint import layouts, reconcile, storage  # noqa: E402
from ds2.config import DEFAULT_LABELS, ModelConfig, TrainConfig  # noqa: E402
from ds2.model import DeepSpeech2, TrainNetwork  # noqa: E402
from ds2.step import build_optimizer  # noqa: E402
from tests.helpers import STEP, save_training_state  # noqa: E402

CFG = ModelConfig(conv_channels=4, conv1_kernel=(5, 3), conv2_kernel=(3, 3), rnn_hidden=8, rnn_layers=2)
N_BINS = 17


def training_state(seed, cfg=CFG):
    """Model + optimizer as ds2 train builds them: the optimizer is made after TrainNetwork wraps the
    model, so its state is named after "model.<name>"."""
    ms.set_seed(seed)
    model = DeepSpeech2(cfg, N_BINS)
    TrainNetwork(model)
    return model, build_optimizer(model, TrainConfig())


def values_of(cell):
    return {name: param.asnumpy().copy() for name, param in cell.parameters_and_names()}


@pytest.mark.parametrize("power_shape", [(1,), ()], ids=["old-powers-(1,)", "new-powers-()"])
@pytest.mark.parametrize("with_global_step", [True, False], ids=["global_step", "no-global_step"])
def test_training_state_of_either_adam_layout_loads(tmp_path, power_shape, with_global_step):
    model, optimizer = training_state(1)
    path = tmp_path / "state.ckpt"
    stored = save_training_state(path, model, optimizer, power_shape, with_global_step)
    assert tuple(ms.load_checkpoint(str(path))["beta1_power"].shape) == power_shape   # the file is what we claim

    fresh, fresh_optimizer = training_state(2)
    report = reconcile.load_into(fresh, fresh_optimizer, path)

    assert not report.refused and report.optimizer_restart == ""
    for param in fresh.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), stored[param.name], err_msg=param.name)
    for name, param in fresh_optimizer.parameters_and_names():
        if name.startswith(("moment1.", "moment2.")):
            np.testing.assert_array_equal(param.asnumpy(), stored[name], err_msg=name)
    assert fresh_optimizer.beta1_power.shape == () and fresh_optimizer.beta2_power.shape == ()
    np.testing.assert_allclose(fresh_optimizer.beta1_power.asnumpy(), 0.9 ** STEP, rtol=1e-6)
    np.testing.assert_allclose(fresh_optimizer.beta2_power.asnumpy(), 0.999 ** STEP, rtol=1e-6)
    reshaped = {e.model_name for e in report.reshaped}
    assert reshaped == ({"beta1_power", "beta2_power"} if power_shape == (1,) else set())
    missing = {e.model_name: e.note for e in report.missing}
    if with_global_step:
        assert fresh_optimizer.global_step.asnumpy().tolist() == [STEP] and not missing
    else:
        assert fresh_optimizer.global_step.asnumpy().tolist() == [0]
        assert missing == {"global_step": "optional: the fresh value is kept"}
    # The model's parameters were found by name under the training wrapper's prefix ("model.").
    assert report.loaded == len(list(fresh.get_parameters())) and not report.mapped


def test_plain_mindspore_loading_of_the_old_layout_changes_the_optimizer_silently(tmp_path):
    """What the report hit, as MindSpore 2.7.2 does it. 2.4 refused the (1,) beta powers with "Can not
    change the shape of Parameter which has been initialized. Current shape is (), and incoming is
    (1,)"; that check is gone from 2.7.2 (no such message in its Python or binaries), which now gives
    the live optimizer the old shape without a word, and lists the absent global_step only in its
    return value."""
    model, optimizer = training_state(1)
    path = tmp_path / "old.ckpt"
    save_training_state(path, model, optimizer, (1,), with_global_step=False)
    fresh, fresh_optimizer = training_state(2)
    assert fresh_optimizer.beta1_power.shape == ()

    not_loaded, _ = ms.load_param_into_net(fresh_optimizer, ms.load_checkpoint(str(path)))

    assert "global_step" in not_loaded
    assert fresh_optimizer.beta1_power.shape == (1,)


def test_own_checkpoint_round_trip_loads_everything_by_name(tmp_path):
    model, optimizer = training_state(1)
    optimizer.moment1[0].set_data(ms.Tensor(np.full(optimizer.moment1[0].shape, 0.25, np.float32)))
    path = tmp_path / "own.ckpt"
    storage.save(path, model, optimizer, {"step": 3, "config": {"model": {"labels": CFG.labels}}})

    fresh, fresh_optimizer = training_state(2)
    report = reconcile.load_into(fresh, fresh_optimizer, path)

    assert report.layout == "ds2" and report.loaded == len(list(fresh.get_parameters()))
    assert report.format_table() == "(every entry loaded under its own name and shape)"
    assert "optimizer state loaded" in report.summary()
    for name, value in values_of(model).items():
        np.testing.assert_array_equal(dict(fresh.parameters_and_names())[name].asnumpy(), value, err_msg=name)
    np.testing.assert_array_equal(fresh_optimizer.moment1[0].asnumpy(), 0.25)


@pytest.mark.parametrize("other, status, name", [
    (ModelConfig(conv_channels=4, conv1_kernel=(5, 3), conv2_kernel=(3, 3), rnn_hidden=6, rnn_layers=2,
                 rnn_batch_norm=False), "MISMATCHED", "rnns.0.lstm.weight_ih"),
    # A BatchNorm the model lacks: MindSpore would drop it silently and predict from a different network.
    (ModelConfig(conv_channels=4, conv1_kernel=(5, 3), conv2_kernel=(3, 3), rnn_hidden=8, rnn_layers=2,
                 rnn_batch_norm=True), "UNEXPECTED", "rnns.1.bn.gamma"),
], ids=["other-hidden-size", "extra-batchnorm"])
def test_another_architecture_is_refused_with_a_table_and_nothing_loaded(tmp_path, other, status, name):
    source, _ = training_state(1, other)
    path = tmp_path / "other.ckpt"
    ms.save_checkpoint(source, str(path))
    target_cfg = ModelConfig(conv_channels=4, conv1_kernel=(5, 3), conv2_kernel=(3, 3), rnn_hidden=8, rnn_layers=2,
                             rnn_batch_norm=False)
    model, optimizer = training_state(2, target_cfg)
    before = values_of(model)

    with pytest.raises(reconcile.CheckpointMismatch) as raised:
        reconcile.load_into(model, optimizer, path)

    table_rows = [line for line in str(raised.value).splitlines() if line.startswith(status)]
    assert any(name in row for row in table_rows), str(raised.value)
    assert "nothing was loaded" in str(raised.value)
    for key, value in values_of(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_model_weights_load_when_the_optimizer_state_cannot(tmp_path):
    model, _ = training_state(1)
    path = tmp_path / "weights-only.ckpt"
    ms.save_checkpoint(model, str(path))   # no optimizer state at all
    fresh, fresh_optimizer = training_state(2)
    fresh_moment = fresh_optimizer.moment1[0].asnumpy().copy()

    report = reconcile.load_into(fresh, fresh_optimizer, path)

    assert not report.refused
    assert "moment1." in report.optimizer_restart
    assert report.summary().endswith("restarting the optimizer")
    np.testing.assert_array_equal(fresh_optimizer.moment1[0].asnumpy(), fresh_moment)
    for param in fresh.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), dict(model.parameters_and_names())[
            param.name[len("model."):]].asnumpy(), err_msg=param.name)


def test_output_rows_follow_the_labels_stored_with_the_checkpoint(tmp_path):
    blank_last = layouts.ZOO_LABELS
    source_cfg = ModelConfig(conv_channels=4, conv1_kernel=(5, 3), conv2_kernel=(3, 3), rnn_hidden=8, rnn_layers=2,
                             labels=blank_last)
    model, optimizer = training_state(1, source_cfg)
    path = tmp_path / "blank-last.ckpt"
    storage.save(path, model, optimizer, {"config": {"model": {"labels": blank_last}}})
    fresh, fresh_optimizer = training_state(2)

    report = reconcile.load_into(fresh, fresh_optimizer, path)

    output_layer = layouts.model_roles(fresh)["fc.weight"]
    stored_rows = values_of(model)[output_layer]
    loaded_rows = values_of(fresh)[output_layer]
    for row, label in enumerate(DEFAULT_LABELS):
        np.testing.assert_array_equal(loaded_rows[row], stored_rows[blank_last.index(label)], err_msg=repr(label))
    assert report.optimizer_restart == "output rows reordered to the model's labels"


@pytest.mark.parametrize("cfg", [
    CFG,
    ModelConfig(conv_channels=4, conv1_kernel=(5, 3), conv2_kernel=(3, 3), rnn_hidden=8, rnn_layers=3,
                rnn_batch_norm=False, rnn_merge="concat"),
], ids=["batchnorm-sum", "no-batchnorm-concat"])
def test_every_model_parameter_has_a_role(cfg):
    model = DeepSpeech2(cfg, N_BINS)
    roles = layouts.model_roles(model)
    assert sorted(roles.values()) == sorted(name for name, _ in model.parameters_and_names())
    assert ("rnn1.bn.gamma" in roles) == cfg.rnn_batch_norm
    assert {"conv1.weight", "conv2.bn.moving_variance", f"rnn{cfg.rnn_layers - 1}.weight_hh_reverse",
            "fc_bn.gamma", "fc.weight"} <= set(roles)
