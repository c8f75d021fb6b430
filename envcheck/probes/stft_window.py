"""The STFT window named in the feature settings exists in SciPy (librosa gets windows from SciPy)."""
from __future__ import annotations

import importlib.util

from envcheck.settings import config_value

# Window names SciPy removed, and the name to use instead (scipy#15881: 'hanning' -> 'hann').
REMOVED_ALIASES = {"hanning": "hann"}


def run(settings: dict) -> dict:
    window = config_value(settings, "features.window")
    length = int(config_value(settings, "features.win_length", 320))
    source = "configured" if window is not None else "default (no ds2 config)"
    window = window or "hann"
    details = {"window": window, "win_length": length, "source": source}
    if importlib.util.find_spec("scipy") is None:
        return {"status": "skip", "summary": "scipy is not installed (see import.scipy)", "details": details}
    import scipy
    from scipy.signal.windows import get_window
    details["scipy"] = scipy.__version__
    try:
        values = get_window(window, length, fftbins=True)
    except Exception as exc:
        details["error"] = f"{type(exc).__name__}: {exc}"
        if window in REMOVED_ALIASES:
            details["replacement"] = REMOVED_ALIASES[window]
            return {"status": "warn", "summary": f"{source} window {window!r} was removed from SciPy "
                    f"{scipy.__version__}; ds2 maps it to {REMOVED_ALIASES[window]!r} with a warning",
                    "details": details, "findings": ["window-removed-alias"]}
        return {"status": "fail", "summary": f"SciPy {scipy.__version__} rejects the {source} window {window!r}: "
                f"{type(exc).__name__}: {exc}", "details": details, "findings": ["window-unknown"]}
    return {"status": "pass", "summary": f"{source} window {window!r} ({length} samples, sum {values.sum():.1f}) "
            f"from SciPy {scipy.__version__}", "details": details}
