"""The report: plain text for people, JSON for programs, and the exit code (see envcheck/__init__.py)."""
from __future__ import annotations

import json
import os
import textwrap
from typing import List, Optional

from envcheck import SCHEMA_VERSION, __version__
from envcheck.result import FAIL, SEVERITY, STATUSES, WARN, ProbeResult

EXIT_READY, EXIT_BLOCKED, EXIT_WARNINGS, EXIT_ENVCHECK_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_MEANING = {
    EXIT_READY: "ready",
    EXIT_BLOCKED: "a blocking problem (FAIL) above",
    EXIT_WARNINGS: "warnings only",
}
WIDTH = 100
TABLE_ROWS = 30   # rows of a probe's details["table"] shown in the text report; --json has them all


def exit_code(results: List[ProbeResult]) -> int:
    statuses = {r.status for r in results}
    if FAIL in statuses:
        return EXIT_BLOCKED
    if WARN in statuses:
        return EXIT_WARNINGS
    return EXIT_READY


def to_json(results: List[ProbeResult], stage: Optional[str], python: str, host: bool, duration_s: float) -> str:
    return json.dumps({
        "schema_version": SCHEMA_VERSION,
        "envcheck_version": __version__,
        "stage": stage,
        "python": python,
        "host": host,
        "duration_s": round(duration_s, 3),
        "probes": [r.to_json() for r in results],
        "exit_code": exit_code(results),
    }, indent=2, default=str)


def _wrap(text: str, indent: str) -> List[str]:
    lines = []
    for paragraph in text.splitlines() or [""]:
        lines += textwrap.wrap(paragraph, WIDTH, initial_indent=indent, subsequent_indent=indent) or [indent]
    return lines


def _evidence_lines(result: ProbeResult) -> List[str]:
    """What went wrong, for a WARN/FAIL result that no rule explains, or a crash/hang traceback."""
    details = result.details
    lines = []
    trace = str(details.get("traceback") or "").strip()
    if trace:
        # The import machinery's own frames say nothing the module frames do not.
        frames = [line for line in trace.splitlines() if "<frozen importlib" not in line and line.strip()]
        lines.append("      stack (faulthandler, import machinery left out):")
        lines += ["        " + line for line in frames[:14]]
    elif not result.diagnosis:
        error = str(details.get("error") or "").strip()
        if error and error not in result.summary:
            lines += _wrap(error[:1000], "      ")
    return lines


def _table_lines(result: ProbeResult) -> List[str]:
    """A probe's table (details["table"], e.g. checkpoint.load's reconciliation), not wrapped: its columns
    must stay aligned."""
    rows = str(result.details.get("table") or "").splitlines()
    lines = ["      " + row for row in rows[:TABLE_ROWS]]
    if len(rows) > TABLE_ROWS:
        lines.append(f"      ... and {len(rows) - TABLE_ROWS} more rows (--json shows them all)")
    return lines


def _diagnosis_lines(result: ProbeResult, shown: set) -> List[str]:
    lines = []
    for d in result.diagnosis:
        if d.rule_id in shown:
            lines.append(f"      [{d.rule_id}] {d.title} (explained above)")
            continue
        shown.add(d.rule_id)
        lines.append(f"      [{d.rule_id}] {d.title}")
        lines += _wrap("why: " + d.explanation, "        ")
        if d.fix:
            lines.append("        fix:")
            lines += ["          " + step for step in d.fix]  # not wrapped: commands must stay copyable
    return lines


def to_text(results: List[ProbeResult], stage: Optional[str], python: str, duration_s: float) -> str:
    id_width = max([len(r.id) for r in results] + [10])
    lines = [f"envcheck {__version__} | stage: {stage or 'all'} | python: {python}", ""]
    shown: set = set()
    for r in results:
        lines.append(f"{r.status.upper():5} {r.id:{id_width}} {r.summary}  ({r.duration_s:.1f} s)")
        if SEVERITY[r.status] > 0:
            lines += _evidence_lines(r)
            lines += _table_lines(r)
            lines += _diagnosis_lines(r, shown)
            if not r.diagnosis:
                lines.append(f"      no rule explains this yet; details: python -m envcheck --only {r.id} --json")
    counts = ", ".join(f"{sum(r.status == s for r in results)} {s}" for s in STATUSES)
    code = exit_code(results)
    lines += ["", f"{len(results)} checks in {duration_s:.1f} s: {counts}. Exit {code}: {EXIT_MEANING[code]}."]
    return "\n".join(lines) + "\n"


class OutputError(Exception):
    """The report could not be written where it was asked for; the message names where and why."""


def cannot_write(path: str) -> Optional[str]:
    """Why a report cannot be written to `path` (checked before the probes run), or None."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "is a directory; give a file name"
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist; create it or write the report elsewhere"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable by this user; write the report elsewhere"
    return None


def write_file(path: str, text: str) -> None:
    """Write `text` to `path` whole or not at all (ds2.files: a temporary file in the same folder, fsync,
    rename). Raises OutputError naming the file and the reason."""
    from ds2 import files

    try:
        files.write_text(path, text)
    except files.WriteError as exc:
        raise OutputError(f"cannot write the report to {path}: {exc.reason}") from None
