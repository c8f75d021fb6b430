"""What the probes are told about the run: the stage and ds2's resolved configuration.

The configuration comes from ds2.config (preset, optional YAML file, --set overrides), the same code
the stages use, so envcheck checks the window, model size, batch, device and directories the job will
really use. It is read in envcheck's own process: ds2.config needs only the standard library (and
PyYAML for a --config file), so a broken environment under test does not stop it.

Probes receive settings = {"stage": ..., "config": <ds2 Config as a dict> or None, ...} and read
config keys with config_value() (or configured(), the typed Config, where ds2 is importable).
"checkpoint" is the absolute path given with --checkpoint, or None.
"""
from __future__ import annotations

import os
import time
import traceback
from typing import Any, Optional, Sequence, Tuple

from envcheck import shadows
from envcheck.result import FAIL, INFO, PASS, ProbeResult

TITLE = "ds2 configuration used by the checks"


def load(stage: Optional[str], preset: str, config_path: Optional[str],
         overrides: Sequence[str] = (), checkpoint: Optional[str] = None) -> Tuple[dict, ProbeResult]:
    """Settings for the probes, and a result line saying where the configuration came from."""
    start = time.monotonic()
    settings = {"stage": stage, "preset": preset, "config_path": config_path, "overrides": list(overrides),
                "config": None, "checkpoint": os.path.abspath(checkpoint) if checkpoint is not None else None}
    try:
        from ds2 import config as ds2_config
    except Exception as exc:  # not importable, or broken: the checks still run, with defaults
        status = FAIL if config_path or overrides else INFO
        summary = (f"cannot apply --config/--set: ds2.config is not importable ({type(exc).__name__}: {exc})"
                   if config_path or overrides else
                   f"ds2.config is not importable ({type(exc).__name__}: {exc}); checks use defaults "
                   "and no model-size estimate")
        return settings, ProbeResult("config", TITLE, status, summary, duration_s=time.monotonic() - start,
                                     findings=["config-unreadable"] if config_path or overrides else [])
    try:
        cfg = ds2_config.load_config(preset, config_path, list(overrides))
    except ds2_config.ConfigError as exc:
        return settings, ProbeResult("config", TITLE, FAIL, f"cannot load the configuration: {exc}",
                                     duration_s=time.monotonic() - start, findings=["config-unreadable"])
    except Exception as exc:  # PyYAML missing for a --config file, or a file on PYTHONPATH shadowing it
        shadowed = shadows.in_traceback(traceback.format_exc())
        because = "".join(f"; {s.describe()}: {s.fix()}" for s in shadowed)
        return settings, ProbeResult("config", TITLE, FAIL, f"cannot load the configuration: {type(exc).__name__}: "
                                     f"{exc}{because}", duration_s=time.monotonic() - start,
                                     findings=["config-unreadable"])
    settings["config"] = ds2_config.to_dict(cfg)
    source = f"preset {preset}" + (f" + {config_path}" if config_path else "") + "".join(f" + {o}" for o in overrides)
    return settings, ProbeResult("config", TITLE, PASS, f"{source}: device {cfg.train.device}, "
                                 f"data {cfg.data.source} in {cfg.data.data_dir}, runs in {cfg.run_dir}",
                                 details={"preset": preset, "config_path": config_path},
                                 duration_s=time.monotonic() - start)


def config_value(settings: dict, dotted: str, default: Any = None) -> Any:
    """settings' ds2 config value at 'section.key' (e.g. 'features.window'), or `default`."""
    value: Any = settings.get("config") or {}
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


def configured_device(settings: dict) -> str:
    """The configured training/eval device, CPU or GPU (ds2.config checked and normalised it)."""
    return config_value(settings, "train.device", "CPU")


def configured(settings: dict):
    """The ds2 Config the stage will run with, or None when the configuration did not load.

    For probes that compute with it (memory, disk): they run in a subprocess where envcheck/child.py
    has made ds2 importable.
    """
    from ds2.config import from_dict

    return from_dict(settings["config"]) if settings.get("config") else None
