"""The Makefile takes any path for RUNS, CONFIG, SOURCE and LM, or refuses it in one line before it runs anything.

make runs here for real on a copy of the Makefile, with DOCKER set to a recorder of its arguments: the
paths are generated (spaces, quotes, '$', backslashes, CSV and shell punctuation, non-ASCII, relative and
absolute, given on the command line or in the environment), and each one must arrive in the docker
command line as one argument naming exactly that file, or be refused with one line and nothing created.
No image and no Docker engine are needed.
"""
import csv
import json
import os
import random
import shutil
import stat
import subprocess
import sys

import pytest

from .conftest import REPO

EXAMPLES = 40
# Characters a path may hold, the awkward ones many times over; '/' separates the generated parts.
AWKWARD = " '\"$`\\!#%&()*+,;:<=>?@[]^{|}~\t" + "éß漢字🎙"
PLAIN = "abcxyz019_-."


def generated_name(rng):
    """One path component: 1-12 characters, never '.' or '..', never starting or ending with blanks
    (make trims blanks around a command-line value, as a shell user would expect)."""
    while True:
        name = "".join(rng.choice(AWKWARD if rng.random() < 0.5 else PLAIN) for _ in range(rng.randint(1, 12)))
        if name not in (".", "..") and name == name.strip():
            return name


def generated_path(rng, checkout, elsewhere):
    """(the path as the user types it, the absolute path it names): relative ones are relative to the checkout."""
    parts = [generated_name(rng) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.5:
        typed = "/".join(parts)
        return typed, os.path.join(checkout, typed)
    typed = os.path.join(elsewhere, *parts)
    return typed, typed


@pytest.fixture
def checkout(tmp_path):
    """A copy of the Makefile and .env to run make in, and a DOCKER that records its arguments and the
    Compose variables, one JSON line per call."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("Makefile", ".env"):
        shutil.copy(REPO / name, root / name)
    recorder = tmp_path / "docker"
    recorder.write_text(f"#!{sys.executable}\n"
                        "import json, os, sys\n"
                        "with open(os.environ['DOCKER_CALLS'], 'a') as log:\n"
                        "    env = {k: v for k, v in os.environ.items() if k.startswith('DS2_')}\n"
                        "    log.write(json.dumps({'argv': sys.argv[1:], 'env': env}) + '\\n')\n")
    recorder.chmod(recorder.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "elsewhere").mkdir()
    return root


def run_make(checkout, goal, paths, in_environment=False):
    """make GOAL with the paths (a dict VARIABLE: value) on its command line or in its environment; the
    docker calls it made, and its result."""
    calls = checkout.parent / "calls.jsonl"
    if calls.exists():
        calls.unlink()
    env = {key: value for key, value in os.environ.items() if key not in ("RUNS", "CONFIG", "SOURCE", "LM", "MAKEFLAGS")}
    env["DOCKER_CALLS"] = str(calls)
    assignments = [f"{name}={value}" for name, value in paths.items()]
    if in_environment:
        env.update(paths)
        assignments = []
    result = subprocess.run(["make", "--no-print-directory", "-o", "image-cpu", goal,
                             f"DOCKER={checkout.parent / 'docker'}", *assignments],
                            cwd=checkout, env=env, capture_output=True, text=True)
    made = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return result, made


def mounts(argv):
    """The --mount values of a docker command line, each parsed as Docker does (CSV), as dicts."""
    found = []
    for flag, value in zip(argv, argv[1:]):
        if flag == "--mount":
            fields = next(csv.reader([value]))
            found.append(dict(field.split("=", 1) if "=" in field else (field, True) for field in fields))
    return found


def files_under(root):
    return {os.path.join(folder, name) for folder, dirs, files in os.walk(root) for name in dirs + files}


def test_any_runs_folder_is_mounted_as_typed(checkout):
    rng = random.Random(1)
    elsewhere = str(checkout.parent / "elsewhere")
    for example in range(EXAMPLES):
        typed, absolute = generated_path(rng, os.path.realpath(checkout), elsewhere)
        before = files_under(checkout.parent)
        result, calls = run_make(checkout, "train", {"RUNS": typed}, in_environment=example % 2 == 1)
        assert result.returncode == 0, (typed, result.stderr)
        assert len(calls) == 1, (typed, calls)
        argv = calls[0]["argv"]
        assert {"type": "bind", "source": absolute, "target": "/work/runs"} in mounts(argv), (typed, argv)
        assert argv[-2:] == ["ds2-stage", "train"]
        assert os.path.isdir(absolute), typed
        # Nothing else was made: no stray folder named after part of the path.
        new = files_under(checkout.parent) - before - {str(checkout.parent / "calls.jsonl")}
        assert all(absolute == path or absolute.startswith(path + "/") for path in new), (typed, new)


def test_any_config_file_is_mounted_and_named_to_the_stage(checkout):
    rng = random.Random(2)
    elsewhere = str(checkout.parent / "elsewhere")
    for example in range(EXAMPLES):
        typed, absolute = generated_path(rng, os.path.realpath(checkout), elsewhere)
        os.makedirs(os.path.dirname(absolute), exist_ok=True)
        with open(absolute, "w") as config:
            config.write("train:\n  epochs: 1\n")
        result, calls = run_make(checkout, "train", {"CONFIG": typed}, in_environment=example % 2 == 1)
        assert result.returncode == 0, (typed, result.stderr)
        argv = calls[0]["argv"]
        inside = "/work/config/" + os.path.basename(absolute)
        assert {"type": "bind", "source": absolute, "target": inside, "readonly": True} in mounts(argv), (typed, argv)
        assert f"DS2_CONFIG={inside}" in argv, (typed, argv)
        os.unlink(absolute)


def test_any_checkpoint_and_lm_reach_eval_pretrained(checkout):
    rng = random.Random(3)
    elsewhere = str(checkout.parent / "elsewhere")
    for example in range(EXAMPLES):
        paths, absolute = {}, {}
        for name in ("SOURCE", "LM"):
            paths[name], absolute[name] = generated_path(rng, os.path.realpath(checkout), elsewhere)
        if os.path.basename(absolute["SOURCE"]) == os.path.basename(absolute["LM"]) or \
                absolute["SOURCE"].startswith(absolute["LM"] + "/") or absolute["LM"].startswith(absolute["SOURCE"] + "/"):
            continue   # one would be the other's folder
        for path in absolute.values():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w").close()
        result, calls = run_make(checkout, "eval-pretrained", paths, in_environment=example % 2 == 1)
        assert result.returncode == 0, (paths, result.stderr)
        argv = calls[0]["argv"]
        source_inside = "/work/pretrained/" + os.path.basename(absolute["SOURCE"])
        lm_inside = "/work/pretrained-lm/" + os.path.basename(absolute["LM"])
        found = mounts(argv)
        assert {"type": "bind", "source": absolute["SOURCE"], "target": source_inside, "readonly": True} in found
        assert {"type": "bind", "source": absolute["LM"], "target": lm_inside, "readonly": True} in found
        stage = argv[argv.index("ds2-stage"):]
        assert stage == ["ds2-stage", "eval-pretrained", source_inside, "--lm", lm_inside], (paths, argv)
        for path in absolute.values():
            os.unlink(path)


def test_train_dist_gives_compose_the_runs_folder_or_refuses_a_colon(checkout):
    rng = random.Random(4)
    elsewhere = str(checkout.parent / "elsewhere")
    for _ in range(EXAMPLES):
        typed, absolute = generated_path(rng, os.path.realpath(checkout), elsewhere)
        result, calls = run_make(checkout, "train-dist", {"RUNS": typed})
        if ":" in absolute:
            assert result.returncode != 0 and not calls, typed
            assert result.stderr.count("\n") == 1 and "RUNS=" in result.stderr and "':'" in result.stderr
            continue
        assert result.returncode == 0, (typed, result.stderr)
        assert calls[0]["argv"][0] == "compose" and calls[0]["env"]["DS2_RUNS"] == absolute, (typed, calls)


@pytest.mark.parametrize("variable", ["RUNS", "CONFIG", "SOURCE", "LM"])
def test_a_path_with_a_line_break_is_refused_in_one_line_before_anything(checkout, variable):
    rng = random.Random(variable)
    elsewhere = str(checkout.parent / "elsewhere")
    for _ in range(EXAMPLES // 4):
        typed, _ = generated_path(rng, os.path.realpath(checkout), elsewhere)
        cut = rng.randint(1, len(typed) - 1) if len(typed) > 1 else 1
        typed = typed[:cut] + "\n" + typed[cut:]
        before = files_under(checkout.parent)
        result, calls = run_make(checkout, "eval-pretrained" if variable in ("SOURCE", "LM") else "train",
                                 {variable: typed})
        assert result.returncode == 2 and not calls, (typed, result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and f"{variable} holds a line break" in result.stderr, result.stderr
        assert files_under(checkout.parent) == before, typed


@pytest.mark.parametrize("goal, paths, says", [
    ("train", {"CONFIG": "no such.yaml"}, "CONFIG=no such.yaml: no such file"),
    ("eval-pretrained", {}, "needs SOURCE=path/to/checkpoint"),
    ("eval-pretrained", {"SOURCE": "missing 'model'.pth"}, "SOURCE=missing 'model'.pth: no such file"),
    ("eval", {"RUNS": "Makefile"}, "RUNS=Makefile is a file"),
    ("train-dist", {"CONFIG": ".env"}, "make train-dist takes no CONFIG"),
])
def test_unusable_paths_are_refused_in_one_line_before_anything(checkout, goal, paths, says):
    before = files_under(checkout.parent)
    result, calls = run_make(checkout, goal, paths)
    assert result.returncode == 2 and not calls, result.stderr
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert files_under(checkout.parent) == before
