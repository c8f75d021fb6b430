"""Which kernels training will run on (train.lstm_kernel, train.conv_kernel, train.ctc_kernel), and
whether ds2's own operators load.

auto takes ds2's operator on CPU where its library loads (the CPU image builds it), and MindSpore's
kernel elsewhere; an explicit operator that cannot run stops `ds2 train` before the first step, which
this check says first, with the fix.
"""
from __future__ import annotations

from envcheck.settings import config_value, configured_device


def run(settings: dict) -> dict:
    from ds2 import kernels
    from ds2.errors import UserError

    device = configured_device(settings)
    library = str(kernels.library_path())
    details = {"device": device, "library": library, "settings": {}}
    parts, problems, unusable_settings, fell_back = [], [], [], False
    for key, spec in kernels.OPERATORS.items():
        setting = config_value(settings, key, kernels.AUTO)
        unusable = kernels.missing_reason(key)
        entry = {"setting": setting, "library_problem": unusable}
        details["settings"][key] = entry
        try:
            chosen = kernels.chosen_kernel(key, setting, device)
        except UserError as exc:
            problems.append(str(exc))
            unusable_settings.append(key)
            continue
        entry["kernel"] = chosen
        if chosen != kernels.BUILTIN:
            parts.append(f"{key}={setting}: ds2's {spec['what']}")
            continue
        if setting == kernels.BUILTIN:
            why = "as configured"
        elif device != "CPU":
            why = f"ds2's operator runs on CPU only, the device is {device}"
        else:
            why = unusable
            fell_back = True
        parts.append(f"{key}={setting}: MindSpore's kernel ({why})")
    if problems:
        details["problem"] = "; ".join(problems)
        details["unusable_settings"] = " and ".join(unusable_settings)
        return {"status": "fail", "summary": details["problem"], "details": details,
                "findings": ["native-operator-unusable"]}
    return {"status": "info" if fell_back else "pass", "summary": f"{'; '.join(parts)} (library {library})",
            "details": details}
