"""`python -m ds2 <command>`: one entry point for every stage.

Each stage lives in its own module exposing `add_arguments(parser)` and `run(cfg, args) -> int`;
this file only parses the shared options (ds2.config.add_options: preset, config file, overrides),
dispatches, and turns a user's mistake (ds2.errors.UserError, or an OSError naming a file) into one
line and exit status 1.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# command -> (module, one-line help). Modules are imported only when their command runs, so
# `ds2 preprocess --help` does not pay for importing MindSpore.
COMMANDS = {
    "preprocess": ("ds2.preprocess", "build the corpus (synthetic or LibriSpeech) and write manifests"),
    "train": ("ds2.train", "train (or resume) a model; writes checkpoints, metrics and a plot"),
    "lm": ("ds2.build_lm", "build an n-gram LM from the training transcripts, or download LibriSpeech's"),
    "tune-lm": ("ds2.tune_lm", "choose the LM weight and word bonus on dev; eval and transcribe then use them"),
    "eval": ("ds2.evaluate", "decode a manifest with a checkpoint and report WER / CER"),
    "transcribe": ("ds2.transcribe", "transcribe audio files with a checkpoint"),
    "manifest": ("ds2.manifest_command", "convert manifests between the JSON and CSV forms"),
    "convert": ("ds2.convert", "convert a model-zoo or deepspeech.pytorch checkpoint into a ds2 checkpoint"),
    "export": ("ds2.export", "export a checkpoint's model as a MindIR graph (verified against the checkpoint)"),
    "serve": ("ds2.serve", "serve a checkpoint over HTTP: OpenAI's transcription API and a web page"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from ds2.config import add_options

    parser = _Parser(prog="ds2", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_options(p)
        importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from ds2.config import from_options
    from ds2.errors import UserError
    from ds2.files import release_all

    try:
        parser = build_parser()
    except ImportError as exc:  # a broken environment: envcheck is the tool that explains it
        print(f"ds2: cannot import {exc.name or 'a module'} ({exc}); `python -m envcheck` says why and how to "
              f"fix it", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    try:
        cfg = from_options(args)
        module = importlib.import_module(COMMANDS[args.command][0])
        try:
            return int(module.run(cfg, args) or 0)
        finally:
            release_all()   # the folders the command held (ds2.files.hold)
    except UserError as exc:
        print(f"ds2 {args.command}: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"ds2 {args.command}: cannot import {exc.name or 'a module'} ({exc}); `python -m envcheck --stage "
              f"{args.command}` says why and how to fix it", file=sys.stderr)
        return 1
    except OSError as exc:  # a file or folder the user named: missing, not writable, disk full
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in str(exc.strerror) else ""
        print(f"ds2 {args.command}: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ds2 {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
