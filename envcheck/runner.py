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
import re
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Dict, List, Optional, Set, Tuple

from ds2 import memory
from envcheck import import_pairs, progress
from envcheck.probes import Probe
from envcheck.result import FAIL, SKIP, STATUSES, ProbeResult

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
TRACEBACK_GRACE_S = 1.0   # after SIGUSR1, how long faulthandler gets to print stacks before SIGKILL
OUTPUT_LIMIT = 200_000    # characters of stdout/stderr kept per probe (the tail)
MAX_WORKERS = 4           # probes at once
_LIVE_GROUPS: Set[int] = set()  # process groups of running probes, killed if envcheck is interrupted
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def default_workers() -> int:
    """Parallel probes: one per GiB of usable memory (a probe that imports MindSpore holds most of one, and
    envcheck must not be what runs a small container out of memory), at most MAX_WORKERS. Probes spend much of
    their time starting processes and importing, so they are not limited to one per core."""
    usable = memory.usable_bytes()
    by_memory = int(usable // memory.GIB) if usable else MAX_WORKERS
    return max(1, min(MAX_WORKERS, by_memory))


def run_probes(probes: List[Probe], settings: dict, python: str, timeout_s: Optional[float],
               workers: Optional[int] = None) -> List[ProbeResult]:
    """Run `probes`; return their results in the order given (pair probes started on the way appended)."""
    selected = {p.id for p in probes}
    results: Dict[str, ProbeResult] = {}
    waiting = sorted(probes, key=lambda p: -p.cost_s)
    extra: List[Probe] = []
    running: Dict[Future, Probe] = {}

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        try:
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
        except KeyboardInterrupt:  # Ctrl-C: probes run in their own sessions and would not see it
            pool.shutdown(wait=False, cancel_futures=True)
            with _LIVE_LOCK:
                _STOPPING.set()
                for pgid in list(_LIVE_GROUPS):
                    _kill_group(pgid)
            raise
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
        with _LIVE_LOCK:
            if _STOPPING.is_set():
                return ProbeResult(probe.id, probe.title, SKIP, "not run: envcheck was interrupted")
            try:
                proc = subprocess.Popen([python, "-X", "faulthandler", CHILD, request_path],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        start_new_session=True)
            except OSError as exc:
                return ProbeResult(probe.id, probe.title, FAIL, f"cannot start {python}: {exc}",
                                   details={"outcome": "not started", "error": str(exc)}, findings=["not-started"])
            _LIVE_GROUPS.add(proc.pid)
        timed_out = False
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            stdout, stderr = _stop(proc)
        finally:
            _kill_group(proc.pid)  # leftovers the probe started (a hung helper process) go too
            with _LIVE_LOCK:
                _LIVE_GROUPS.discard(proc.pid)
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


_FRAME = re.compile(r'^\s+File "(?P<path>[^"]+)", line \d+ in (?P<function>\S+)')


def _main_thread_frames(trace: str) -> List[Tuple[str, str]]:
    """(file, function) of the probe's main thread, innermost first, from a faulthandler dump."""
    blocks: List[List[Tuple[str, str]]] = []
    for line in trace.splitlines():
        if line.startswith(("Current thread 0x", "Thread 0x")):
            blocks.append([])
        elif blocks:
            m = _FRAME.match(line)
            if m:
                blocks[-1].append((m.group("path"), m.group("function")))
    for frames in blocks:  # the thread running child.py; imports and steps run there
        if any(path == CHILD for path, _ in frames):
            return frames
    return blocks[0] if blocks else []


def _is_file_of(path: str, module: str) -> bool:
    stem = path[:-len("/__init__.py")] if path.endswith("/__init__.py") else os.path.splitext(path)[0]
    return stem.endswith("/" + module.replace(".", "/"))


def where_stopped(trace: str, log: List[str]) -> Tuple[str, Optional[str]]:
    """("import", module) or ("step", step) that a probe was in when it crashed or was stopped.

    The progress log alone cannot tell: its last "import" line may be a nested import that already
    finished. The stack decides: frames of the import machinery, or a module's top-level code, mean
    an import was running; its file names the module. Without a stack (SIGKILL) the log decides.
    """
    imports = [line[len("import "):] for line in log if line.startswith("import ")]
    frames = _main_thread_frames(trace)
    if not frames:
        event = progress.last_event(log)
        if event.startswith("while importing "):
            return "import", event[len("while importing "):]
        steps = progress.steps(log)
        return "step", steps[-1] if steps else None
    module_files = [path for path, function in frames if function == "<module>" and path != CHILD]
    if frames[0][0].startswith("<frozen importlib"):
        return "import", imports[-1] if imports else None  # native code of the module being loaded
    if module_files:
        return "import", next((name for name in reversed(imports) if _is_file_of(module_files[0], name)),
                              imports[-1] if imports else module_files[0])
    steps = progress.steps(log)
    return "step", steps[-1] if steps else None


def _interpret(probe: Probe, reported: Optional[dict], returncode: int, timed_out: bool, timeout: float,
               output: str, log: List[str], duration: float) -> ProbeResult:
    if reported is not None:
        status = reported.get("status") if reported.get("status") in STATUSES else FAIL
        details = dict(reported.get("details") or {})
        details["outcome"] = "completed"
        if timed_out or returncode != 0:  # it reported; what happened after (os._exit in child.py) is noise
            details["exit"] = "timed out after reporting" if timed_out else f"exit status {returncode} after reporting"
        text = str(reported.get("output") or "") + "\n" + output
        return ProbeResult(probe.id, probe.title, status, str(reported.get("summary") or ""), details, duration,
                           list(reported.get("findings") or []), text)

    trace = python_traceback(output)
    kind, name = where_stopped(trace, log)
    event = (f"while importing {name}" if kind == "import" else f"during {name}") if name else "before its first step"
    details = {"last_event": event, "last_import": name if kind == "import" else None, "steps": progress.steps(log),
               "returncode": returncode, "traceback": trace}
    if timed_out:
        summary = f"did not finish within {timeout:g} s; stopped {event}"
        details["outcome"] = "timeout"
        findings = ["timeout", f"timeout-during-{kind}"]
    elif returncode < 0:
        signal_text = signal_name(returncode)
        summary = f"crashed with {signal_text} {event}"
        details.update(outcome="crash", signal=signal_text)
        findings = ["crash", f"crash-during-{kind}", "signal-" + signal_text]
    else:
        summary = f"exited with status {returncode} without reporting, {event}"
        details.update(outcome="exit", output_tail=output[-2000:])
        findings = ["exit-without-result"]
    return ProbeResult(probe.id, probe.title, FAIL, summary, details, duration, findings, output)
