"""Which LSTM kernel training runs (train.lstm_kernel), and where ds2's own operator's library is.

    chosen_kernel(cfg.train.lstm_kernel, cfg.train.device)   # "builtin" or "onednn"

builtin is MindSpore's fused kernel (ops.LSTM); onednn is ds2's own operator (ds2.onednn_lstm, built
from ds2/native/onednn_lstm.cc in the CPU image). auto takes the operator on CPU where the library is.
Standard library only: ds2.memory, and through it envcheck's memory check, counts the chosen
kernel's memory.
"""
from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import Optional

from ds2.errors import UserError, first_line

LIBRARY_VARIABLE = "DS2_ONEDNN_LSTM"
DEFAULT_LIBRARY = "/opt/ds2-native/libds2_onednn_lstm.so"


def library_path() -> Path:
    """Where the operator's library is: $DS2_ONEDNN_LSTM, else the CPU image's."""
    return Path(os.environ.get(LIBRARY_VARIABLE) or DEFAULT_LIBRARY)


# What MindSpore calls in the library: the two operators and their shape functions.
EXPORTS = ("lstm_forward", "lstm_backward", "lstm_forwardInferShape", "lstm_backwardInferShape")


def missing_reason() -> Optional[str]:
    """Why the library cannot be used here, or None when it can."""
    path = library_path()
    if not path.is_file():
        return f"no oneDNN LSTM library at {path}"
    return _load_problem(str(path))


@functools.lru_cache(maxsize=None)
def _load_problem(path: str) -> Optional[str]:
    """Whether the library loads (oneDNN beside it, the C++ runtime) and exports what MindSpore calls."""
    try:
        library = ctypes.CDLL(path)
    except OSError as exc:
        return f"the oneDNN LSTM library at {path} does not load ({first_line(exc)})"
    missing = [name for name in EXPORTS if not hasattr(library, name)]
    if missing:
        return f"the oneDNN LSTM library at {path} lacks {', '.join(missing)} (an older build)"
    return None


def chosen_kernel(setting: str, device: str) -> str:
    """builtin or onednn for train.lstm_kernel = `setting` on `device`: auto takes onednn on CPU when the
    library is there. An explicit onednn that cannot run is a UserError naming the fix."""
    if setting == "builtin":
        return "builtin"
    if device != "CPU":
        if setting == "auto":
            return "builtin"
        raise UserError(f"train.lstm_kernel=onednn runs on the CPU only (train.device is {device}); "
                        "set train.lstm_kernel=auto or builtin")
    reason = missing_reason()
    if reason is None:
        return "onednn"
    if setting == "auto":
        return "builtin"
    raise UserError(f"train.lstm_kernel=onednn: {reason}; run in the CPU image (make image-cpu) or set "
                    f"{LIBRARY_VARIABLE} to a build of ds2/native/onednn_lstm.cc (docker/build-lstm-kernel.sh), "
                    "or set train.lstm_kernel=builtin")


def trains_on_operator(setting: str, device: str) -> bool:
    """Whether training will run on the operator: chosen_kernel without its error (an explicit onednn
    that cannot run stops training with that error before any memory is used)."""
    try:
        return chosen_kernel(setting, device) == "onednn"
    except UserError:
        return False
