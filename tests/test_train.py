"""Training: schedule, the compiled step (LR applied, clipping, non-finite skip), learning, resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

ms = pytest.importorskip("mindspore")

from ds2.__main__ import main  # noqa: E402
from ds2.config import ModelConfig, TrainConfig, load_config  # noqa: E402
from ds2.errors import UserError  # noqa: E402
from ds2.model import DeepSpeech2, TrainNetwork  # noqa: E402
from ds2.step import build_optimizer, build_training_state, learning_rate, make_train_step  # noqa: E402
from tests.helpers import read_metrics, tiny_overrides, write_tone_corpus  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(11)


def test_learning_rate_warms_up_then_anneals():
    cfg = TrainConfig(lr=1e-3, warmup_steps=4, lr_anneal=2.0)
    assert [learning_rate(cfg, s, 0) for s in range(5)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    assert learning_rate(cfg, 100, 2) == pytest.approx(2.5e-4)


def tiny_step(dynamic: bool = False):
    cfg = ModelConfig(conv_channels=2, conv1_kernel=(5, 5), conv2_kernel=(5, 5), rnn_hidden=8, rnn_layers=1)
    model = DeepSpeech2(cfg, 17)
    model.set_train(True)
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.0))
    step = make_train_step(TrainNetwork(model), optimizer, grad_clip=1.0, dynamic_n_bins=17 if dynamic else 0)
    rng = np.random.default_rng(0)
    inputs = (rng.standard_normal((2, 1, 17, 24)).astype(np.float32), np.array([24, 20], np.int32),
              np.array([[3, 4, 5], [6, 7, 0]], np.int32), np.array([3, 2], np.int32))
    return model, step, inputs


def run_step(step, inputs, lr):
    loss, norm, applied = step(*(ms.Tensor(x) for x in inputs), ms.Tensor(lr, ms.float32))
    return float(loss.asnumpy()), float(norm.asnumpy()), bool(applied.asnumpy())


def test_train_step_applies_the_given_lr_clips_and_skips_non_finite():
    model, step, inputs = tiny_step()
    weight = model.fc.weight

    def change(lr, batch=inputs):
        before = [p.asnumpy().copy() for p in model.trainable_params()]
        loss, norm, applied = run_step(step, batch, lr)
        moved = max(float(np.abs(p.asnumpy() - b).max()) for p, b in zip(model.trainable_params(), before))
        return moved, loss, norm, applied

    # Adam's first update moves each weight by about lr (m / sqrt(v) = sign(g)).
    before = weight.asnumpy().copy()
    moved, _, norm, applied = change(1e-3)
    assert applied and float(np.abs(weight.asnumpy() - before).max()) == pytest.approx(1e-3, rel=0.05)
    assert norm > 1.0  # the logged norm is measured before clipping to 1.0
    assert change(0.0)[0] == 0.0  # a stale, compiled-in LR would move the weights again
    assert change(1e-2)[0] > 3e-3
    moved, loss, _, applied = change(1e-3, (np.full_like(inputs[0], np.nan),) + inputs[1:])
    assert not applied and not np.isfinite(loss) and moved == 0.0


def test_dynamic_shape_step_computes_what_the_per_shape_steps_compute():
    model, dynamic_step, inputs = tiny_step(dynamic=True)
    static_step = make_train_step(TrainNetwork(model), build_optimizer(model, TrainConfig(weight_decay=0.0)),
                                  grad_clip=1.0)
    rng = np.random.default_rng(1)
    wider = (rng.standard_normal((3, 1, 17, 40)).astype(np.float32), np.array([40, 33, 28], np.int32),
             np.array([[3, 4, 5, 6, 7], [6, 7, 0, 0, 0], [8, 9, 10, 11, 0]], np.int32), np.array([5, 2, 4], np.int32))
    for batch in (inputs, wider, inputs):   # lr 0: the weights stay, so both see the same model
        loss, norm, applied = run_step(dynamic_step, batch, 0.0)
        assert applied
        assert (loss, norm) == pytest.approx(run_step(static_step, batch, 0.0)[:2], rel=1e-5)
    loss_before = run_step(dynamic_step, wider, 0.0)[0]
    for _ in range(10):
        run_step(dynamic_step, wider, 1e-2)
    assert run_step(dynamic_step, wider, 0.0)[0] < loss_before  # its updates reach the weights


def test_the_training_state_names_its_checkpoint_entries_as_train_always_has(tmp_path):
    """build_training_state (train, convert, envcheck's probe, the benchmarks): the model's own names, and
    the optimizer's state named after the wrapped model's parameters, as in checkpoints of earlier versions."""
    from ds2.checkpoint import storage

    cfg = load_config("small", overrides=["model.conv_channels=2", "model.rnn_hidden=8", "model.rnn_layers=1",
                                          "train.weight_decay=0.25", "train.lr=0.125"])
    state = build_training_state(cfg, compile_step=False)
    assert state.train_step is None and state.network.model is state.model
    storage.save(tmp_path / "state.ckpt", state.model, state.optimizer, {"step": 0})
    names = set(storage.read_checkpoint(tmp_path / "state.ckpt")[0])
    assert {"conv.0.conv.weight", "rnns.0.lstm.weight_hh_reverse", "fc.weight",
            "optimizer.moment1.model.fc.weight", "optimizer.moment2.model.conv.0.conv.weight"} <= names
    assert not any(name.startswith(("optimizer.moment1.fc", "optimizer.moment1.conv")) for name in names)
    # Adam with weight decay on weight matrices only, eps 1e-8, at the configured rate
    decay = {p.name: d for p, d in zip(state.optimizer.parameters, state.optimizer.decay_flags)}
    assert decay["model.fc.weight"] and not decay["model.fc_bn.gamma"] and not decay["model.conv.0.conv.bias"]
    assert float(state.optimizer.eps.asnumpy()) == pytest.approx(1e-8)
    assert float(state.optimizer.learning_rate.asnumpy()) == pytest.approx(0.125)

    restored = build_training_state(cfg)     # with the compiled step, as ds2 train resumes
    values, _ = storage.read_checkpoint(tmp_path / "state.ckpt")
    storage.restore(values, restored.model, restored.optimizer)
    n_bins = cfg.features.n_bins
    rng = np.random.default_rng(0)
    inputs = (rng.standard_normal((2, 1, n_bins, 40)).astype(np.float32), np.array([40, 32], np.int32),
              np.array([[3, 4, 5], [6, 7, 0]], np.int32), np.array([3, 2], np.int32))
    restored.model.set_train(True)
    loss, _, applied = run_step(restored.train_step, inputs, 1e-3)
    assert applied and np.isfinite(loss)


def test_recomputing_the_lstm_layers_changes_no_number():
    model, plain_step, inputs = tiny_step()
    plain = run_step(plain_step, inputs, 0.0)[:2]   # compiled before the layers are marked
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.0))
    recomputing = make_train_step(TrainNetwork(model), optimizer, grad_clip=1.0, recompute_rnn=True)
    loss, norm, _ = run_step(recomputing, inputs, 0.0)
    assert (loss, norm) == pytest.approx(plain, rel=1e-5)


def test_tiny_model_loss_decreases_on_a_fixed_batch():
    _, step, inputs = tiny_step()
    losses = [run_step(step, inputs, 1e-2)[0] for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.slow
def test_train_resume_continues_exactly(tmp_path):
    """Stop after 4 steps, resume to 8: same steps, LRs and (nearly) losses as one run of 8."""
    manifests = write_tone_corpus(tmp_path / "corpus")
    whole, split, data = tmp_path / "whole", tmp_path / "split", tmp_path / "data"
    no_dev = {"train.eval_every_epochs": 100}  # keeps the test quick; dev eval is tested in test_evaluate
    assert main(["train", "--max-steps", "8"] + tiny_overrides(whole, data, manifests, **no_dev)) == 0
    assert main(["train", "--max-steps", "4"] + tiny_overrides(split, data, manifests, **no_dev)) == 0
    assert main(["train", "--resume", "--max-steps", "8"] + tiny_overrides(split, data, manifests, **no_dev)) == 0
    a = [r for r in read_metrics(whole) if r["kind"] == "train"]
    b = [r for r in read_metrics(split) if r["kind"] == "train"]
    assert [r["step"] for r in b] == list(range(1, 9))
    assert [(r["epoch"], r["batch"], r["lr"]) for r in b] == [(r["epoch"], r["batch"], r["lr"]) for r in a]
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-3)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_has_no_gap_or_repeat(tmp_path):
    manifests = write_tone_corpus(tmp_path / "corpus")
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "ds2", "train"] + tiny_overrides(run_dir, tmp_path / "data", manifests,
                                                                      **{"train.epochs": 4})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill mid-epoch once steps past the newest checkpoint are logged: they must be redone once.
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            saved = [int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*.ckpt")]
            logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                      if line.endswith("}")] if (run_dir / "metrics.jsonl").exists() else []
            steps = [r["step"] for r in logged if r["kind"] == "train"]
            mid_epoch = steps and steps[-1] % 3 != 0  # 24 utterances, 8 per batch: 3 steps per epoch
            if saved and mid_epoch and steps[-1] >= 4 and steps[-1] > max(saved):
                break
            time.sleep(0.02)
        assert process.poll() is None, "training ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = max(r["step"] for r in read_metrics(run_dir))
    result = subprocess.run(command + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from" in result.stdout
    train = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    steps = [r["step"] for r in train]
    assert steps == list(range(1, len(steps) + 1))
    assert len(steps) > killed_at
    overrides = [a for a in command if "=" in a]
    cfg = load_config("small", None, overrides).train
    for r in train:
        assert r["lr"] == pytest.approx(learning_rate(cfg, r["step"] - 1, r["epoch"]))


@pytest.mark.slow
def test_resume_falls_back_past_a_damaged_checkpoint_and_starts_fresh_without_one(tmp_path, capsys):
    manifests = write_tone_corpus(tmp_path / "corpus")
    run_dir, data = tmp_path / "run", tmp_path / "data"
    overrides = tiny_overrides(run_dir, data, manifests, **{"train.eval_every_epochs": 100})
    # --resume with nothing to resume from is a fresh start (make and compose always pass it).
    assert main(["train", "--resume", "--max-steps", "4"] + overrides) == 0
    assert "starting a new run" in capsys.readouterr().out
    *_, previous, newest = sorted((run_dir / "checkpoints").glob("step-*.ckpt"))
    assert newest.name == "step-0000004.ckpt"
    newest.chmod(0o600)  # MindSpore saves checkpoints read-only
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated after it was written

    assert main(["train", "--resume", "--max-steps", "6"] + overrides) == 0
    captured = capsys.readouterr()
    assert "step-0000004.ckpt: SHA-256 does not match" in captured.err
    assert f"resumed from {previous}" in captured.out
    steps = [r["step"] for r in read_metrics(run_dir) if r["kind"] == "train"]
    assert steps == list(range(1, 7))


@pytest.mark.slow
def test_a_damaged_best_checkpoint_does_not_stop_resume(tmp_path, capsys):
    manifests = write_tone_corpus(tmp_path / "corpus")
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, tmp_path / "data", manifests, **{"train.epochs": 2})
    assert main(["train"] + overrides) == 0
    best = run_dir / "checkpoints" / "best.ckpt"
    best.chmod(0o600)
    best.write_bytes(best.read_bytes()[:500])   # best.ckpt is a hard link: its step checkpoint is damaged too
    capsys.readouterr()

    assert main(["train", "--resume"] + overrides + ["--set", "train.epochs=3"]) == 0
    err = capsys.readouterr().err
    assert "skipped a damaged checkpoint" in err
    assert "best.ckpt: SHA-256 does not match" in err and "the next dev evaluation replaces it" in err
    from ds2.checkpoint import storage
    assert storage.load(best)[1]["position"]["epoch"] == 3    # the new best, readable again


def test_bad_audio_mid_epoch_is_skipped_counted_and_named(tmp_path, capsys):
    manifests = write_tone_corpus(tmp_path / "corpus")
    manifest = json.loads(manifests["train"].read_text())
    unreadable, understated = manifest["samples"][3], manifest["samples"][5]
    open(unreadable["wav_path"], "wb").close()          # emptied after the manifest was written
    # Half a second longer than the manifest says, and than any bucket the manifest's durations plan.
    audio, rate = soundfile.read(understated["wav_path"], dtype="float32")
    soundfile.write(understated["wav_path"], np.concatenate([audio, np.zeros(rate // 2, np.float32)]), rate)
    run_dir = tmp_path / "run"
    assert main(["train"] + tiny_overrides(run_dir, tmp_path / "data", manifests, **{"train.epochs": 1})) == 0
    out = capsys.readouterr().out
    assert f"{unreadable['id']}: {unreadable['wav_path']}: cannot decode it" in out
    assert f"{understated['id']}: its audio has" in out and "more than its manifest duration" in out
    assert "batches skipped for bad data (2 utterances, named above)" in out
    trained = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    assert trained and all(r["loss"] == r["loss"] for r in trained)   # the rest of the epoch trained


def test_batch_settings_are_fitted_to_memory(monkeypatch, capsys):
    """Too little memory for the configured pair: fewer buckets first, then shorter batches."""
    from ds2 import memory
    from ds2.config import load_config
    from ds2.train import fit_batch_to_memory

    cfg = load_config("seed", overrides=["train.shapes=static"])
    monkeypatch.setattr(memory, "usable_bytes", lambda: 24 * 1024 ** 3)
    fit_batch_to_memory(cfg)
    assert cfg.train.num_buckets == memory.MIN_BUCKETS and cfg.train.max_batch_seconds < 160
    assert "using train.num_buckets=4" in capsys.readouterr().err

    # dynamic shapes, MindSpore's LSTM kernel: the configured pair fits in 24 GiB (and on ds2's operator in
    # 12 GiB too: tests/test_memory.py)
    one_graph = load_config("seed", overrides=["train.lstm_kernel=builtin"])
    fit_batch_to_memory(one_graph)
    assert (one_graph.train.num_buckets, one_graph.train.max_batch_seconds) == (16, 160.0)
    monkeypatch.setattr(memory, "usable_bytes", lambda: 12 * 1024 ** 3)
    fit_batch_to_memory(one_graph)     # less memory: the buckets stay, the batches shorten
    assert one_graph.train.num_buckets == 16 and one_graph.train.max_batch_seconds < 160
    assert "using train.num_buckets=16 train.max_batch_seconds=" in capsys.readouterr().err
    monkeypatch.setattr(memory, "usable_bytes", lambda: 24 * 1024 ** 3)

    roomy = load_config("small")
    fit_batch_to_memory(roomy)
    assert (roomy.train.num_buckets, roomy.train.max_batch_seconds) == (16, 64.0)   # fits: unchanged

    monkeypatch.setattr(memory, "usable_bytes", lambda: 1024 ** 3)
    with pytest.raises(UserError, match="do not fit in 1.0 GiB"):
        fit_batch_to_memory(load_config("seed"))
