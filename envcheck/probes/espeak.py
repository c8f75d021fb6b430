"""espeak-ng, which renders the embedded synthetic corpus (data.source 'synth')."""
from __future__ import annotations

import re
import shutil
import subprocess

from envcheck.settings import config_value


def run(settings: dict) -> dict:
    source = config_value(settings, "data.source", "synth")
    needed = source == "synth"
    path = shutil.which("espeak-ng")
    details = {"data_source": source, "path": path}
    if path is None:
        if not needed:
            return {"status": "info", "summary": f"espeak-ng not found (not needed: data.source is {source!r})",
                    "details": details}
        return {"status": "fail", "summary": "espeak-ng is not on PATH; the synthetic corpus cannot be rendered",
                "details": details, "findings": ["espeak-missing"]}
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        wav = subprocess.run([path, "--stdout", "test"], capture_output=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        details["error"] = f"{type(exc).__name__}: {exc}"
        return {"status": "fail" if needed else "warn", "summary": f"espeak-ng at {path} does not run: {exc}",
                "details": details, "findings": ["espeak-broken"]}
    details["version"] = version
    details["wav_bytes"] = len(wav)
    if not wav.startswith(b"RIFF") or len(wav) < 1000:
        return {"status": "fail" if needed else "warn",
                "summary": f"espeak-ng at {path} produced no audio ({len(wav)} bytes)",
                "details": details, "findings": ["espeak-broken"]}
    number = re.search(r"\d+(\.\d+)+", version)
    return {"status": "pass", "summary": f"espeak-ng {number.group(0) if number else version[:40]}: rendered 'test' "
            f"({len(wav)} bytes of WAV)", "details": details}
