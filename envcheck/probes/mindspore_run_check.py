"""mindspore.run_check() on the configured device, judged by what it prints.

run_check() catches every exception, prints "MindSpore running check failed." and returns normally,
so a script that relies on it (or on its exit code) passes on a broken install. And when the requested
device cannot be selected (MindSpore 2.7 refuses GPU without a loadable GPU plugin), run_check() runs
on the CPU and reports success there. This probe reads what it printed, and on which platform. On device CPU it is skipped: mindspore.train_step is the stronger check there, and the
run-check adds a MindSpore start-up to every run for nothing.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import re

from envcheck import progress
from envcheck.probes import imports
from envcheck.settings import configured_device


def run(settings: dict) -> dict:
    device = configured_device(settings)
    if device == "CPU":
        return {"status": "skip", "summary": "device is CPU: mindspore.train_step checks MindSpore on CPU",
                "details": {"device": device}}
    if importlib.util.find_spec("mindspore") is None:
        return {"status": "fail", "summary": "mindspore is not installed", "findings": ["module-missing"],
                "details": {"missing_module": "mindspore"}}
    progress.mark("import mindspore")
    try:
        import mindspore
    except BaseException as exc:
        return imports.import_failure("mindspore", exc)
    progress.mark(f"select device {device}")
    device_error = None
    try:
        if hasattr(mindspore, "set_device"):
            mindspore.set_device(device)
        else:
            mindspore.set_context(device_target=device)
    except Exception as exc:  # MindSpore refuses a device it cannot load; run_check() then runs on CPU
        device_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    progress.mark(f"mindspore.run_check() on {device}")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        returned = mindspore.run_check()
    text = printed.getvalue()
    details = {"device": device, "device_error": device_error, "returned": repr(returned), "printed": text[-2000:]}
    platform = re.search(r"installed on platform \[(\w+)\] successfully", text)
    failed = re.search(r"MindSpore running check failed\.?\s*(.*)", text)
    if failed:
        return {"status": "fail", "summary": f"run_check() on {device} printed 'MindSpore running check failed' and "
                f"returned {returned!r} normally: {failed.group(1).strip()[:200]}", "details": details,
                "findings": ["run-check-failed"], "output": text}
    if platform and platform.group(1).upper() != device:
        return {"status": "fail", "summary": f"run_check() reports success on [{platform.group(1)}] and returns "
                f"{returned!r}, but device {device} is unusable: {device_error or 'not selected'}",
                "details": details, "findings": ["run-check-wrong-device"], "output": text}
    if device_error:
        return {"status": "fail", "summary": f"MindSpore cannot use device {device}: {device_error}",
                "details": details, "findings": ["device-unavailable"], "output": text}
    if platform:
        return {"status": "pass", "summary": f"run_check() on {device}: multiplication correct on [{platform.group(1)}]",
                "details": details, "output": text}
    return {"status": "warn", "summary": f"run_check() on {device} printed no verdict", "details": details,
            "output": text, "findings": ["run-check-no-verdict"]}
