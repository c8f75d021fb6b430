"""The measured compatibility matrix: is the installed mindspore + numpy + numba known to work?

envcheck/data/compat-matrix.json is written by bench/compat_matrix.py (`make compat-matrix`): for every
combination of mindspore, numpy and numba releases it installed the three (with torch 1.7.1 and
librosa 0.9.2 where they install) into a fresh Python 3.9 venv and ran envcheck's import, numpy ABI
and training-step probes there. A record:

    {"mindspore": "2.8.0", "numpy": "1.20.0", "numba": "0.53.1",
     "install": "installed" | "refused",           # refused: the resolver found no solution
     "resolver_message": "...",                    # refused: what pip (and uv) said, first lines
     "installed": {"llvmlite": "0.36.0", ...},     # every distribution the venv held
     "not_installed": {"torch==1.7.1": "why"},     # extras the resolver refused beside the three
     "probes": {"import.mindspore": {"status": "fail", "error": "AttributeError: ..."}, ...},
     "status": "pass" | "warn" | "fail" | "refused",   # combination_status() of the above
     "first_error": "import.mindspore: AttributeError: ...",
     "date": "2026-...", "machine": "..."}

`check(results)` looks the installed combination up and returns one more result line for the
report (id "compat"): PASS when it was measured passing; the measured failure, its first error line
and the nearest combination measured passing (fewest of the three pins changed) when it was measured
failing and the same probes fail here too; INFO when it was not measured, was refused by the resolver,
or failed there but passes here (its other packages differ). Standard library only, like all of
envcheck.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional

from envcheck import versions
from envcheck.result import FAIL, INFO, PASS, SKIP, WARN, Diagnosis, ProbeResult

MATRIX_PATH = Path(__file__).resolve().parent / "data" / "compat-matrix.json"  # package data
MATRIX_ENV = "ENVCHECK_COMPAT_MATRIX"      # another matrix file (tests, or a matrix measured elsewhere)
AXES = ("mindspore", "numpy", "numba")
REFUSED = "refused"
# Installed beside the three in every measurement; the report names their measured versions.
CONTEXT = ("llvmlite", "scipy", "pillow", "setuptools", "librosa", "torch")
PROBE_ID = "compat"
TITLE = "the installed mindspore + numpy + numba against the measured compatibility matrix"


# --- what a measured combination's outcome is (bench/compat_matrix.py writes it with this) -----------

def optional_only(probe_id: str, probe: dict) -> bool:
    """True for probes about torch alone: ds2 runs without torch (checkpoint conversion and the benchmark
    use it), so a combination whose only failures are these is a WARN, not a FAIL."""
    return (probe_id == "import.torch" or "+torch" in probe_id or probe_id.startswith("import.torch+")
            or probe.get("failed_module") == "torch")


def combination_status(install: str, probes: Dict[str, dict]) -> str:
    if install == REFUSED:
        return REFUSED
    failed = [pid for pid, probe in probes.items() if probe.get("status") == FAIL]
    if any(not optional_only(pid, probes[pid]) for pid in failed):
        return FAIL
    if failed or any(probe.get("status") == WARN for probe in probes.values()):
        return WARN
    return PASS


# The probe whose failure a reader should see first: the deepest dependency that broke.
FIRST_ERROR_ORDER = ("import.numpy", "import.scipy", "import.numba", "import.soundfile", "import.librosa",
                     "import.mindspore", "import.torch", "numpy.abi", "import.together",
                     "import.together-reversed", "mindspore.train_step")


def first_error(probes: Dict[str, dict]) -> str:
    """'probe: error line' of the first failed (else warned) probe in FIRST_ERROR_ORDER, or ''."""
    order = {pid: i for i, pid in enumerate(FIRST_ERROR_ORDER)}
    for wanted in (FAIL, WARN):
        hits = sorted((order.get(pid, len(order)), pid) for pid, p in probes.items() if p.get("status") == wanted)
        if hits:
            pid = hits[0][1]
            return f"{pid}: {probes[pid].get('error') or ''}".rstrip(": ")
    return ""


# --- the matrix file -------------------------------------------------------------------------------

def matrix_file(path: Optional[Path] = None) -> Path:
    return Path(path or os.environ.get(MATRIX_ENV) or MATRIX_PATH)


def load(path: Optional[Path] = None) -> dict:
    """The matrix as a dict; raises OSError or ValueError when it cannot be read."""
    path = matrix_file(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("combinations"), list):
        raise ValueError(f"{path}: no 'combinations' list")
    return data


def measured(matrix: dict) -> List[dict]:
    """The records of the grid. Records with a "set" (cpu.lock, newest-setuptools) are evidence for the
    docs and the rules, measured beside it; lookups and suggestions do not use them."""
    return [r for r in matrix["combinations"] if not r.get("set")]


def _same(a: Optional[str], b: Optional[str]) -> bool:
    if a is None or b is None:
        return a == b
    ka, kb = versions.version_key(a), versions.version_key(b)
    return ka == kb if ka is not None and kb is not None else a == b


def lookup(matrix: dict, current: Dict[str, str]) -> Optional[dict]:
    """The record of exactly this mindspore + numpy + numba (the main set of axes), or None."""
    for record in measured(matrix):
        if all(_same(record.get(axis), current.get(axis)) for axis in AXES):
            return record
    return None


def nearest_passing(matrix: dict, current: Dict[str, str], limit: int = 3) -> List[dict]:
    """Records measured passing that change the fewest of the three pins from `current`; among those, the
    ones whose versions moved the fewest releases (counted along each axis's measured versions). At most
    `limit`, all with the same, smallest number of changed pins."""
    passing = [r for r in measured(matrix) if r.get("status") == PASS and all(r.get(a) for a in AXES)]
    if not passing:
        return []
    ordered = {}
    for axis in AXES:
        seen = {r[axis] for r in measured(matrix) if r.get(axis)} | {current[axis]}
        ordered[axis] = sorted(seen, key=lambda v: versions.version_key(v) or versions.version_key("0"))

    def cost(record):
        changed = [axis for axis in AXES if not _same(record[axis], current[axis])]
        moved = sum(abs(ordered[a].index(record[a]) - ordered[a].index(current[a])) for a in changed)
        return len(changed), moved

    ranked = sorted(passing, key=lambda r: (cost(r), [versions.version_key(r[a]) for a in AXES]))
    fewest = cost(ranked[0])[0]
    return [r for r in ranked if cost(r)[0] == fewest][:limit]


def describe(record: dict) -> str:
    return " + ".join(f"{axis} {record[axis]}" for axis in AXES)


def pins(record: dict, current: Dict[str, str]) -> List[str]:
    """The requirement pins that turn `current` into `record` (numba with the llvmlite it was measured with)."""
    changed = [f"{axis}=={record[axis]}" for axis in AXES if not _same(record[axis], current[axis])]
    llvmlite = (record.get("installed") or {}).get("llvmlite")
    if any(pin.startswith("numba==") for pin in changed) and llvmlite:
        changed.append(f"llvmlite=={llvmlite}")
    return changed


def _install_command(pinned: List[str]) -> str:
    return "python -m pip install " + " ".join(f"'{p}'" for p in pinned)


def _suggestion_text(suggestions: List[dict], current: Dict[str, str]) -> str:
    if not suggestions:
        return "No combination in the matrix was measured passing."
    changed = sum(not _same(suggestions[0][axis], current[axis]) for axis in AXES)
    listed = "; ".join(f"{describe(r)} (measured {r.get('date', '?')})" for r in suggestions)
    return f"Nearest combinations measured passing (changing {changed} of the three pins): {listed}."


def _failed_probes(record: dict) -> List[str]:
    return [pid for pid, p in (record.get("probes") or {}).items() if p.get("status") in (FAIL, WARN)]


def _context(record: dict, installed: Dict[str, str]) -> List[str]:
    """Packages the measurement had at other versions than this environment: CONTEXT first, then how many
    other distributions differ."""
    there = record.get("installed") or {}
    differ = [name for name in there if name not in AXES and not _same(installed.get(name), there[name])]
    named = [f"{name} {there[name]} there, {installed.get(name) or 'not installed'} here"
             for name in CONTEXT if name in differ]
    others = len(differ) - len(named)
    return named + ([f"{others} other distribution(s) at other versions"] if others else [])


def check(results: List[ProbeResult], matrix_path: Optional[Path] = None) -> List[ProbeResult]:
    """[the compat result] for the report, or [] when the distributions probe did not run (no versions)."""
    dists = next((r for r in results if r.id == "distributions"), None)
    if dists is None or not isinstance(dists.details.get("installed"), dict):
        return []
    installed = {versions.normalize_name(k): str(v) for k, v in dists.details["installed"].items()}
    current = {axis: installed.get(axis) for axis in AXES}
    missing = [axis for axis in AXES if current[axis] is None]
    if missing:
        return [ProbeResult(PROBE_ID, TITLE, SKIP, f"{', '.join(missing)} not installed: the matrix records "
                            "combinations of all three")]
    name = f"mindspore {current['mindspore']} + numpy {current['numpy']} + numba {current['numba']}"
    try:
        matrix = load(matrix_path)
    except (OSError, ValueError) as exc:
        return [ProbeResult(PROBE_ID, TITLE, SKIP, f"no measured matrix to compare {name} with ({exc})")]
    record = lookup(matrix, current)
    suggestions = nearest_passing(matrix, current)
    details = {"combination": current, "record": record, "nearest_passing": [describe(r) for r in suggestions],
               "matrix_combinations": len(measured(matrix))}
    nearest = f"; nearest measured passing: {describe(suggestions[0])}" if suggestions else ""

    if record is None:
        return [ProbeResult(PROBE_ID, TITLE, INFO, f"{name} is not in the measured matrix ("
                            f"{len(measured(matrix))} combinations){nearest}", details)]
    when = f"{record.get('date', '?')}, {record.get('machine', '?')}"
    if record.get("status") == PASS:
        return [ProbeResult(PROBE_ID, TITLE, PASS, f"{name}: measured passing ({when})", details)]
    if record.get("status") == REFUSED:
        said = (record.get("resolver_message") or "").strip().splitlines()
        return [ProbeResult(PROBE_ID, TITLE, INFO, f"{name}: the resolver refuses this combination, so it was "
                            f"not measured ({said[0] if said else 'no solution'}){nearest}", details)]

    by_id = {r.id: r for r in results}
    failed_there = _failed_probes(record)
    here = [pid for pid in failed_there if pid in by_id]
    confirmed = [pid for pid in here if by_id[pid].status in (FAIL, WARN)]
    error = record.get("first_error") or "?"
    if not confirmed:
        if here:
            differ = _context(record, installed)
            summary = (f"{name}: measured {record['status']} ({error}), but {', '.join(here)} pass here"
                       + (f"; the measurement had {'; '.join(differ)}" if differ else ""))
        else:
            summary = (f"{name}: measured {record['status']} in {', '.join(failed_there)}, which this run does not "
                       f"check ({error})")
        return [ProbeResult(PROBE_ID, TITLE, INFO, summary, details)]

    status = FAIL if record["status"] == FAIL else WARN
    others = sorted(set(failed_there) - {error.split(":")[0]})
    beside = [f"{n} {record['installed'][n]}" for n in CONTEXT if n in (record.get("installed") or {})]
    explanation = (f"Measured on {when}: a fresh Python 3.9 venv with these three releases"
                   + (f" (and {', '.join(beside)})" if beside else "") + f" failed in {error}"
                   + (f"; also failed there: {', '.join(others)}" if others else "") + ". "
                   f"The same probes fail here ({', '.join(confirmed)}). " + _suggestion_text(suggestions, current)
                   + f" The whole matrix: {matrix_file(matrix_path)} (docs/compat-matrix.md).")
    fix = [_install_command(pins(r, current)) + f"    # -> {describe(r)}" for r in suggestions]
    result = ProbeResult(PROBE_ID, TITLE, status, f"{name}: measured failing: {error}"
                         if status == FAIL else f"{name}: measured with a warning: {error}", details)
    result.diagnosis.append(Diagnosis("compat-matrix", f"{name} was measured failing; "
                                      + (f"{describe(suggestions[0])} was measured passing" if suggestions
                                         else "no measured combination passes"), explanation, fix))
    return [result]
