"""The pipeline's stages, run in the CPU image the ways users run them: Compose and make."""
import json
import os
import re
import stat

import pytest
import yaml

from .conftest import REPO, run

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
        image, ["ds2-stage", "preprocess"], user="0:0",
        environment={"DS2_CONFIG": "/work/runs/bad.yaml"},
        volumes={str(runs_dir): {"bind": "/work/runs", "mode": "rw"}}, detach=True)
    status = container.wait()["StatusCode"]
    logs = container.logs().decode()
    container.remove()
    assert status == 1, logs
    assert "blocking problem" in logs
    assert sorted(p.name for p in runs_dir.iterdir()) == ["bad.yaml"], "the stage ran: it wrote in the runs folder"


# Each stage's command line lives in docker/run-stage.sh (the image's ds2-stage); make and Compose only
# name the stage, so the two cannot drift apart.
RUN_STAGE = REPO / "docker" / "run-stage.sh"


def ds2_stage_stages():
    """The stages ds2-stage announces, after checking that its two dispatch tables hold the same ones."""
    text = RUN_STAGE.read_text()
    announced = re.search(r'^stages="([^"]+)"', text, re.M).group(1).split()
    body_of_run = text[text.index("\nrun() {"):text.index("\n}\n", text.index("\nrun() {"))]
    commands = re.findall(r"^ {8}([a-z-]+)\)", body_of_run, re.M)
    dispatch = text[text.rindex('case $stage in'):]
    checked = [name for labels in re.findall(r"^    ([a-z|-]+)\)", dispatch, re.M) for name in labels.split("|")]
    assert sorted(announced) == sorted(checked), "the stages ds2-stage lists differ from the ones it dispatches"
    assert set(commands) == set(checked) - {"train-gpu"}, "a stage without its command line, or a line for none"
    return set(announced)


def test_make_and_compose_run_every_stage_through_ds2_stage():
    stages = ds2_stage_stages()
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    recipes = [line for line in makefile.splitlines() if line.startswith("\t")]
    containers = [line for line in recipes if re.search(r"\$\((RUN_CPU|RUN_GPU|call docker_run)\b", line)]
    assert len(containers) >= 12, "the Makefile's stage recipes moved: this test no longer finds them"
    for line in containers:
        named = re.search(r"\) ds2-stage ([a-z-]+)", line)
        assert named and named.group(1) in stages, f"a Makefile recipe runs something other than a stage: {line}"
    # No recipe spells a ds2 command line itself.
    for line in recipes:
        assert not re.search(r"\bds2 (preprocess|train|eval|lm|tune-lm|export|serve|convert)\b", line), line
    # RUN_GPU is RUN_CPU's definition with another image and --gpus.
    assert re.search(r"^RUN_CPU = \$\(call docker_run,\$\(IMAGE_CPU\),", makefile, re.M)
    assert re.search(r"^RUN_GPU = \$\(call docker_run,\$\(IMAGE_GPU\),.*--gpus all", makefile, re.M)

    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        command = service["command"]
        assert command[0] == "ds2-stage" and len(command) == 2 and command[1] in stages, (name, command)
    assert services["envcheck"]["command"][1] == "envcheck"
    assert services["train-gpu"]["command"][1] == "train-gpu"


def test_compose_passes_the_settings_to_every_service_envcheck_included():
    env = {**os.environ, "DS2_ARGS": "--set train.epochs=3", "DS2_PRESET": "seed", "DS2_CONFIG": "/work/runs/my.yaml"}
    result = run(["docker", "compose", "--profile", "gpu", "--profile", "train-dist", "config", "--format", "json"],
                 env=env)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    for name, service in services.items():
        assert service["environment"]["DS2_ARGS"] == "--set train.epochs=3", name
        assert service["environment"]["DS2_PRESET"] == "seed", name
        assert service["environment"]["DS2_CONFIG"] == "/work/runs/my.yaml", name


@pytest.fixture
def fake_container(tmp_path):
    """A PATH whose `ds2` and `python` record their arguments in a log, one line per call, and exit with
    the status the test gives python (envcheck's)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    for program in ("ds2", "python"):
        script = bin_dir / program
        script.write_text(f"""#!/bin/sh
printf '%s' {program} >> "$CALLS"
for word in "$@"; do printf ' [%s]' "$word" >> "$CALLS"; done
echo >> "$CALLS"
[ {program} = ds2 ] || exit "${{ENVCHECK_STATUS:-0}}"
""")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def stage(*argv, envcheck_status=0, **settings):
        if log.exists():
            log.unlink()
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(log),
               "ENVCHECK_STATUS": str(envcheck_status), **settings}
        result = run(["sh", str(RUN_STAGE), *argv], env=env)
        calls = log.read_text().splitlines() if log.exists() else []
        return result, calls
    return stage


CONFIG = "[--preset] [seed] [--config] [/work/my conf.yaml] [--set] [data.synth_train=*] [--set] [train.epochs=2]"
SETTINGS = dict(DS2_PRESET="seed", DS2_CONFIG="/work/my conf.yaml",
                DS2_ARGS="--set data.synth_train=* --set train.epochs=2")


def test_ds2_stage_runs_envcheck_then_the_stage_with_the_same_settings(fake_container):
    result, calls = fake_container("eval", "--no-lm", **SETTINGS)
    assert result.returncode == 0, result.stderr
    assert calls == [f"python [-m] [envcheck] {CONFIG} [--stage] [eval]",
                     f"ds2 [eval] {CONFIG} [--checkpoint] [best] [--split] [test,test-noisy] [--no-lm]"]

    result, calls = fake_container("train-gpu", **SETTINGS)
    gpu = f"{CONFIG} [--set] [train.device=GPU]"
    assert calls == [f"python [-m] [envcheck] {gpu} [--stage] [preprocess]", f"ds2 [preprocess] {gpu} [--warm-cache]",
                     f"python [-m] [envcheck] {gpu} [--stage] [train]", f"ds2 [train] {gpu} [--resume]",
                     f"python [-m] [envcheck] {gpu} [--stage] [eval]",
                     f"ds2 [eval] {gpu} [--checkpoint] [best] [--split] [test,test-noisy]"]

    result, calls = fake_container("envcheck", "--json", **SETTINGS)
    assert calls == [f"python [-m] [envcheck] {CONFIG} [--json]"]


def test_ds2_stage_stops_on_envcheck_blocking_and_goes_on_with_warnings(fake_container):
    result, calls = fake_container("train", envcheck_status=1)
    assert result.returncode == 1 and calls == ["python [-m] [envcheck] [--stage] [train]"]
    assert "blocking problem for 'train'" in result.stderr
    result, calls = fake_container("train", envcheck_status=2)
    assert result.returncode == 0 and calls[-1] == "ds2 [train] [--resume]"


def test_ds2_stage_evaluates_a_checkpoint_from_elsewhere(fake_container):
    result, calls = fake_container("eval-pretrained", "/work/pretrained/my model.v2.pth", "--tune",
                                   "--lm", "/work/pretrained-lm/3-gram.arpa.gz", "--alpha", "0.5")
    assert result.returncode == 0, result.stderr
    run_dir = "[--set] [run_dir=runs/pretrained/my model.v2]"
    checkpoint = "[--checkpoint] [runs/pretrained/my model.v2/checkpoints/step-0000000.ckpt]"
    lm = "[--lm] [/work/pretrained-lm/3-gram.arpa.gz]"
    assert calls[1:] == [f"ds2 [convert] {run_dir} [/work/pretrained/my model.v2.pth]",
                         f"ds2 [preprocess] {run_dir} [--splits] [dev,test]",
                         f"ds2 [tune-lm] {run_dir} {checkpoint} {lm}",
                         f"ds2 [eval] {run_dir} {checkpoint} [--split] [test] [--no-lm]",
                         f"ds2 [eval] {run_dir} {checkpoint} [--split] [test] {lm} [--alpha] [0.5]"]


def test_ds2_stage_refuses_an_unknown_stage_in_one_line(fake_container):
    result, calls = fake_container("trian")
    assert result.returncode == 2 and not calls
    assert result.stderr.count("\n") == 1 and "unknown stage 'trian'" in result.stderr


def test_make_help_lists_the_stage_targets():
    result = run(["make", "help"])
    assert result.returncode == 0
    for target in ("base-image", "image-cpu", "image-gpu", "lock", "envcheck", "data", "preprocess",
                   "train-cpu", "train-gpu", "eval", "test", "clean"):
        assert f"  {target} " in result.stdout, target
