"""Checkpoints: round trip of model + optimizer + meta, atomic replace, pruning, best/last."""
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

from ds2.checkpoint import storage  # noqa: E402
from ds2.errors import UserError  # noqa: E402
from ds2.config import ModelConfig, TrainConfig  # noqa: E402
from ds2.model import DeepSpeech2  # noqa: E402
from ds2.step import build_optimizer  # noqa: E402

CFG = ModelConfig(conv_channels=2, conv1_kernel=(5, 5), conv2_kernel=(5, 5), rnn_hidden=8, rnn_layers=2)


def model_and_optimizer(seed):
    ms.set_seed(seed)
    model = DeepSpeech2(CFG, 17)
    return model, build_optimizer(model, TrainConfig())


def test_round_trip_restores_model_optimizer_and_meta(tmp_path):
    model, optimizer = model_and_optimizer(1)
    optimizer.moment1[0].set_data(ms.Tensor(np.full(optimizer.moment1[0].shape, 0.25, np.float32)))
    path = storage.step_path(tmp_path, 12)
    meta = {"step": 12, "position": {"epoch": 1, "batch": 3}, "config": {"name": "x"}}
    storage.save(path, model, optimizer, meta)

    fresh, fresh_optimizer = model_and_optimizer(2)
    values, loaded_meta = storage.load(path)
    storage.restore(values, fresh, fresh_optimizer)
    assert loaded_meta == meta
    for (name, a), (_, b) in zip(model.parameters_and_names(), fresh.parameters_and_names()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy(), err_msg=name)
    np.testing.assert_array_equal(fresh_optimizer.moment1[0].asnumpy(), 0.25)
    assert "optimizer.beta1_power" in values and "optimizer.moment2.fc.weight" in values


def test_failed_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    model, optimizer = model_and_optimizer(1)
    path = storage.step_path(tmp_path, 2)
    storage.save(path, model, optimizer, {"step": 2})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        storage.save(path, model, optimizer, {"step": object()})  # not JSON: fails mid-save
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".sha256"]
    storage.load(path)  # and its checksum still matches


def test_restore_refuses_a_different_architecture(tmp_path):
    model, optimizer = model_and_optimizer(1)
    path = tmp_path / "a.ckpt"
    storage.save(path, model, optimizer, {"step": 0})
    other = DeepSpeech2(ModelConfig(conv_channels=2, conv1_kernel=(5, 5), conv2_kernel=(5, 5),
                                    rnn_hidden=6, rnn_layers=2), 17)
    with pytest.raises(ValueError, match="shape"):
        storage.restore(storage.load(path)[0], other)


def test_prune_best_and_resolve(tmp_path):
    model, optimizer = model_and_optimizer(1)
    for step in (2, 4, 6, 8):
        storage.save(storage.step_path(tmp_path, step), model, optimizer,
                        {"step": step, "metrics": {"dev_wer": 2.0 / step, "dev_cer": 1.0 / step}})
        if step == 4:
            storage.mark_best(tmp_path, storage.step_path(tmp_path, step))
        storage.prune(tmp_path, keep_last=2)
    assert [p.name for p in storage.step_checkpoints(tmp_path)] == ["step-0000006.ckpt", "step-0000008.ckpt"]
    assert storage.resolve(tmp_path, "last").name == "step-0000008.ckpt"
    best = storage.resolve(tmp_path, "best")
    assert storage.load(best)[1]["step"] == 4  # survives the pruning of step-4
    assert storage.best_metric(tmp_path) == pytest.approx({"dev_wer": 0.5, "dev_cer": 0.25})
    with pytest.raises(UserError, match="train first"):
        storage.resolve(tmp_path / "nothing", "last")


def test_best_is_chosen_by_dev_wer_and_ties_by_dev_cer():
    best = {"dev_wer": 0.30, "dev_cer": 0.10}
    assert storage.is_better({"dev_wer": 0.29, "dev_cer": 0.20}, best)  # WER decides, not CER
    assert not storage.is_better({"dev_wer": 0.31, "dev_cer": 0.01}, best)
    assert storage.is_better({"dev_wer": 0.30, "dev_cer": 0.09}, best)  # tie: CER decides
    assert not storage.is_better({"dev_wer": 0.30, "dev_cer": 0.10}, best)
    assert storage.is_better({"dev_wer": 0.9, "dev_cer": 0.9}, None)
    assert not storage.is_better({"train_loss": 1.0}, best)  # no dev evaluation this epoch


def test_truncated_or_damaged_checkpoint_is_detected_by_its_checksum(tmp_path):
    model, optimizer = model_and_optimizer(1)
    path = storage.step_path(tmp_path, 4)
    storage.save(path, model, optimizer, {"step": 4})
    assert storage.checksum_path(path).read_text().split()[0] == storage.file_sha256(path)
    storage.load(path)  # intact: loads

    data = path.read_bytes()
    path.chmod(0o600)  # MindSpore saves checkpoints read-only
    path.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk or an interrupted copy
    with pytest.raises(storage.CorruptCheckpoint, match="truncated or damaged"):
        storage.load(path)

    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF  # same length, one flipped byte
    path.write_bytes(bytes(damaged))
    with pytest.raises(storage.CorruptCheckpoint):
        storage.load(path)


def test_a_flipped_byte_is_found_without_the_sidecar_by_the_crc(tmp_path, capsys):
    model, optimizer = model_and_optimizer(1)
    path = storage.step_path(tmp_path, 4)
    storage.save(path, model, optimizer, {"step": 4})
    storage.checksum_path(path).unlink()
    assert storage.has_crc(path)
    storage.load(path)   # intact: loads on its CRC alone

    data = bytearray(path.read_bytes())
    path.chmod(0o600)
    for offset in (len(data) // 3, len(data) // 2, len(data) - storage.CRC_TRAILER_BYTES - 1):
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(storage.CorruptCheckpoint, match="MindSpore cannot read it"):
            storage.load(path)

    path.write_bytes(bytes(data[:-storage.CRC_TRAILER_BYTES]))   # neither sidecar nor CRC: said, not silent
    storage.load(path)
    assert "it was loaded unverified" in capsys.readouterr().err


def test_a_damaged_sidecar_or_a_non_finite_value_is_refused(tmp_path, monkeypatch):
    model, optimizer = model_and_optimizer(1)
    path = storage.step_path(tmp_path, 4)
    storage.save(path, model, optimizer, {"step": 4})
    storage.checksum_path(path).write_text("not a checksum\n")
    with pytest.raises(storage.CorruptCheckpoint, match=r"\.sha256: not a SHA-256 checksum line; delete it"):
        storage.load(path)
    storage.checksum_path(path).unlink()
    name, parameter = next(iter(model.parameters_and_names()))
    parameter.set_data(parameter * float("nan"))
    monkeypatch.setattr(storage, "non_finite_entries", lambda entries: [])   # as a writer that does not check
    storage.save(path, model, optimizer, {"step": 4})
    with pytest.raises(storage.CorruptCheckpoint, match=f"entry {name}.*not finite"):
        storage.load(path)


def test_prune_removes_checksums_with_their_checkpoints(tmp_path):
    model, optimizer = model_and_optimizer(1)
    for step in (1, 2, 3):
        storage.save(storage.step_path(tmp_path, step), model, optimizer, {"step": step})
    storage.prune(tmp_path, keep_last=1)
    left = sorted(p.name for p in storage.checkpoint_dir(tmp_path).iterdir())
    assert left == ["step-0000003.ckpt", "step-0000003.ckpt.sha256"]


SAVE_FOREVER = """
import sys
import mindspore as ms
from ds2.checkpoint import storage
from ds2.config import ModelConfig, TrainConfig
from ds2.model import DeepSpeech2
from ds2.step import build_optimizer
cfg = ModelConfig(conv_channels=2, conv1_kernel=(5, 5), conv2_kernel=(5, 5), rnn_hidden=8, rnn_layers=2)
model = DeepSpeech2(cfg, 17)
optimizer = build_optimizer(model, TrainConfig())
step = 0
while True:
    step += 1
    storage.save(storage.step_path(sys.argv[1], step), model, optimizer, {"step": step})
    storage.prune(sys.argv[1], keep_last=2)
    print(step, flush=True)
"""


@pytest.mark.slow
def test_sigkill_while_saving_always_leaves_a_loadable_checkpoint(tmp_path):
    """Kill a process that does nothing but save, at several moments: what is left always loads."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(repo))
    for attempt, delay in enumerate((0.0, 0.013, 0.031, 0.057)):
        run_dir = tmp_path / f"run{attempt}"
        process = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(run_dir)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(3):  # let a few saves complete, then kill during a later one
            assert process.stdout.readline(), "the saving process died on its own"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        found = storage.step_checkpoints(run_dir)
        assert found, "no checkpoint left after SIGKILL"
        for path in found:
            values, meta = storage.load(path)  # every file under a checkpoint name is whole
            assert meta["step"] == int(path.stem.split("-")[1])
