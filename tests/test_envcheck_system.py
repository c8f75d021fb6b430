"""Feature settings, espeak-ng, memory, /dev/shm, disk, CPU features and threads, in real broken states:
configs that ask for too much, a 64 MiB /dev/shm and a CPU without AVX2 in a private mount namespace,
a PATH without espeak-ng, an unwritable directory."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from envcheck import cgroup
from envcheck.probes import cpu_features
from tests.test_envcheck_support import PYTHON, run_envcheck


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


@needs_mount_namespace
def test_docker_default_shm_size_is_too_small():
    mount_small_shm = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$@"', "sh"]
    run = run_envcheck("--stage", "train", "--only", "shm", prefix=mount_small_shm)
    probe = run.probe("shm")
    assert probe["status"] == "warn" and probe["details"]["size_mib"] == 64
    assert "shm-too-small" in run.rules("shm")
    assert run.code == 2  # warnings only


def test_memory_limit_below_the_model_estimate(tmp_path):
    config = write_config(tmp_path / "huge.yaml",
                          "model:\n  rnn_hidden: 8192\n  rnn_layers: 12\ntrain:\n  max_batch_seconds: 4000\n")
    run = run_envcheck("--stage", "train", "--only", "memory", "--config", config)
    probe = run.probe("memory")
    assert probe["status"] == "fail"
    assert probe["details"]["estimate"]["total_bytes"] > probe["details"]["usable_bytes"]
    assert "memory-below-estimate" in run.rules("memory")


def test_memory_available_now_below_the_estimate(tmp_path):
    from ds2.config import load_config, to_dict
    from envcheck.probes.memory import estimate
    # (Stage eval: for training, a shortage of available memory makes ds2 train pick smaller batch
    # settings instead; see the fit tests below.) Another process holds 2 GiB, so that less memory is available than the limit allows; the batch
    # length is then chosen so that the estimate falls between the two.
    holder = subprocess.Popen([PYTHON, "-c", "import time; held = b'x' * (2 << 30); print('held', flush=True); "
                               "time.sleep(300)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        facts = run_envcheck("--stage", "eval", "--only", "memory").probe("memory")["details"]
        low, high = facts["available_bytes"], facts["usable_bytes"]
        if high - low < 1024 ** 3:
            pytest.skip("usable and available memory are too close to aim between them")
        config = to_dict(load_config("seed"))
        seconds_lo, seconds_hi = 1.0, 100000.0
        for _ in range(60):  # bisect the batch length: the estimate grows with it
            middle = (seconds_lo + seconds_hi) / 2
            config["train"]["max_batch_seconds"] = middle
            if estimate({"stage": "eval", "config": config}, training=False)["total_bytes"] < (low + high) / 2:
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


def test_preset_estimates_are_in_the_documented_range():
    from ds2.config import load_config, to_dict
    from envcheck.probes.memory import estimate
    seed = estimate({"stage": "train", "config": to_dict(load_config("seed"))}, training=True)
    small = estimate({"stage": "train", "config": to_dict(load_config("small"))}, training=True)
    assert 80e6 < seed["parameters"] < 95e6  # 5 x BiLSTM 1024 over 32 x 41 conv features
    assert seed["graphs"] == 17 and 250 * 1024 ** 3 < seed["total_bytes"] < 320 * 1024 ** 3
    assert 6 * 1024 ** 3 < small["total_bytes"] < 8 * 1024 ** 3


def test_fit_takes_buckets_away_first_then_batch_seconds():
    from ds2.config import load_config, to_dict
    from envcheck.probes.memory import HEADROOM, MIN_BUCKETS, estimate, fit
    seed = {"config": to_dict(load_config("seed"))}
    configured = estimate(seed, training=True)
    assert fit(seed, int(configured["total_bytes"] / HEADROOM) + 1) == configured   # fits: unchanged
    fewer = estimate(seed, training=True, num_buckets=8)
    chosen = fit(seed, int(fewer["total_bytes"] / HEADROOM) + 1)
    assert (chosen["num_buckets"], chosen["batch_seconds"]) == (8, 160.0)         # buckets go first
    at_24 = fit(seed, 24 * 1024 ** 3)
    assert at_24["num_buckets"] == MIN_BUCKETS and 10 <= at_24["batch_seconds"] < 160
    assert at_24["total_bytes"] <= 24 * 1024 ** 3 * HEADROOM
    assert estimate(seed, True, MIN_BUCKETS, at_24["batch_seconds"] + 1)["total_bytes"] > 24 * 1024 ** 3 * HEADROOM
    assert fit(seed, 2 * 1024 ** 3) is None                                          # nothing fits


def test_memory_probe_says_which_settings_train_will_use(tmp_path):
    run = run_envcheck("--stage", "train", "--preset", "seed", "--only", "memory")
    probe = run.probe("memory")
    if probe["details"]["usable_bytes"] > 300 * 1024 ** 3:
        pytest.skip("this machine holds the seed preset's configured batch settings")
    assert probe["status"] == "warn" and "batch-reduced-to-fit" in run.rules("memory")
    assert "ds2 train will use train.num_buckets=" in probe["summary"]


def test_cgroup_v2_memory_and_cpu_limits(tmp_path):
    root = tmp_path / "cgroup"
    (root / "docker" / "abc").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "docker" / "memory.max").write_text("4294967296\n")
    (root / "docker" / "abc" / "memory.max").write_text("max\n")
    (root / "docker" / "abc" / "cpu.max").write_text("150000 100000\n")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("0::/docker/abc\n")
    limit, source = cgroup.memory_limit(str(root), str(self_cgroup))
    assert limit == 4 * 1024 ** 3 and source.endswith("docker/memory.max")  # the parent's limit applies
    quota, _ = cgroup.cpu_quota(str(root), str(self_cgroup))
    assert quota == 1.5


def test_cgroup_v1_memory_and_cpu_limits(tmp_path):
    root = tmp_path / "cgroup"
    (root / "memory").mkdir(parents=True)
    (root / "cpu,cpuacct").mkdir()
    (root / "memory" / "memory.limit_in_bytes").write_text("2147483648\n")
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("200000\n")
    (root / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cgroup.memory_limit(str(root), str(self_cgroup))[0] == 2 * 1024 ** 3
    assert cgroup.cpu_quota(str(root), str(self_cgroup))[0] == 2.0
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "unlimited"
    assert cgroup.memory_limit(str(root), str(self_cgroup))[0] is None


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
