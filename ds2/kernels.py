"""Which kernels training runs (train.lstm_kernel, train.conv_kernel, train.ctc_kernel,
train.batch_norm_kernel, train.mask_kernel), and where ds2's own operators' library is.

    chosen_kernel("train.lstm_kernel", cfg.train.lstm_kernel, cfg.train.device)   # "builtin" or "onednn"

builtin is MindSpore's kernel; the other value of each setting is ds2's own operator (ds2.native_ops),
built from ds2/native/*.cc into one library in the CPU image: onednn for the LSTM and the convolutions
(oneDNN's primitives), native for the others (plain C++). auto takes the operator on CPU where the
library is. Standard library only: ds2.memory, and through it envcheck's memory check, counts the chosen
kernels' memory.
"""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import Dict, FrozenSet, Optional, Tuple

from ds2.errors import UserError, first_line

LIBRARY_VARIABLE = "DS2_NATIVE_LIBRARY"
DEFAULT_LIBRARY = "/opt/ds2-native/libds2_native.so"
BUILTIN, AUTO = "builtin", "auto"

# Each setting: the value that names ds2's operator, what the operator is, and what MindSpore calls in
# the library for it (the operators and their shape functions).
OPERATORS: Dict[str, Dict] = {
    "train.lstm_kernel": {"value": "onednn", "what": "oneDNN LSTM operator",
                          "exports": ("lstm_forward", "lstm_backward", "lstm_forwardInferShape",
                                      "lstm_backwardInferShape")},
    "train.conv_kernel": {"value": "onednn", "what": "oneDNN convolution operator",
                          "exports": ("conv_forward", "conv_backward_data", "conv_backward_weights",
                                      "conv_forwardInferShape", "conv_backward_dataInferShape",
                                      "conv_backward_weightsInferShape")},
    "train.ctc_kernel": {"value": "native", "what": "CTC loss operator",
                         "exports": ("ctc_loss_forward", "ctc_loss_forwardInferShape")},
    "train.batch_norm_kernel": {"value": "native", "what": "BatchNorm operator",
                                "exports": ("batch_norm_forward", "batch_norm_backward",
                                            "batch_norm_forwardInferShape", "batch_norm_backwardInferShape")},
    "train.mask_kernel": {"value": "native", "what": "padding mask operator",
                          "exports": ("mask_time_last", "mask_time_first", "mask_time_lastInferShape",
                                      "mask_time_firstInferShape")},
}


def choices(setting_key: str) -> tuple:
    """The values a kernel setting takes (ds2.config declares them)."""
    return (AUTO, BUILTIN, OPERATORS[setting_key]["value"])


def library_path() -> Path:
    """Where the operators' library is: $DS2_NATIVE_LIBRARY, else the CPU image's."""
    return Path(os.environ.get(LIBRARY_VARIABLE) or DEFAULT_LIBRARY)


def missing_reason(setting_key: str) -> Optional[str]:
    """Why the operator of `setting_key` cannot be used here, or None when it can."""
    path = library_path()
    if not path.is_file():
        return f"no ds2 native library at {path}"
    problem, exported = _inspect(str(path))
    if problem:
        return problem
    missing = [name for name in OPERATORS[setting_key]["exports"] if name not in exported]
    if missing:
        return f"the ds2 native library at {path} lacks {', '.join(missing)} (an older build)"
    return None


@functools.lru_cache(maxsize=None)
def _inspect(path: str) -> Tuple[Optional[str], FrozenSet[str]]:
    """Whether the library loads (oneDNN beside it, the C++ runtime): the reason it does not, or None;
    and which of the functions MindSpore calls it exports."""
    try:
        library = ctypes.CDLL(path)
    except OSError as exc:
        return f"the ds2 native library at {path} does not load ({first_line(exc)})", frozenset()
    return None, frozenset(name for spec in OPERATORS.values() for name in spec["exports"] if hasattr(library, name))


def chosen_kernel(setting_key: str, setting: str, device: str) -> str:
    """builtin or the operator's value for `setting_key` = `setting` on `device`: auto takes the operator on
    CPU when the library has it. An explicit operator that cannot run is a UserError naming the fix."""
    operator = OPERATORS[setting_key]["value"]
    if setting == BUILTIN:
        return BUILTIN
    if device != "CPU":
        if setting == AUTO:
            return BUILTIN
        raise UserError(f"{setting_key}={operator} runs on the CPU only (train.device is {device}); "
                        f"set {setting_key}=auto or builtin")
    reason = missing_reason(setting_key)
    if reason is None:
        return operator
    if setting == AUTO:
        return BUILTIN
    raise UserError(f"{setting_key}={operator}: {reason}; run in the CPU image (make image-cpu) or set "
                    f"{LIBRARY_VARIABLE} to a build of ds2/native (docker/build-native.sh), "
                    f"or set {setting_key}=builtin")


def trains_on_operator(setting_key: str, setting: str, device: str) -> bool:
    """Whether training will run on the operator: chosen_kernel without its error (an explicit operator
    that cannot run stops training with that error before any memory is used)."""
    try:
        return chosen_kernel(setting_key, setting, device) != BUILTIN
    except UserError:
        return False
