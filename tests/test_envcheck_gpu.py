"""GPU driver, devices and MindSpore's GPU plugin libraries; mindspore.run_check(). This machine has no
GPU and no CUDA libraries (real states); drivers and GPUs it lacks are stood in for by nvidia-smi
scripts on PATH that print what the real tool prints."""
from __future__ import annotations

import glob
import os
import sys

import pytest

from envcheck import elf
from envcheck.probes import gpu_devices, gpu_libs
from tests.envcheck_helpers import run_envcheck, write_package, write_tool

DEVICE_GPU = "train:\n  device: GPU\n"


def gpu_config(tmp_path):
    path = tmp_path / "gpu.yaml"
    path.write_text(DEVICE_GPU)
    return str(path)


def fake_nvidia_smi(tmp_path, script: str) -> dict:
    tools = tmp_path / "bin"
    write_tool(tools, "nvidia-smi", script)
    return {"PATH": f"{tools}:{os.environ['PATH']}"}


def mindspore_plugin_dir():
    root = gpu_libs.mindspore_dir()
    return os.path.join(root, "lib", "plugin") if root else None


needs_gpu_plugin = pytest.mark.skipif(
    not (mindspore_plugin_dir() and glob.glob(os.path.join(mindspore_plugin_dir(), "libmindspore_gpu.so.*"))),
    reason="needs the mindspore wheel with its GPU plugins installed")
needs_no_gpu = pytest.mark.skipif(bool(glob.glob("/dev/nvidia[0-9]*")), reason="this machine has a GPU")


@needs_no_gpu
def test_no_gpu_on_a_cpu_run_is_information_not_a_problem():
    run = run_envcheck("--stage", "train", "--only", "gpu.devices", "--only", "gpu.libs")
    assert run.probe("gpu.devices")["status"] == "info"
    assert "not present" in run.probe("gpu.devices")["summary"]
    assert run.probe("gpu.libs")["status"] in ("info", "skip")
    assert run.code == 0


@needs_no_gpu
def test_device_gpu_without_a_gpu():
    run = run_envcheck("--stage", "train", "--only", "gpu.devices", "--set", "train.device=GPU",
                       env={"PATH": "/usr/bin:/bin"})
    assert run.probe("config")["details"]["preset"] == "small"
    assert run.probe("gpu.devices")["status"] == "fail"
    assert "gpu-not-visible" in run.rules("gpu.devices")
    assert "--gpus all" in " ".join(run.diagnosis("gpu.devices", "gpu-not-visible")["fix"])


def test_driver_library_mismatch(tmp_path):
    env = fake_nvidia_smi(tmp_path, 'echo "Failed to initialize NVML: Driver/library version mismatch"\nexit 18\n')
    run = run_envcheck("--stage", "train", "--only", "gpu.devices", "--config", gpu_config(tmp_path), env=env)
    probe = run.probe("gpu.devices")
    assert probe["status"] == "fail" and "Driver/library version mismatch" in probe["summary"]
    assert "nvidia-smi-failed" in run.rules("gpu.devices")


def test_driver_too_old_and_gpu_older_than_the_kernels(tmp_path):
    env = fake_nvidia_smi(tmp_path, 'echo "0, Tesla K80, 418.67, 11441, 3.7"\n')
    run = run_envcheck("--stage", "train", "--only", "gpu.devices", "--config", gpu_config(tmp_path), env=env)
    assert run.probe("gpu.devices")["status"] == "fail"
    rules = run.rules("gpu.devices")
    assert "gpu-driver-too-old" in rules
    if run.probe("gpu.devices")["details"]["kernel_architectures"]:
        assert "gpu-arch-unsupported" in rules


@needs_gpu_plugin
def test_gpu_newer_than_the_kernels_runs_through_ptx(tmp_path):
    env = fake_nvidia_smi(tmp_path, 'echo "0, NVIDIA H100 80GB HBM3, 550.54.15, 81559, 9.0"\n')
    run = run_envcheck("--stage", "train", "--only", "gpu.devices", "--config", gpu_config(tmp_path), env=env)
    probe = run.probe("gpu.devices")
    assert probe["status"] == "warn"
    assert probe["details"]["gpus"][0]["mindspore_kernels"] == "ptx-jit"
    assert "gpu-ptx-jit" in run.rules("gpu.devices")


def test_compute_capability_against_kernel_architectures():
    archs = {"sass": [60, 61, 70, 75, 80], "ptx": [60, 86]}
    assert gpu_devices.support("8.6", archs) == "native"   # sm_80 code runs on 8.x
    assert gpu_devices.support("7.0", archs) == "native"
    assert gpu_devices.support("9.0", archs) == "ptx-jit"  # no 9.x code; PTX for 8.6 compiles for it
    assert gpu_devices.support("5.2", archs) == "unsupported"


@needs_gpu_plugin
def test_elf_reader_on_the_real_gpu_plugin():
    plugin = sorted(glob.glob(os.path.join(mindspore_plugin_dir(), "libmindspore_gpu.so.*")))[-1]
    entries = elf.dynamic_entries(plugin)
    assert "libcudart.so.11.0" in entries["needed"] and "libcudnn.so.8" in entries["needed"]
    assert "$ORIGIN" in entries["rpath"]
    kernels = glob.glob(os.path.join(mindspore_plugin_dir(), "gpu", "libcuda_ops.so*"))
    archs = elf.cuda_architectures(kernels[0])
    assert 80 in archs["sass"] and archs["ptx"]


def test_elf_reader_on_the_interpreter():
    entries = elf.dynamic_entries(os.path.realpath(sys.executable))
    assert any(name.startswith("libc.so") for name in entries["needed"])
    with pytest.raises(elf.ELFError):
        elf.dynamic_entries(__file__)


@needs_gpu_plugin
def test_missing_cuda_libraries_with_the_packages_that_provide_them(tmp_path):
    run = run_envcheck("--stage", "train", "--only", "gpu.libs", "--config", gpu_config(tmp_path))
    probe = run.probe("gpu.libs")
    if probe["status"] == "pass":
        pytest.skip("this machine has the CUDA 11 libraries")
    assert probe["status"] == "fail"
    assert "libcublas.so.11" in probe["summary"]
    fix = " ".join(run.diagnosis("gpu.libs", "gpu-libs-missing")["fix"])
    for package in ("nvidia-cuda-runtime-cu11", "nvidia-cublas-cu11", "nvidia-cudnn-cu11<9", "nvidia-cufft-cu11",
                    "nvidia-curand-cu11", "nvidia-cusolver-cu11", "nvidia-cusparse-cu11"):
        assert package in fix


@needs_gpu_plugin
def test_cuda_library_in_a_wheel_directory_but_not_on_the_loader_path(tmp_path):
    lib = tmp_path / "site" / "nvidia" / "cublas" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcublas.so.11").write_bytes(b"")
    run = run_envcheck("--stage", "train", "--only", "gpu.libs", "--config", gpu_config(tmp_path),
                       pythonpath=[tmp_path / "site"])
    probe = run.probe("gpu.libs")
    if probe["status"] == "pass":
        pytest.skip("this machine has the CUDA 11 libraries")
    assert "gpu-libs-not-on-loader-path" in run.rules("gpu.libs")
    assert str(lib) in " ".join(run.diagnosis("gpu.libs", "gpu-libs-not-on-loader-path")["fix"])


def test_mindspore_build_without_gpu_plugin(tmp_path):
    write_package(tmp_path, "mindspore", "", files={"lib/plugin/README": "no plugins in this build\n"})
    run = run_envcheck("--stage", "train", "--only", "gpu.libs", "--config", gpu_config(tmp_path),
                       pythonpath=[tmp_path])
    assert run.probe("gpu.libs")["status"] == "fail"
    assert "gpu-plugin-missing" in run.rules("gpu.libs")


def test_run_check_failure_is_caught_although_it_returns_normally(tmp_path):
    # The shape of mindspore.run_check(): catch everything, print, return None.
    write_package(tmp_path, "mindspore", """
        def set_context(**kwargs):
            pass
        def run_check():
            try:
                raise RuntimeError("Unsupported device target GPU. This process only supports one of the ['CPU'].")
            except Exception as e:
                print("MindSpore running check failed.")
                print(str(e))
    """)
    run = run_envcheck("--stage", "train", "--only", "mindspore.run_check", "--config", gpu_config(tmp_path),
                       pythonpath=[tmp_path])
    probe = run.probe("mindspore.run_check")
    assert probe["status"] == "fail"
    assert "returned None normally" in probe["summary"] and "Unsupported device target GPU" in probe["summary"]
    assert "mindspore-run-check-lies" in run.rules("mindspore.run_check")


def test_run_check_is_skipped_on_cpu():
    run = run_envcheck("--stage", "train", "--only", "mindspore.run_check")
    assert run.probe("mindspore.run_check")["status"] == "skip"


def test_device_that_cannot_be_selected(tmp_path):
    write_package(tmp_path, "mindspore", """
        def set_device(name):
            raise RuntimeError("Unsupported device target " + name + ". This process only supports one of the ['CPU'].")
        def run_check():
            pass
    """)
    run = run_envcheck("--stage", "train", "--only", "mindspore.run_check", "--config", gpu_config(tmp_path),
                       pythonpath=[tmp_path])
    assert run.probe("mindspore.run_check")["status"] == "fail"
    assert "mindspore-device-unavailable" in run.rules("mindspore.run_check")
