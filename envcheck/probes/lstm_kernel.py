"""Which LSTM kernel training will run on (train.lstm_kernel), and whether ds2's own operator loads.

auto takes ds2's oneDNN operator on CPU where its library loads (the CPU image builds it), and
MindSpore's kernel elsewhere; an explicit onednn that cannot run stops `ds2 train` before the first
step, which this check says first, with the fix.
"""
from __future__ import annotations

from envcheck.settings import config_value, configured_device


def run(settings: dict) -> dict:
    from ds2 import lstm_kernel
    from ds2.errors import UserError

    setting = config_value(settings, "train.lstm_kernel", "auto")
    device = configured_device(settings)
    library = str(lstm_kernel.library_path())
    unusable = lstm_kernel.missing_reason()
    details = {"setting": setting, "device": device, "library": library, "library_problem": unusable}
    try:
        chosen = lstm_kernel.chosen_kernel(setting, device)
    except UserError as exc:
        details["problem"] = str(exc)
        return {"status": "fail", "summary": str(exc), "details": details, "findings": ["lstm-operator-unusable"]}
    details["kernel"] = chosen
    if chosen == "onednn":
        return {"status": "pass", "summary": f"train.lstm_kernel={setting}: ds2's oneDNN LSTM operator ({library})",
                "details": details}
    if setting == "builtin":
        why = "as configured"
    elif device != "CPU":
        why = f"the operator runs on CPU only, the device is {device}"
    else:
        why = unusable
    return {"status": "pass" if setting == "builtin" or device != "CPU" else "info",
            "summary": f"train.lstm_kernel={setting}: MindSpore's LSTM kernel ({why})", "details": details}
