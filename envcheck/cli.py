"""The envcheck command: run the probes for a stage, diagnose, print the report, exit 0/1/2/3.

envcheck/__main__.py runs it (`python -m envcheck`, and the `envcheck` command a pip install makes) after
setting envcheck's own import path."""
from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
import time
import traceback
from typing import List, Optional

from ds2.config import add_options
from envcheck import compat, diagnose, report, runner, settings
from envcheck.probes import PREPROCESS, STAGES, select
from envcheck.result import FAIL


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line that names the problem. argparse exits 2 on bad usage, which here means "warnings
        # only"; bad usage is exit 3.
        self.exit(report.EXIT_ENVCHECK_FAILED, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    command = "envcheck" if os.path.basename(sys.argv[0] or "") == "envcheck" else "python -m envcheck"
    parser = _Parser(prog=command,
                     description="Check that this environment can run a ds2 stage; explain what is wrong and how "
                                 "to fix it. Exit 0 ready, 1 blocking problem, 2 warnings only, 3 envcheck failed.")
    parser.add_argument("--stage", choices=STAGES, help="check only what this stage needs (default: everything)")
    parser.add_argument("--json", metavar="FILE", nargs="?", const="-",
                        help="the report as JSON (schema: envcheck/__init__.py): on standard output, or written to "
                             "FILE while the text report goes to standard output")
    parser.add_argument("--python", metavar="PATH", default=sys.executable,
                        help="interpreter to check (default: the one running envcheck)")
    parser.add_argument("--timeout", metavar="S", type=float,
                        help="time limit for every probe in seconds (default: each probe's own, 60-300 s)")
    parser.add_argument("--host", action="store_true",
                        help="also check this host's Docker engine, Compose v2 plugin and NVIDIA runtime")
    add_options(parser)  # --preset, --config, --set: exactly as the stage takes them
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="also check that this ds2/MindSpore checkpoint loads into the model the stage builds "
                             "(stages train and eval; a missing or broken file is a FAIL, like a broken --config)")
    parser.add_argument("--only", metavar="PATTERN", action="append", default=[],
                        help="run only probes whose id matches this glob, e.g. 'import.*' (repeatable)")
    return parser


def _resolve_python(name: str):
    """(absolute interpreter path, None) or (None, why it cannot be the interpreter under test)."""
    path = shutil.which(name) if os.sep not in name else name
    if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
        return None, f"--python {name}: not an executable file"
    # The probes' own code needs Python 3.9+ (the project's version); anything older would fail every probe.
    try:
        proc = subprocess.run([path, "-c", "import sys; print(sys.version.split()[0]); sys.exit(sys.version_info < (3, 9))"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"--python {name}: does not start ({exc})"
    if proc.returncode < 0:
        said = (proc.stderr.strip().splitlines() or [""])[0]
        return None, (f"--python {name}: crashed at startup with {runner.signal_name(proc.returncode)}"
                      + (f" ({said})" if said else "") + "; it cannot run any check")
    if proc.returncode == 1 and proc.stdout.strip():
        return None, f"--python {name}: is Python {proc.stdout.strip()}; the checks need Python 3.9 or newer"
    if proc.returncode != 0:
        said = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[0]
        return None, f"--python {name}: fails at startup: {said}"
    return os.path.abspath(path), None


def run(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    python, problem = _resolve_python(args.python)
    if problem:
        parser.error(problem)
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.json not in (None, "-"):
        unwritable = report.cannot_write(args.json)
        if unwritable:
            parser.error(f"--json {args.json}: {unwritable}")
    if args.checkpoint is not None and args.stage == PREPROCESS:
        parser.error("--checkpoint applies to --stage train or eval (or no --stage); preprocess loads no checkpoint")
    rules = diagnose.load_rules()
    probes = select(args.stage, args.host, checkpoint=args.checkpoint is not None)
    if args.only:
        probes = [p for p in probes if any(fnmatch.fnmatchcase(p.id, pattern) for pattern in args.only)]
        if not probes:
            parser.error(f"--only {' '.join(args.only)} matches no probe of this stage")

    start = time.monotonic()
    probe_settings, config_result = settings.load(args.stage, args.preset, args.config, args.overrides,
                                                  args.checkpoint)
    if config_result.status == FAIL:
        # The stage would stop at the same configuration; the probes would check another one.
        diagnose.diagnose([config_result], rules)
        sys.stderr.write(f"envcheck: {config_result.summary}\n")
        results = [config_result]
    else:
        results = [config_result] + runner.run_probes(probes, probe_settings, python, args.timeout)
        diagnose.diagnose(results, rules)
        results += compat.check(results)  # the installed mindspore + numpy + numba vs the measured matrix
    duration = time.monotonic() - start

    as_json = report.to_json(results, args.stage, python, args.host, duration) + "\n"
    if args.json not in (None, "-"):
        report.write_file(args.json, as_json)
    if args.json == "-":
        _print(as_json)
    elif config_result.status != FAIL:
        _print(report.to_text(results, args.stage, python, duration))
    return report.exit_code(results)


def _print(text: str) -> None:
    """Write to standard output. A reader that has gone (`envcheck | head -1`) ends the output quietly: the
    verdict is still the exit status."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        # Point stdout at /dev/null, so the interpreter's own flush at exit has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        if not isinstance(exc, BrokenPipeError):
            raise report.OutputError(f"cannot write the report to standard output: {exc.strerror or exc}") from None


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return run(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad usage (3)
        return exc.code if isinstance(exc.code, int) else report.EXIT_ENVCHECK_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("envcheck interrupted; running probes were stopped\n")
        return report.EXIT_INTERRUPTED
    except report.OutputError as exc:  # a full disk, a file system gone read-only: the report is not written
        sys.stderr.write(f"envcheck: {exc}\n")
        return report.EXIT_ENVCHECK_FAILED
    except BaseException:  # envcheck's own bug or a malformed rule file: say so, distinctly from a FAIL
        sys.stderr.write("envcheck crashed (this is a bug in envcheck, not a finding about the environment):\n")
        traceback.print_exc()
        return report.EXIT_ENVCHECK_FAILED

