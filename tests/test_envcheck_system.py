"""Feature settings, espeak-ng, memory, disk, CPU features and threads, in real broken states:
configs that ask for too much, a CPU without AVX2 in a private mount namespace, a PATH without
espeak-ng, an unwritable directory."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ds2 import kernels
from envcheck.probes import cpu_features, preload
from tests.envcheck_helpers import PYTHON, run_envcheck


def write_config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def can_unshare_mounts() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


needs_mount_namespace = pytest.mark.skipif(not can_unshare_mounts(),
                                           reason="needs `unshare -m` (root / CAP_SYS_ADMIN) to mount in a private namespace")


def test_hanning_window_is_flagged_with_hann_as_the_fix(tmp_path):
    config = write_config(tmp_path / "eval.yaml", "features:\n  window: hanning\n")
    run = run_envcheck("--only", "stft.window", "--config", config)
    probe = run.probe("stft.window")
    assert probe["status"] == "warn"
    assert "Unknown window type" in probe["details"]["error"]  # SciPy's own refusal
    diagnosis = run.diagnosis("stft.window", "scipy-hanning-removed")
    assert "window: hann" in " ".join(diagnosis["fix"])


def test_unknown_window_fails(tmp_path):
    # SciPy's gaussian window needs a width: get_window('gaussian', n) raises.
    config = write_config(tmp_path / "bad.yaml", "features:\n  window: gaussian\n")
    run = run_envcheck("--only", "stft.window", "--config", config)
    assert run.probe("stft.window")["status"] == "fail"
    assert "needs one or more parameters" in run.probe("stft.window")["details"]["error"]
    assert "window-unknown" in run.rules("stft.window")


def test_configured_window_passes():
    run = run_envcheck("--only", "stft.window")
    assert run.probe("stft.window")["status"] == "pass"


def test_espeak_missing_from_path(tmp_path):
    run = run_envcheck("--stage", "preprocess", "--only", "espeak", env={"PATH": str(tmp_path)})
    assert run.probe("espeak")["status"] == "fail"
    assert "espeak-missing" in run.rules("espeak")


def test_memory_limit_below_the_model_estimate(tmp_path):
    config = write_config(tmp_path / "huge.yaml",
                          "model:\n  rnn_hidden: 8192\n  rnn_layers: 12\ntrain:\n  max_batch_seconds: 4000\n")
    run = run_envcheck("--stage", "train", "--only", "memory", "--config", config)
    probe = run.probe("memory")
    assert probe["status"] == "fail"
    assert probe["details"]["estimate"]["total_bytes"] > probe["details"]["usable_bytes"]
    assert "memory-below-estimate" in run.rules("memory")


def test_memory_available_now_below_the_estimate(tmp_path):
    from ds2.config import load_config
    from ds2.memory import estimate
    # (Stage eval: for training, a shortage of available memory makes ds2 train pick smaller batch
    # settings instead; see tests/test_memory.py.) Another process holds 2 GiB, so that less memory is available than the limit allows; the batch
    # length is then chosen so that the estimate falls between the two.
    holder = subprocess.Popen([PYTHON, "-c", "import time; held = b'x' * (2 << 30); print('held', flush=True); "
                               "time.sleep(300)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        facts = run_envcheck("--stage", "eval", "--only", "memory").probe("memory")["details"]
        low, high = facts["available_bytes"], facts["usable_bytes"]
        if high - low < 1024 ** 3:
            pytest.skip("usable and available memory are too close to aim between them")
        config = load_config("seed")
        seconds_lo, seconds_hi = 1.0, 100000.0
        for _ in range(60):  # bisect the batch length: the estimate grows with it
            middle = (seconds_lo + seconds_hi) / 2
            if estimate(config, training=False, batch_seconds=middle).total_bytes < (low + high) / 2:
                seconds_lo = middle
            else:
                seconds_hi = middle
        path = write_config(tmp_path / "between.yaml", f"train:\n  max_batch_seconds: {seconds_lo:.1f}\n")
        run = run_envcheck("--stage", "eval", "--preset", "seed", "--only", "memory", "--config", path)
    finally:
        holder.kill()
        holder.wait()
    probe = run.probe("memory")
    assert probe["status"] == "warn", probe["summary"]
    assert "memory-available-low" in run.rules("memory")


def test_memory_probe_says_which_settings_train_will_use(tmp_path):
    # Static shapes: a graph per bucket, so the seed preset's 16 buckets of 160 s need ~290 GiB.
    run = run_envcheck("--stage", "train", "--preset", "seed", "--set", "train.shapes=static", "--only", "memory")
    probe = run.probe("memory")
    # What ds2 train would choose with the memory the probe saw (other processes may hold some).
    from ds2.config import load_config
    from ds2.memory import fit
    details = probe["details"]
    seed = load_config("seed", overrides=["train.shapes=static"])
    fitted = fit(seed, min(v for v in (details["usable_bytes"], details["available_bytes"]) if v))
    if fitted is None:
        assert probe["status"] == "fail" and "memory-below-estimate" in run.rules("memory")
    elif (fitted.num_buckets, fitted.batch_seconds) == (seed.train.num_buckets, seed.train.max_batch_seconds):
        assert probe["status"] == "pass", probe["summary"]
    else:
        assert probe["status"] == "warn" and "batch-reduced-to-fit" in run.rules("memory")
        assert (f"ds2 train will use train.num_buckets={fitted.num_buckets} "
                f"train.max_batch_seconds={fitted.batch_seconds:g}") in probe["summary"]


def test_not_enough_disk_for_librispeech(tmp_path):
    config = write_config(tmp_path / "libri.yaml", (
        "data:\n  source: librispeech\n"
        f"  data_dir: {tmp_path / 'data'}\n"
        "  train_subsets: [train-clean-100, train-clean-360, train-other-500]\n"))
    run = run_envcheck("--stage", "preprocess", "--only", "disk", "--config", config)
    probe = run.probe("disk")
    if probe["status"] == "pass":
        pytest.skip("this disk has room for 960 hours of LibriSpeech")
    assert probe["status"] == "fail"
    assert "disk-low" in run.rules("disk")


@needs_mount_namespace
def test_read_only_data_directory(tmp_path):
    # The data directory on a read-only mount, as a bind mount with :ro gives a container.
    data = tmp_path / "data"
    data.mkdir()
    config = write_config(tmp_path / "ro.yaml", f"data:\n  data_dir: {data}\n")
    mount_read_only = ["unshare", "-m", "sh", "-c",
                       'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', str(data)]
    run = run_envcheck("--stage", "preprocess", "--only", "disk", "--config", config, prefix=mount_read_only)
    assert run.probe("disk")["status"] == "fail", run.stderr
    assert "dir-not-writable" in run.rules("disk")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Old Xeon\nflags\t\t: fpu sse sse2 avx\n\nprocessor\t: 1\n")
    assert cpu_features.cpu_flags(str(info)) == ("Old Xeon", {"fpu", "sse", "sse2", "avx"})


@needs_mount_namespace
def test_cpu_without_avx2(tmp_path):
    # What a VM with a generic CPU model shows its guest: AVX, no AVX2/FMA.
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: QEMU Virtual CPU\nflags\t\t: fpu sse sse2 ssse3 sse4_2 avx\n")
    hide_avx2 = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /proc/cpuinfo && exec "$@"', str(fake)]
    run = run_envcheck("--only", "cpu.features", prefix=hide_avx2)
    assert run.probe("cpu.features")["status"] == "warn"
    assert "cpu-no-avx2" in run.rules("cpu.features")


def test_thread_variables_above_the_usable_cores():
    run = run_envcheck("--only", "threads", env={"OMP_NUM_THREADS": "64"})
    probe = run.probe("threads")
    assert probe["status"] == "warn"
    assert "OMP_NUM_THREADS=64" in probe["summary"]
    assert "threads-oversubscribed" in run.rules("threads")
    assert f"OMP_NUM_THREADS={probe['details']['usable']}" in " ".join(run.diagnosis("threads", "threads-oversubscribed")["fix"])


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", "", "4,x"])
def test_omp_num_threads_that_is_not_a_count_is_a_warning_with_the_fix(value):
    run = run_envcheck("--only", "threads", env={"OMP_NUM_THREADS": value})
    probe = run.probe("threads")
    assert probe["status"] == "warn" and run.code == 2
    assert f"OMP_NUM_THREADS={value!r}" in probe["summary"]
    diagnosis = run.diagnosis("threads", "thread-variable-invalid")
    assert diagnosis["fix"] == [f"export OMP_NUM_THREADS={probe['details']['usable']}    # or: unset OMP_NUM_THREADS"]
    assert "threads-oversubscribed" not in run.rules("threads")


def test_each_invalid_thread_variable_gets_its_own_fix():
    run = run_envcheck("--only", "threads", env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "all",
                                                 "NUMBA_NUM_THREADS": "0"})
    fix = run.diagnosis("threads", "thread-variable-invalid")["fix"]
    assert [step.split("=")[0] for step in fix] == ["export MKL_NUM_THREADS", "export NUMBA_NUM_THREADS"]


@pytest.mark.parametrize("name, value, valid", [
    ("OMP_NUM_THREADS", "4", True), ("OMP_NUM_THREADS", "4,2", True), ("OMP_NUM_THREADS", " 2 ", True),
    ("OMP_NUM_THREADS", "0", False), ("OMP_NUM_THREADS", "2,", False), ("MKL_NUM_THREADS", "4,2", False),
    ("OPENBLAS_NUM_THREADS", "07", True), ("NUMBA_NUM_THREADS", "-3", False), ("NUMEXPR_NUM_THREADS", "two", False),
])
def test_what_counts_as_a_thread_count(name, value, valid):
    from envcheck.probes import threads
    assert (threads.invalid(name, value) is None) == valid


def test_ld_preload_of_a_missing_file_is_a_warning_naming_it(tmp_path):
    missing = tmp_path / "libjemalloc.so.2"
    run = run_envcheck("--only", "preload", env={"LD_PRELOAD": str(missing)})
    probe = run.probe("preload")
    assert probe["status"] == "warn" and run.code == 2
    assert probe["details"]["missing"] == [{"entry": str(missing), "why": "no such file"}]
    diagnosis = run.diagnosis("preload", "ld-preload-not-loaded")
    assert str(missing) in diagnosis["explanation"] and "unset LD_PRELOAD" in diagnosis["fix"][0]


def test_ld_preload_keeps_what_loads_and_names_what_does_not(tmp_path):
    # A real library of this interpreter's (one it has mapped), and a text file where a library should be.
    loaded = sorted(f for f in preload.mapped_files() if ".so" in os.path.basename(f))[0]
    text = tmp_path / "notes.so"
    text.write_text("not a library\n")
    run = run_envcheck("--only", "preload", env={"LD_PRELOAD": f"{loaded}:{text}"})
    probe = run.probe("preload")
    assert [m["entry"] for m in probe["details"]["missing"]] == [str(text)]
    assert probe["details"]["missing"][0]["why"] == "it is not an ELF shared library"
    assert f"export LD_PRELOAD='{loaded}'" in run.diagnosis("preload", "ld-preload-not-loaded")["fix"][0]


def test_ld_preload_that_loads_passes_and_unset_is_skipped(monkeypatch):
    loaded = sorted(f for f in preload.mapped_files() if ".so" in os.path.basename(f))[0]
    assert run_envcheck("--only", "preload", env={"LD_PRELOAD": loaded}).probe("preload")["status"] == "pass"
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert preload.run({})["status"] == "skip"


def test_kernels_says_which_kernels_training_runs_on_and_the_fix_when_an_operator_cannot_run(tmp_path):
    absent = {"DS2_NATIVE_LIBRARY": str(tmp_path / "absent.so")}
    # the seed preset: every kernel setting auto (the small preset sets train.lstm_kernel=builtin)
    for key, spec in kernels.OPERATORS.items():
        value = spec["value"]
        run = run_envcheck("--stage", "train", "--preset", "seed", "--only", "kernels", "--set", f"{key}={value}", env=absent)
        probe = run.probe("kernels")
        assert probe["status"] == "fail" and run.code != 0
        assert f"{key}={value}: no ds2 native library at" in probe["summary"] and "absent.so" in probe["summary"]
        fixes = " ".join(run.diagnosis("kernels", "native-operator-unusable")["fix"])
        assert key in fixes and "builtin" in fixes and "make train" in fixes

    run = run_envcheck("--stage", "train", "--preset", "seed", "--only", "kernels", env=absent)        # auto falls back, saying why
    assert run.probe("kernels")["status"] == "info"
    assert "train.conv_kernel=auto: MindSpore's kernel (no ds2 native library at" in run.probe("kernels")["summary"]
    every_builtin = [arg for key in kernels.OPERATORS for arg in ("--set", f"{key}=builtin")]
    run = run_envcheck("--stage", "train", "--preset", "seed", "--only", "kernels", *every_builtin, env=absent)
    assert run.probe("kernels")["status"] == "pass" and "as configured" in run.probe("kernels")["summary"]

    if os.environ.get("DS2_IMAGE_FLAVOR") == "cpu":                                    # the image's own library
        run = run_envcheck("--stage", "train", "--preset", "seed", "--only", "kernels")
        assert run.probe("kernels")["status"] == "pass"
        summary = run.probe("kernels")["summary"]
        assert all(f"ds2's {spec['what']}" in summary for spec in kernels.OPERATORS.values())
