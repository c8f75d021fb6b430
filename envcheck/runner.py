"""Run probes, each in its own subprocess, in parallel, and turn whatever happens into a ProbeResult.

One probe = one process:  PYTHON -X faulthandler envcheck/child.py REQUEST.json  (see child.py).
The process runs in a new session so that on timeout the runner can first ask it for a traceback
(SIGUSR1, which faulthandler answers by printing every thread's stack) and then kill its whole
process group. Whatever the process does -- return, raise, segfault, abort, hang, get OOM-killed --
ends as a result here; nothing a probe does can take envcheck down.

Probes start in parallel from a thread pool, most expensive first. A probe listed with `after`
starts once those probes have results; the import-together probes use this to import only modules
that imported alone, and their failures start pair probes (see import_pairs.py).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Dict, List, Optional

from envcheck import import_pairs, progress
from envcheck.probes import Probe
from envcheck.result import FAIL, STATUSES, WARN, ProbeResult, worse

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
TRACEBACK_GRACE_S = 2.0   # after SIGUSR1, how long faulthandler gets to print stacks before SIGKILL
OUTPUT_LIMIT = 200_000    # characters of stdout/stderr kept per probe (the tail)


def default_workers() -> int:
    """Parallel probes: the usable cores plus one (probes also wait on disk and on process start-up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(2, min(cores + 1, 6))


def run_probes(probes: List[Probe], settings: dict, python: str, timeout_s: Optional[float],
               workers: Optional[int] = None) -> List[ProbeResult]:
    """Run `probes`; return their results in the order given (pair probes started on the way appended)."""
    selected = {p.id for p in probes}
    results: Dict[str, ProbeResult] = {}
    waiting = sorted(probes, key=lambda p: -p.cost_s)
    extra: List[Probe] = []
    running: Dict[Future, Probe] = {}

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        while waiting or running:
            for probe in list(waiting):
                if all(dep in results for dep in probe.after if dep in selected):
                    waiting.remove(probe)
                    if probe.id in import_pairs.TOGETHER_IDS:
                        probe = import_pairs.with_modules(probe, probes, results)
                    running[pool.submit(run_one, probe, settings, python, timeout_s)] = probe
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                probe = running.pop(future)
                result = future.result()
                results[probe.id] = result
                for pair in import_pairs.pairs_to_isolate(probe, result, results):
                    if pair.id not in results and all(e.id != pair.id for e in extra):
                        extra.append(pair)
                        running[pool.submit(run_one, pair, settings, python, timeout_s)] = pair
    import_pairs.judge_together(results)
    return [results[p.id] for p in probes] + [results[p.id] for p in extra]


def run_one(probe: Probe, settings: dict, python: str, timeout_s: Optional[float]) -> ProbeResult:
    """Run one probe in a subprocess of `python` and describe what happened."""
    timeout = timeout_s if timeout_s is not None else probe.timeout_s
    with tempfile.TemporaryDirectory(prefix="envcheck-") as work:
        request_path = os.path.join(work, "request.json")
        progress_path = os.path.join(work, "progress.log")
        result_path = os.path.join(work, "result.json")
        with open(request_path, "w", encoding="utf-8") as f:
            json.dump({"module": probe.module, "function": probe.function, "arguments": probe.arguments,
                       "settings": settings, "progress_path": progress_path, "result_path": result_path}, f)
        start = time.monotonic()
        try:
            proc = subprocess.Popen([python, "-X", "faulthandler", CHILD, request_path],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
        except OSError as exc:
            return ProbeResult(probe.id, probe.title, FAIL, f"cannot start {python}: {exc}",
                               details={"outcome": "not started", "error": str(exc)}, findings=["not-started"])
        timed_out = False
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            stdout, stderr = _stop(proc)
        _kill_group(proc.pid)  # leftovers the probe started (a hung helper process) go too
        duration = time.monotonic() - start
        log = progress.read_log(progress_path)
        reported = _read_json(result_path)
    output = _decode(stdout) + _decode(stderr)
    return _interpret(probe, reported, proc.returncode, timed_out, timeout, output, log, duration)


def _stop(proc: subprocess.Popen):
    """Ask a probe past its time for its stacks (faulthandler on SIGUSR1), then kill its process group."""
    try:
        os.kill(proc.pid, signal.SIGUSR1)
        return proc.communicate(timeout=TRACEBACK_GRACE_S)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        _kill_group(proc.pid)
        return proc.communicate()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _decode(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return text[-OUTPUT_LIMIT:]


def signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def python_traceback(output: str) -> str:
    """The faulthandler block (fatal error line and thread stacks) from a probe's stderr, or ''."""
    lines = output.splitlines()
    start = None
    for i, line in enumerate(lines):
        if line.startswith("Fatal Python error"):
            start = i  # keep the last fatal error block
        elif start is None and (line.startswith("Current thread 0x") or line.startswith("Thread 0x")):
            start = i
    if start is None:
        return ""
    return "\n".join(lines[start:start + 80])


def _event_findings(kind: str, log: List[str]) -> List[str]:
    """e.g. ["crash", "crash-during-import"] or ["timeout", "timeout-during-step"]."""
    event = progress.last_event(log)
    where = "import" if event.startswith("while importing") else "step"
    return [kind, f"{kind}-during-{where}"]


def _interpret(probe: Probe, reported: Optional[dict], returncode: int, timed_out: bool, timeout: float,
               output: str, log: List[str], duration: float) -> ProbeResult:
    event = progress.last_event(log)
    context = {"last_event": event, "last_import": progress.last_import(log), "steps": progress.steps(log),
               "returncode": returncode}
    if reported is not None:
        status = reported.get("status") if reported.get("status") in STATUSES else FAIL
        details = dict(reported.get("details") or {})
        details["outcome"] = "completed"
        findings = list(reported.get("findings") or [])
        summary = str(reported.get("summary") or "")
        if timed_out or returncode != 0:  # it reported; what happened after (os._exit in child.py) is noise
            details["exit"] = "timed out after reporting" if timed_out else f"exit status {returncode} after reporting"
        text = str(reported.get("output") or "") + "\n" + output
        return ProbeResult(probe.id, probe.title, status, summary, details, duration, findings, text)

    details = dict(context)
    if timed_out:
        summary = f"did not finish within {timeout:g} s; stopped {event}"
        details.update(outcome="timeout", traceback=python_traceback(output))
        findings = _event_findings("timeout", log)
    elif returncode < 0:
        name = signal_name(returncode)
        summary = f"crashed with {name} {event}"
        details.update(outcome="crash", signal=name, traceback=python_traceback(output))
        findings = _event_findings("crash", log) + ["signal-" + name]
    else:
        summary = f"exited with status {returncode} without reporting, {event}"
        details.update(outcome="exit", output_tail=output[-2000:])
        findings = ["exit-without-result"]
    return ProbeResult(probe.id, probe.title, FAIL, summary, details, duration, findings, output)
