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

The probe runs with the import path `python -m ds2` would have in the same place: the working directory
first (unless the interpreter runs in safe-path mode), then PYTHONPATH and the interpreter's own paths, so a
file there that shadows an installed module is what the probe imports too. This script, envcheck and the probe
module are loaded before that, with the standard library and site-packages ahead of everything else, so a
json.py on PYTHONPATH cannot stop the probe that reports it. settings["startup_modules"] lists the modules the
interpreter had imported before this script ran: no file on sys.path can replace those. After the probe,
modules it imported from outside the environment that shadow an installed one (envcheck/shadows.py) are
added to its result (details "shadowed", finding "module-shadowed"), so any failure they cause is explained.

If the process dies instead (signal, os._exit, hang killed by the runner), there is no result file and
the runner builds the result from the exit status, stderr (where -X faulthandler printed the Python
traceback) and the progress log. SIGUSR1 makes faulthandler print every thread's stack: the runner
sends it before killing a probe that ran past its timeout.
"""
import os
import sys

STARTUP_MODULES = sorted(sys.modules)  # before this script imports anything
ENVCHECK_DIR = os.path.dirname(os.path.abspath(__file__))
# Running a script puts its directory (envcheck/) first on sys.path. Take it off, so envcheck's own
# files cannot shadow modules under test; envcheck is loaded as a package from its directory without
# putting its parent on sys.path (that parent may be another environment's site-packages).
CALLERS_PATH = [p for p in sys.path if os.path.abspath(p or os.curdir) != ENVCHECK_DIR]
# Until the probe runs, the standard library and site-packages come first (envcheck/syspath.py, run by hand:
# importing it the usual way would need the very modules it protects).
_syspath: dict = {}
with open(os.path.join(ENVCHECK_DIR, "syspath.py"), encoding="utf-8") as _f:
    exec(compile(_f.read(), _f.name, "exec"), _syspath)
sys.path[:] = _syspath["environment_first"](CALLERS_PATH)

import faulthandler  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import traceback  # noqa: E402


def _load_package(name: str, directory: str) -> None:
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(directory, "__init__.py"), submodule_search_locations=[directory])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)


def _load_ds2() -> None:
    """The interpreter's own ds2 (on the caller's path), else the one beside envcheck (probes read ds2's config,
    shapes, memory plan and runtime; the checkpoint probe builds its model). Importing the ds2 package
    imports nothing heavy: its modules import what they need when a probe imports them."""
    ds2_dir = os.path.join(os.path.dirname(ENVCHECK_DIR), "ds2")
    if importlib.util.find_spec("ds2") is None and os.path.isfile(os.path.join(ds2_dir, "__init__.py")):
        _load_package("ds2", ds2_dir)


def _callers_import_path() -> None:
    """sys.path as `python -m ds2` run from the working directory has it: that directory first, then the
    caller's path as the interpreter built it (PYTHONPATH, the standard library, site-packages, .pth folders)."""
    sys.path[:] = CALLERS_PATH
    _load_ds2()
    if not getattr(sys.flags, "safe_path", False):  # python -P / PYTHONSAFEPATH (3.11+) leave it out
        sys.path.insert(0, os.getcwd())
    importlib.invalidate_caches()


def _add_shadows(result: dict, shadows) -> None:
    """Record the modules the probe imported from files that shadow installed ones, and those named in its
    traceback (a shadowing module that raised is no longer in sys.modules)."""
    try:
        text = str(result.get("output") or "") + "\n" + str((result.get("details") or {}).get("traceback") or "")
        found = shadows.loaded(STARTUP_MODULES, text)
    except Exception as exc:  # never lose the probe's own result over this
        found = []
        result.setdefault("details", {})["shadow_scan_error"] = f"{type(exc).__name__}: {exc}"
    if found and "module-shadowed" not in (result.get("findings") or []):
        result.setdefault("details", {}).update(shadows.report(found))
        result["findings"] = list(result.get("findings") or []) + ["module-shadowed"]


def _write_result(path: str, result: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, default=str)
    os.replace(tmp, path)


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        request = json.load(f)
    _load_package("envcheck", ENVCHECK_DIR)
    from envcheck import progress, shadows

    progress.open_log(request["progress_path"])
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    probe_module = importlib.import_module("envcheck.probes." + request["module"])
    function = getattr(probe_module, request["function"])

    settings = dict(request["settings"], startup_modules=STARTUP_MODULES)
    _callers_import_path()
    progress.record_imports()
    try:
        result = function(settings, **request["arguments"])
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from code under test included
        result = {
            "status": "fail",
            "summary": f"probe raised {type(exc).__name__}: {exc}",
            "details": {"error": f"{type(exc).__name__}: {exc}"},
            "output": traceback.format_exc(),
        }
    _add_shadows(result, shadows)
    _write_result(request["result_path"], result)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: with MindSpore loaded it costs about a second of CPU per process, and
    # what it would run (atexit handlers, C++ static destructors) is not what the probes check.
    os._exit(0)


if __name__ == "__main__":
    main()
