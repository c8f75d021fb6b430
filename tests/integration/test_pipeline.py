"""The pipeline's stages, run in the CPU image the ways users run them: Compose and make."""
import json
import os

import pytest

from .conftest import run

# A corpus and run small enough for a test: the stages run for real, the model just does not learn.
TINY = ("--set data.synth_train=48 --set data.synth_dev=8 --set data.synth_test=8 "
        "--set train.epochs=1 --set train.checkpoint_every=2")


@pytest.fixture
def compose_env(image, runs_dir):
    project = f"ds2test{os.getpid()}"
    env = {**os.environ, "DS2_RUNS": str(runs_dir), "DS2_IMAGE_CPU": image, "DS2_ARGS": TINY,
           "COMPOSE_PROJECT_NAME": project}
    yield env
    run(["docker", "compose", "down", "--remove-orphans"], env=env)


@pytest.mark.slow
def test_compose_up_train_then_eval(compose_env, runs_dir):
    up = run(["docker", "compose", "up", "--no-build", "--exit-code-from", "train", "train"],
             env=compose_env, timeout=1500)
    assert up.returncode == 0, (up.stdout + up.stderr)[-4000:]
    checkpoints = list((runs_dir / "small").rglob("*.ckpt"))
    assert checkpoints, "training wrote no checkpoint"
    assert (runs_dir / "small" / "metrics.jsonl").stat().st_size > 0

    ev = run(["docker", "compose", "run", "--rm", "eval"], env=compose_env, timeout=600)
    assert ev.returncode == 0, (ev.stdout + ev.stderr)[-4000:]
    summary = json.loads((runs_dir / "small" / "eval" / "test_greedy_summary.json").read_text())
    lines = (runs_dir / "small" / "eval" / "test_greedy.jsonl").read_text().splitlines()
    # Every test utterance scored; one epoch on 48 utterances learns little, so the error rates are high
    # but are rates: edits over reference characters and words.
    assert summary["utterances"] == len(lines) == 8 and summary["left_out"] == 0
    assert summary["cer"] == summary["char_edits"] / summary["chars"] and 0.3 < summary["cer"] <= 1.5
    assert summary["wer"] == summary["word_edits"] / summary["words"] and 0.5 < summary["wer"] <= 2.0
    assert f"CER {summary['cer']:.4f}" in ev.stdout
    noisy = json.loads((runs_dir / "small" / "eval" / "test-noisy_greedy_summary.json").read_text())
    assert noisy["utterances"] == 8 and f"CER {noisy['cer']:.4f}" in ev.stdout   # the second test split too

    # make eval-pretrained takes that checkpoint as if it came from elsewhere: converted into a run of its
    # own, the LM built from the training transcripts, the test set decoded greedy and with the LM.
    source = runs_dir / "small" / "checkpoints" / "best.ckpt"
    pre = run(["make", "-o", "image-cpu", "eval-pretrained", f"SOURCE={source}", f"RUNS={runs_dir}",
               f"IMAGE_CPU={compose_env['DS2_IMAGE_CPU']}",
               "SET=data.synth_train=48 data.synth_dev=8 data.synth_test=8"], timeout=900)
    assert pre.returncode == 0, (pre.stdout + pre.stderr)[-4000:]
    results = runs_dir / "pretrained" / "best" / "eval"
    greedy = json.loads((results / "test_greedy_summary.json").read_text())
    with_lm = json.loads((results / "test_lm_summary.json").read_text())
    assert (greedy["wer"], greedy["cer"]) == (summary["wer"], summary["cer"])   # the same model, converted
    assert with_lm["lm"] == "runs/data/lm/train-1gram.arpa" and with_lm["alpha_from"] == "default"
    assert "every decoder evaluated" in pre.stdout and "wrote runs/pretrained/best/checkpoints" in pre.stdout

    # Everything the containers wrote belongs to the user who ran them, not to root.
    foreign = [p for p in runs_dir.rglob("*") if p.stat().st_uid != os.getuid()]
    assert not foreign, f"files not owned by uid {os.getuid()}: {foreign[:5]}"


def test_compose_file_is_valid_and_has_the_services():
    result = run(["docker", "compose", "--profile", "gpu", "config", "--services"])
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= {"envcheck", "preprocess", "train", "eval", "train-gpu"}


def test_stage_stops_on_blocking_envcheck_diagnosis(docker_client, image, runs_dir):
    """ds2-stage runs envcheck first; a blocking problem stops the stage before it starts."""
    # A feature window SciPy removed is a blocking problem for preprocessing (see FINDINGS.md).
    config = runs_dir / "bad.yaml"
    config.write_text("features:\n  window: not-a-window\n")
    container = docker_client.containers.run(
        image, ["sh", "-c", "ds2-stage preprocess echo STAGE-STARTED"], user="0:0",
        environment={"DS2_ENVCHECK_ARGS": "--config /work/runs/bad.yaml"},
        volumes={str(runs_dir): {"bind": "/work/runs", "mode": "rw"}}, detach=True)
    status = container.wait()["StatusCode"]
    logs = container.logs().decode()
    container.remove()
    assert status == 1, logs
    assert "STAGE-STARTED" not in logs
    assert "blocking problem" in logs


def test_make_help_lists_the_stage_targets():
    result = run(["make", "help"])
    assert result.returncode == 0
    for target in ("base-image", "image-cpu", "image-gpu", "lock", "envcheck", "data", "preprocess",
                   "train-cpu", "train-gpu", "eval", "test", "clean"):
        assert f"  {target} " in result.stdout, target
