"""Helpers for the envcheck tests: run `python -m envcheck --json` and build broken environments.

Broken states are made for real: package directories on a temporary PYTHONPATH whose import does the
broken thing (crash, hang, raise numpy's own error messages), *.dist-info directories with the
metadata of other versions, fake command-line tools on PATH, bare virtual environments.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class Run:
    code: int
    report: Optional[dict]
    stdout: str
    stderr: str

    def probe(self, probe_id: str) -> dict:
        for probe in self.report["probes"]:
            if probe["id"] == probe_id:
                return probe
        raise KeyError(f"no probe {probe_id!r} in {[p['id'] for p in self.report['probes']]}")

    def rules(self, probe_id: str) -> List[str]:
        return [d["rule_id"] for d in self.probe(probe_id)["diagnosis"]]

    def diagnosis(self, probe_id: str, rule_id: str) -> dict:
        """The diagnosis rule_id gave probe_id's result; fails the test when that rule did not fire."""
        for d in self.probe(probe_id)["diagnosis"]:
            if d["rule_id"] == rule_id:
                return d
        raise AssertionError(f"rule {rule_id} did not fire for {probe_id}; it got {self.rules(probe_id)}")


def run_envcheck(*args: str, env: Optional[Dict[str, str]] = None, pythonpath: Iterable[Path] = (),
                 python: Optional[str] = None, as_json: bool = True, timeout: float = 600,
                 prefix: Iterable[str] = (), cwd: Optional[Path] = None) -> Run:
    """Run envcheck in a fresh process, from the repository root or `cwd` (`prefix` goes before the
    interpreter, e.g. an unshare command). From another directory `python -m envcheck` finds envcheck where
    the interpreter has it installed (the image's ds2.pth)."""
    environment = dict(os.environ)
    environment.update(env or {})
    paths = [str(p) for p in pythonpath]
    if paths:
        environment["PYTHONPATH"] = os.pathsep.join(paths + [environment.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [*prefix, python or PYTHON, "-m", "envcheck", *args] + (["--json"] if as_json else [])
    proc = subprocess.run(command, cwd=cwd or REPO, env=environment, capture_output=True, text=True,
                          timeout=timeout)
    report = json.loads(proc.stdout) if as_json and proc.stdout.lstrip().startswith("{") else None
    return Run(proc.returncode, report, proc.stdout, proc.stderr)


def write_package(root: Path, name: str, source: str, files: Optional[Dict[str, str]] = None) -> Path:
    """A package `name` under root whose __init__.py is `source` (plus other files, relative paths)."""
    package = root / name
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(textwrap.dedent(source))
    for relative, text in (files or {}).items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_text(textwrap.dedent(text))
    return package


def write_dist(root: Path, name: str, version: str, requires: Iterable[str] = (), files: Iterable[str] = ()) -> Path:
    """An installed distribution's metadata (NAME-VERSION.dist-info) under root."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    return info


def write_tool(directory: Path, name: str, script: str) -> Path:
    """An executable shell script `name` in directory (a fake nvidia-smi, docker, ...)."""
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / name
    tool.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return tool


def bare_venv(path: Path) -> str:
    """A virtual environment with nothing installed (no pip, numpy, packaging); returns its python."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    return str(path / "bin" / "python")
