"""What training never saves and never loses: non-finite settings and weights, a failing checkpoint
write, an epoch whose dev evaluation has nothing to score, a second writer on the run folder."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")

from ds2 import files  # noqa: E402
from ds2.__main__ import main  # noqa: E402
from ds2.checkpoint import storage  # noqa: E402
from ds2.config import ModelConfig, TrainConfig  # noqa: E402
from ds2.model import DeepSpeech2, TrainNetwork  # noqa: E402
from ds2.step import build_optimizer, make_train_step  # noqa: E402
from tests.helpers import read_metrics, tiny_overrides, write_tone_corpus  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def tiny_model():
    model = DeepSpeech2(ModelConfig(conv_channels=2, conv1_kernel=(5, 5), conv2_kernel=(5, 5), rnn_hidden=8,
                                    rnn_layers=1), 17)
    return model, build_optimizer(model, TrainConfig(weight_decay=0.0))


@pytest.mark.parametrize("setting", ["train.lr=nan", "train.lr=inf", "data.max_duration=nan",
                                     "train.grad_clip=-inf"])
def test_a_non_finite_setting_is_one_line(tmp_path, capsys, setting):
    assert main(["train", "--set", f"run_dir={tmp_path}", "--set", setting]) == 1
    err = capsys.readouterr().err
    key = setting.split("=")[0]
    assert err.count("\n") == 1 and f"config key {key}" in err and "not a finite number" in err
    assert list(tmp_path.iterdir()) == []


def test_a_step_with_a_non_finite_learning_rate_is_skipped():
    model, optimizer = tiny_model()
    model.set_train(True)
    step = make_train_step(TrainNetwork(model), optimizer, grad_clip=1.0)
    rng = np.random.default_rng(0)
    inputs = (rng.standard_normal((2, 1, 17, 24)).astype(np.float32), np.array([24, 20], np.int32),
              np.array([[3, 4, 5], [6, 7, 0]], np.int32), np.array([3, 2], np.int32))
    before = [p.asnumpy().copy() for p in model.trainable_params()]
    _, _, applied = step(*(ms.Tensor(x) for x in inputs), ms.Tensor(float("inf"), ms.float32))
    assert not bool(applied.asnumpy())
    assert all(np.array_equal(b, p.asnumpy()) for b, p in zip(before, model.trainable_params()))


def test_a_checkpoint_with_non_finite_weights_is_never_written(tmp_path):
    model, optimizer = tiny_model()
    weight = model.fc.weight
    values = weight.asnumpy().copy()
    values.flat[0] = np.nan
    weight.set_data(ms.Tensor(values))
    with pytest.raises(storage.NonFiniteWeights, match="not writing .*step-1.ckpt: 1 parameters hold NaN"):
        storage.save(tmp_path / "checkpoints" / "step-1.ckpt", model, optimizer, {"step": 1})
    assert not (tmp_path / "checkpoints").exists() or list((tmp_path / "checkpoints").iterdir()) == []


def test_a_failing_mindspore_save_leaves_the_last_checkpoint_and_nothing_else(tmp_path, monkeypatch):
    model, optimizer = tiny_model()
    first = tmp_path / "step-1.ckpt"
    storage.save(first, model, optimizer, {"step": 1})
    kept = sorted(p.name for p in tmp_path.iterdir())

    def disk_full(entries, name, **options):   # MindSpore's own partial file, then its error
        Path(name + ".tmp").write_bytes(b"half a checkpoint")
        raise RuntimeError("Failed to save the checkpoint file: No space left on device")
    monkeypatch.setattr(ms, "save_checkpoint", disk_full)
    with pytest.raises(files.WriteError, match=f"cannot write step-2.ckpt in {tmp_path}/"):
        storage.save(tmp_path / "step-2.ckpt", model, optimizer, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == kept
    assert storage.load(first)[1]["step"] == 1


def test_an_epoch_without_a_dev_score_keeps_its_checkpoint_and_training_goes_on(tmp_path, capsys):
    manifests = write_tone_corpus(tmp_path / "corpus", counts=(("train", 8), ("dev", 2), ("test", 2)))
    for sample in json.loads(manifests["dev"].read_text())["samples"]:
        Path(sample["wav_path"]).write_bytes(b"")   # every dev utterance unreadable after the manifest was written
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, tmp_path / "data", manifests, **{"train.epochs": 2})
    assert main(["train"] + overrides) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "no dev score" in line]
    assert len(warnings) == 2 and "training goes on" in warnings[0]
    assert [meta_epoch(path) for path in storage.step_checkpoints(run_dir)][-1] == 2
    assert not (storage.checkpoint_dir(run_dir) / storage.BEST_NAME).exists()
    assert [r for r in read_metrics(run_dir) if r["kind"] == "dev"] == []


def meta_epoch(path):
    return storage.load(path)[1]["position"]["epoch"]


def test_a_second_train_on_a_held_run_folder_is_refused_in_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ds2 import files; "
                               "files.hold(sys.argv[1], 'train'); print('held', flush=True); time.sleep(60)",
                               str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--set", f"run_dir={run_dir}"]) == 1
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert err == f"ds2 train: {run_dir} is in use by ds2 train (pid {holder.pid} on " + err.split(" on ", 1)[1]
    assert err.count("\n") == 1 and "wait for it to finish" in err
    assert sorted(p.name for p in run_dir.iterdir()) == [files.LOCK_NAME]
