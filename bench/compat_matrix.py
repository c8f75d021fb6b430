"""Measure which mindspore x numpy x numba combinations install and work: envcheck/data/compat-matrix.json.

    python bench/compat_matrix.py --python python3.9 --uv .venv-host/bin/uv [--cache DIR]
                                  [--mindspore V ...] [--numpy V ...] [--out envcheck/data/compat-matrix.json]

(`make compat-matrix` runs this, then draws the heat map with bench/compat_heatmap.py.)

Axes: every mindspore release with a wheel for the given interpreter (CPython 3.9) on the index; numpy
NUMPY_RELEASES and the newest 2.x with such a wheel; numba 0.53.1 (the pinned one) and the newest numba
the resolver installs beside each numpy. torch 1.7.1 and librosa 0.9.2 are installed beside them where
the resolver accepts them. Two more records (with "set") are evidence, not lookups: cpu.lock measures
docker/requirements/cpu.lock itself, newest-setuptools the pinned three with the newest setuptools
(82 removed pkg_resources, which numba 0.53.1 and librosa 0.9.2 import).

For each combination, one at a time: a fresh venv (uv, hard links from one shared wheel cache outside
the repository), made by `python3.9 -m venv` as a pip user makes it (ensurepip's pip 23.0.1 and
setuptools 58.1.0), `uv pip install` of the pins (the rest as the resolver chooses them, as a user's
`pip install` would), then `python -m envcheck --python VENV/bin/python --only PROBES --json`, then the
venv is deleted. A combination the resolver refuses is recorded as refused, with pip's own message
(pip's resolver is asked too: it is what a user meets first). The JSON is rewritten after every
combination, so an interrupted run resumes where it stopped; `--refresh` measures everything again.
Prints one line per combination, and the pass/warn/fail/refused counts by mindspore x numpy at the end.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from envcheck import compat, versions  # noqa: E402  (stdlib-only, shared with the report's lookup)

NUMPY_RELEASES = ("1.20.0", "1.21.6", "1.22.4", "1.23.5", "1.24.4", "1.26.4")
PINNED_NUMBA = "0.53.1"
EXTRAS = ("librosa==0.9.2", "torch==1.7.1")      # ds2 needs librosa; torch is optional
LOCK = REPO / "docker" / "requirements" / "cpu.lock"
PROBES = ("import.numpy", "import.scipy", "import.soundfile", "import.numba", "import.librosa", "import.torch",
          "import.mindspore", "import.together*", "numpy.abi", "mindspore.train_step")
INSTALL_TIMEOUT_S = 1800      # a cold cache downloads a 750 MB mindspore wheel
ENVCHECK_TIMEOUT_S = 900


def log(message: str) -> None:
    print(message, flush=True)


def run(command: List[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
                break
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
        memory = f"{kib / 1024 ** 2:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "? GiB"
    return f"{cpu}, {os.cpu_count()} cores, {memory}, {platform.system()} {platform.machine()}"


# --- the axes --------------------------------------------------------------------------------------

def index_versions(python: str, project: str) -> List[str]:
    """Versions of `project` with a wheel `python` can install, newest first (pip index versions)."""
    proc = run([python, "-m", "pip", "index", "versions", project, "--only-binary=:all:"], timeout=300)
    m = re.search(r"^Available versions: (.*)$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"compat-matrix: cannot list {project} releases with pip index versions: "
                         f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return [v.strip() for v in m.group(1).split(",")]


def newest_numba(uv: str, python: str, numpy: str) -> str:
    """The numba release the resolver picks beside numpy==`numpy` (it honours numba's numpy bounds)."""
    proc = run([uv, "pip", "compile", "-", "--python", python, "--no-header", "--no-annotate", "-q"],
               timeout=600, input=f"numpy=={numpy}\nnumba\n")
    m = re.search(r"^numba==(\S+)$", proc.stdout, re.MULTILINE)
    if not m:
        raise SystemExit(f"compat-matrix: no numba resolves beside numpy {numpy}: {proc.stderr.strip()[-500:]}")
    return m.group(1)


def discover_axes(uv: str, python: str) -> dict:
    mindspore = sorted(index_versions(python, "mindspore"), key=versions.version_key)
    numpy_2 = [v for v in index_versions(python, "numpy")
               if versions.specifier_contains(">=2", v) and versions.version_key(v) is not None
               and not re.search(r"(a|b|rc|dev)\d*$", v)]
    numpy = list(NUMPY_RELEASES) + ([max(numpy_2, key=versions.version_key)] if numpy_2 else [])
    numba = {np_version: sorted({PINNED_NUMBA, newest_numba(uv, python, np_version)}, key=versions.version_key)
             for np_version in numpy}
    return {"mindspore": mindspore, "numpy": numpy, "numba": numba}


def combinations(axes: dict) -> List[Tuple[str, str, str]]:
    return [(ms, np_version, nb) for ms in axes["mindspore"] for np_version in axes["numpy"]
            for nb in axes["numba"][np_version]]


# --- one combination -------------------------------------------------------------------------------

def resolver_said(stderr: str) -> str:
    """The explanation of uv's 'No solution found', without its hints."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(("hint:", "help:"))]
    return "\n".join(kept)[:1500]


def pip_refusal(python: str, pins: List[str]) -> str:
    """What pip's resolver says about the pins ('' if it would install them)."""
    proc = run([python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
                "--disable-pip-version-check", "-q", *pins], timeout=INSTALL_TIMEOUT_S)
    if proc.returncode == 0:
        return ""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("WARNING:")]
    return "\n".join(lines)[:1500]


class Installer:
    """uv with one shared cache, into venvs made by the interpreter's own venv module (deleted after use)."""

    def __init__(self, uv: str, python: str, cache: Path):
        self.uv, self.python, self.cache = uv, python, cache
        self.env = dict(os.environ, UV_CACHE_DIR=str(cache / "uv"), UV_LINK_MODE="hardlink",
                        UV_NO_PROGRESS="1")
        self.seed: List[str] = []
        self.refusals: Dict[Tuple[str, ...], str] = {}

    def _make_venv(self, path: Path, with_pip: bool) -> str:
        shutil.rmtree(path, ignore_errors=True)
        proc = run([self.python, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(path)], timeout=300)
        if proc.returncode != 0:
            raise SystemExit(f"compat-matrix: {self.python} -m venv failed: {proc.stderr.strip()[-500:]}")
        return str(path / "bin" / "python")

    def venv(self, path: Path) -> str:
        """A venv as `python -m venv` makes it: with the pip and setuptools that ensurepip seeds (found once,
        then installed from the cache, 3 s faster than ensurepip)."""
        if not self.seed:
            seeded = self._make_venv(path, with_pip=True)
            self.seed = [f"{name}=={version}" for name, version in self.freeze(seeded).items()]
            return seeded
        python = self._make_venv(path, with_pip=False)
        if self.install(python, self.seed) is not None:
            raise SystemExit(f"compat-matrix: cannot seed a venv with {' '.join(self.seed)}")
        return python

    def pip_refusal(self, pins: List[str], uv_said: str) -> str:
        """pip's own verdict on the pins uv's explanation names (the others play no part in the conflict),
        asked once per set of pins."""
        involved = tuple(pin for pin in pins if pin.split("==")[0] in uv_said) or tuple(pins)
        if involved not in self.refusals:
            self.refusals[involved] = pip_refusal(self.python, list(involved))
        return self.refusals[involved]

    def install(self, python: str, pins: List[str], extra_args: Tuple[str, ...] = ()) -> Optional[str]:
        """None when installed; the resolver's explanation when it finds no solution. Anything else
        (network, disk) stops the run: it says nothing about the combination, and a rerun resumes."""
        proc = run([self.uv, "pip", "install", "-q", "--python", python, *extra_args, *pins],
                   timeout=INSTALL_TIMEOUT_S, env=self.env)
        if proc.returncode == 0:
            return None
        if "No solution found" in proc.stderr:
            return resolver_said(proc.stderr)
        raise SystemExit(f"compat-matrix: uv pip install {' '.join(pins)} failed (not a resolver refusal; "
                         f"rerun to resume):\n{proc.stderr.strip()[-2000:]}")

    def freeze(self, python: str) -> Dict[str, str]:
        proc = run([self.uv, "pip", "freeze", "--python", python], timeout=300, env=self.env)
        pairs = (line.split("==", 1) for line in proc.stdout.splitlines() if "==" in line)
        return {versions.normalize_name(name): version for name, version in pairs}


def envcheck_probes(python: str) -> Tuple[Dict[str, dict], float]:
    """Each probe's status and first error line, as envcheck reports them for `python`."""
    command = [sys.executable, "-m", "envcheck", "--python", python, "--json"]
    for probe in PROBES:
        command += ["--only", probe]
    start = time.monotonic()
    proc = run(command, timeout=ENVCHECK_TIMEOUT_S, cwd=str(REPO))
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise SystemExit(f"compat-matrix: envcheck exited {proc.returncode} without a report:\n{proc.stderr[-2000:]}")
    probes = {}
    for probe in report["probes"]:
        if probe["id"] == "config":
            continue
        entry = {"status": probe["status"]}
        if probe["status"] in ("fail", "warn"):
            entry["error"] = probe["summary"].splitlines()[0][:300] if probe["summary"] else ""
            if probe["details"].get("failed_module"):
                entry["failed_module"] = probe["details"]["failed_module"]
            if probe["diagnosis"]:
                entry["rules"] = [d["rule_id"] for d in probe["diagnosis"]]
        probes[probe["id"]] = entry
    return probes, time.monotonic() - start


def measure(installer: Installer, venv_dir: Path, pins: List[str], extras: Tuple[str, ...],
            install_args: Tuple[str, ...] = ()) -> dict:
    """Install `pins` (plus whichever `extras` the resolver accepts beside them), probe, delete the venv."""
    start = time.monotonic()
    python = installer.venv(venv_dir)
    record: dict = {}
    try:
        refusal = installer.install(python, [*pins, *extras], install_args)
        not_installed = {}
        if refusal is not None:
            refusal_core = installer.install(python, pins, install_args) if extras else refusal
            if refusal_core is not None:
                pip_said = installer.pip_refusal(pins, refusal_core)
                record.update(install=compat.REFUSED, resolver_message=pip_said or refusal_core,
                              resolver="pip" if pip_said else "uv (pip's resolver accepts it)",
                              uv_message=refusal_core)
                return record
            # The three install; add each extra the resolver accepts beside them.
            for extra in extras:
                why = installer.install(python, [*pins, extra], install_args)
                if why is not None:
                    not_installed[extra] = why.splitlines()[-1] if why else "refused"
        record["install"] = "installed"
        record["installed"] = installer.freeze(python)
        if not_installed:
            record["not_installed"] = not_installed
        install_s = time.monotonic() - start
        record["probes"], probe_s = envcheck_probes(python)
        record["seconds"] = {"install": round(install_s, 1), "probes": round(probe_s, 1)}
        return record
    finally:
        shutil.rmtree(venv_dir, ignore_errors=True)


def finish(record: dict, axes_values: Dict[str, str], host: str) -> dict:
    record = {**axes_values, **record}
    record["status"] = compat.combination_status(record["install"], record.get("probes") or {})
    if record["status"] == compat.REFUSED:
        said = (record.get("resolver_message") or "").strip().splitlines()
        record["first_error"] = said[0] if said else "no solution"
    else:
        record["first_error"] = compat.first_error(record.get("probes") or {})
    record["date"] = datetime.date.today().isoformat()
    record["load_1min"] = round(os.getloadavg()[0], 1)   # the machine is shared: how busy it was
    record["machine"] = host
    return record


def lock_pins() -> Dict[str, str]:
    pairs = (line.split()[0].split("==") for line in LOCK.read_text().splitlines() if re.match(r"^[A-Za-z0-9]", line))
    return {versions.normalize_name(name): version for name, version in pairs}


def special_sets() -> Dict[str, dict]:
    """Records that are evidence for the docs and the rules, not lookups (compat.py skips them)."""
    pinned = lock_pins()
    three = [f"{axis}=={pinned[axis]}" for axis in compat.AXES]
    return {
        "cpu.lock": {"axes": {a: pinned[a] for a in compat.AXES}, "pins": ["-r", str(LOCK)], "extras": (),
                     "args": ("--no-deps",), "about": "docker/requirements/cpu.lock exactly"},
        "newest-setuptools": {"axes": {a: pinned[a] for a in compat.AXES}, "pins": [*three, "setuptools"],
                              "extras": EXTRAS, "args": ("--upgrade-package", "setuptools"),
                              "about": "the pinned three with the newest setuptools, as a venv without "
                                       "setuptools gets it (uv venv, python -m venv --without-pip)"},
    }


# --- the matrix file -------------------------------------------------------------------------------

def save(path: Path, matrix: dict) -> None:
    matrix["combinations"].sort(key=lambda r: (bool(r.get("set")), r.get("set") or "",
                                               [versions.version_key(r[a]) for a in compat.AXES]))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(matrix, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def summary(matrix: dict) -> List[str]:
    """pass/warn/fail/refused counts by mindspore (rows) x numpy (columns), both numba pairings counted."""
    records = compat.measured(matrix)
    ms_versions = sorted({r["mindspore"] for r in records}, key=versions.version_key)
    np_versions = sorted({r["numpy"] for r in records}, key=versions.version_key)
    letters = {"pass": "P", "warn": "W", "fail": "F", compat.REFUSED: "R"}
    lines = ["cells: numba pairings as P pass, W warn, F fail, R refused (0.53.1 first)",
             "mindspore    " + " ".join(f"{v:>8}" for v in np_versions)]
    for ms in ms_versions:
        cells = []
        for np_version in np_versions:
            here = sorted((r for r in records if r["mindspore"] == ms and r["numpy"] == np_version),
                          key=lambda r: versions.version_key(r["numba"]))
            cells.append(f"{''.join(letters[r['status']] for r in here):>8}")
        lines.append(f"{ms:12} " + " ".join(cells))
    counts = {s: sum(r["status"] == s for r in records) for s in letters}
    lines.append(f"{len(records)} combinations: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return lines


def portable_command(argv: List[str]) -> str:
    """The command line as the matrix records it, with no folder of the machine it ran on: absolute
    paths inside the checkout made relative to it, others (the Python under test, the wheel cache)
    reduced to their last part. The Python's version is recorded on its own."""
    def portable(arg: str) -> str:
        path = Path(arg)
        if not path.is_absolute():
            return arg
        return str(path.relative_to(REPO)) if REPO in path.parents else path.name
    return " ".join([Path(argv[0]).name, *map(portable, argv[1:])])


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="python3.9", help="interpreter the venvs are made from (CPython 3.9)")
    parser.add_argument("--uv", default=shutil.which("uv") or "uv", help="uv executable (pinned in host.lock)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "ds2-compat", help="shared wheel cache and scratch venvs, outside the repository")
    parser.add_argument("--out", type=Path, default=REPO / "envcheck" / "data" / "compat-matrix.json")
    parser.add_argument("--mindspore", action="append", default=[], help="only these mindspore versions")
    parser.add_argument("--numpy", action="append", default=[], help="only these numpy versions")
    parser.add_argument("--refresh", action="store_true", help="measure again what the file already holds")
    args = parser.parse_args()

    python = shutil.which(args.python) or args.python
    if not shutil.which(args.uv) and not os.access(args.uv, os.X_OK):
        raise SystemExit(f"compat-matrix: no uv at {args.uv}: make compat-matrix installs it (host.lock)")
    installer = Installer(args.uv, python, args.cache)
    args.cache.mkdir(parents=True, exist_ok=True)
    uv_version = run([args.uv, "--version"], timeout=60).stdout.strip()
    try:
        proc = run([python, "-c", "import platform; print(platform.python_version())"], timeout=60)
    except OSError as exc:
        raise SystemExit(f"compat-matrix: --python {args.python} does not run ({exc}); give a CPython 3.9, "
                         "e.g. make compat-matrix COMPAT_PYTHON=/usr/bin/python3.9") from None
    py_version = proc.stdout.strip()
    if not py_version.startswith("3.9."):
        said = (proc.stderr.strip().splitlines() or [f"it is Python {py_version}"])[0]
        raise SystemExit(f"compat-matrix: --python {args.python} is not a CPython 3.9 ({said}); "
                         "e.g. make compat-matrix COMPAT_PYTHON=/usr/bin/python3.9")

    matrix = {"combinations": []}
    if args.out.exists() and not args.refresh:
        matrix = json.loads(args.out.read_text(encoding="utf-8"))
    if "axes" not in matrix or args.refresh:
        log("finding the axes on the index ...")
        matrix["axes"] = discover_axes(args.uv, python)
    axes = matrix["axes"]
    matrix.update(about=__doc__.split("\n\n")[0], python=py_version, installer=uv_version, probes=list(PROBES),
                  extras=list(EXTRAS))
    matrix.setdefault("runs", [])
    host = machine()
    done = {tuple(r[a] for a in compat.AXES) for r in matrix["combinations"] if not r.get("set")}
    todo = [c for c in combinations(axes) if c not in done
            and (not args.mindspore or c[0] in args.mindspore) and (not args.numpy or c[1] in args.numpy)]
    sets = {name: spec for name, spec in special_sets().items()
            if not any(r.get("set") == name for r in matrix["combinations"]) and not (args.mindspore or args.numpy)}
    log(f"{len(combinations(axes))} combinations on the axes, {len(done)} measured, {len(todo)} to measure"
        + "".join(f", and {name}" for name in sets) + f"; {uv_version}, Python {py_version}, cache {args.cache}")

    start, measured, cpu_start, loads = time.monotonic(), 0, children_cpu_s(), []
    started = datetime.datetime.now().isoformat(timespec="seconds")

    def record_run():
        matrix["runs"].append({"started": started, "wall_s": round(time.monotonic() - start, 1),
                               "cpu_s": round(children_cpu_s() - cpu_start, 1), "measured": measured,
                               "mean_load_1min": round(sum(loads) / len(loads), 1) if loads else None,
                               "command": portable_command(sys.argv),
                               "machine": host})

    try:
        venv_dir = args.cache / "venv"
        for name, spec in sets.items():
            record = measure(installer, venv_dir, spec["pins"], spec["extras"], spec["args"])
            record = finish({"set": name, "about": spec["about"], **record}, spec["axes"], host)
            matrix["combinations"].append(record)
            measured += 1
            loads.append(record["load_1min"])
            save(args.out, matrix)
            log(f"{name}: {record['status']} {record['first_error']}")
        for i, (ms, np_version, nb) in enumerate(todo, 1):
            pins = [f"mindspore=={ms}", f"numpy=={np_version}", f"numba=={nb}"]
            record = finish(measure(installer, venv_dir, pins, EXTRAS),
                            dict(zip(compat.AXES, (ms, np_version, nb))), host)
            matrix["combinations"].append(record)
            measured += 1
            loads.append(record["load_1min"])
            save(args.out, matrix)
            took = sum((record.get("seconds") or {}).values())
            log(f"[{i}/{len(todo)}] mindspore {ms} numpy {np_version} numba {nb}: {record['status']}"
                + (f" ({record['first_error'][:120]})" if record["first_error"] else "")
                + (f" [{took:.0f} s]" if took else "")
                + f" {time.monotonic() - start:.0f} s so far")
    finally:
        record_run()
        save(args.out, matrix)
    log("\n".join(summary(matrix)))
    total = sum(r["wall_s"] for r in matrix["runs"])
    log(f"this run: {measured} combinations in {time.monotonic() - start:.0f} s; all runs so far: {total:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("compat-matrix: interrupted; what was measured is saved, run it again to resume")
