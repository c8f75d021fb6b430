"""Entry point of one probe subprocess:  python -X faulthandler envcheck/child.py REQUEST.json

Runs as a script inside the interpreter under test, which may have nothing but the standard library.
REQUEST.json (written by envcheck/runner.py) holds:
    module, function, arguments   which probe function to call: envcheck.probes.<module>.<function>
    settings                      stage and ds2 configuration, passed to every probe
    progress_path                 progress log (see envcheck/progress.py)
    result_path                   where the probe's result (JSON) is written when it returns or raises

A probe function takes (settings, **arguments) and returns a dict with keys status ("pass", "info",
"warn", "fail" or "skip"), summary (one line), and optionally details (JSON-able dict), findings
(list of codes that rules match) and output (text the probe captured itself, searched by rules).

If the process dies instead (signal, os._exit, hang killed by the runner), there is no result file and
the runner builds the result from the exit status, stderr (where -X faulthandler printed the Python
traceback) and the progress log. SIGUSR1 makes faulthandler print every thread's stack: the runner
sends it before killing a probe that ran past its timeout.
"""
import faulthandler
import importlib
import importlib.util
import json
import os
import signal
import sys
import traceback

ENVCHECK_DIR = os.path.dirname(os.path.abspath(__file__))

# Running a script puts its directory (envcheck/) first on sys.path. Take it off, so envcheck's own
# files cannot shadow modules under test, and load envcheck as a package from its directory without
# putting its parent on sys.path (that parent may be another environment's site-packages).
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == ENVCHECK_DIR:
    del sys.path[0]


def _load_package(name: str, directory: str) -> None:
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(directory, "__init__.py"), submodule_search_locations=[directory])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)


def _load_envcheck_and_ds2() -> None:
    """envcheck, and the ds2 beside it unless the interpreter has its own (probes read ds2's config,
    shapes, memory plan and runtime; the checkpoint probe builds its model). Importing the ds2 package
    imports nothing heavy: its modules import what they need when a probe imports them."""
    _load_package("envcheck", ENVCHECK_DIR)
    ds2_dir = os.path.join(os.path.dirname(ENVCHECK_DIR), "ds2")
    if importlib.util.find_spec("ds2") is None and os.path.isfile(os.path.join(ds2_dir, "__init__.py")):
        _load_package("ds2", ds2_dir)


def _write_result(path: str, result: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, default=str)
    os.replace(tmp, path)


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        request = json.load(f)
    _load_envcheck_and_ds2()
    from envcheck import progress

    progress.open_log(request["progress_path"])
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    probe_module = importlib.import_module("envcheck.probes." + request["module"])
    function = getattr(probe_module, request["function"])

    progress.record_imports()
    try:
        result = function(request["settings"], **request["arguments"])
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from code under test included
        result = {
            "status": "fail",
            "summary": f"probe raised {type(exc).__name__}: {exc}",
            "details": {"error": f"{type(exc).__name__}: {exc}"},
            "output": traceback.format_exc(),
        }
    _write_result(request["result_path"], result)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: with MindSpore loaded it costs about a second of CPU per process, and
    # what it would run (atexit handlers, C++ static destructors) is not what the probes check.
    os._exit(0)


if __name__ == "__main__":
    main()
