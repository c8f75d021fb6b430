"""mindspore.run_check() on the configured device, judged by what it prints.

run_check() catches every exception, prints "MindSpore running check failed." and returns normally,
so a script that relies on it (or on its exit code) passes on a broken install. This probe reads its
output instead. On device CPU it is skipped: mindspore.train_step is the stronger check there, and the
run-check adds a MindSpore start-up to every run for nothing.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io

from envcheck import progress
from envcheck.probes import imports
from envcheck.settings import config_value


def run(settings: dict) -> dict:
    device = str(config_value(settings, "train.device", "CPU")).upper()
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
    progress.mark(f"mindspore.run_check() on {device}")
    mindspore.set_context(device_target=device)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        returned = mindspore.run_check()
    text = printed.getvalue()
    details = {"device": device, "returned": repr(returned), "printed": text[-2000:]}
    marker = text.lower().find("running check failed")
    if marker >= 0:
        reason = text[marker:].split("\n", 1)[-1].strip().splitlines() if "\n" in text[marker:] else []
        return {"status": "fail", "summary": f"run_check() on {device} printed 'MindSpore running check failed' "
                f"and returned {returned!r} normally" + (f": {reason[0][:200]}" if reason else ""),
                "details": details, "findings": ["run-check-failed"], "output": text}
    if "successfully" in text:
        return {"status": "pass", "summary": f"run_check() on {device}: {text.strip().splitlines()[-1][:160]}",
                "details": details, "output": text}
    return {"status": "warn", "summary": f"run_check() on {device} printed no verdict", "details": details,
            "output": text, "findings": ["run-check-no-verdict"]}
