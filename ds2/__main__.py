"""`python -m ds2 <command>`: one entry point for every stage.

Each stage lives in its own module exposing `add_arguments(parser)` and `run(cfg, args) -> int`;
this file only parses the shared options (preset, config file, overrides) and dispatches.
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
    "eval": ("ds2.evaluate", "decode a manifest with a checkpoint and report WER / CER"),
    "transcribe": ("ds2.transcribe", "transcribe one audio file with a checkpoint"),
    "manifest": ("ds2.data.manifest", "convert manifests between the JSON and CSV forms"),
    "convert": ("ds2.convert", "convert a model-zoo or deepspeech.pytorch checkpoint into a ds2 checkpoint"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ds2", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--preset", default="small", help="config preset: small (default) or seed")
        p.add_argument("--config", metavar="FILE", help="YAML file overriding the preset")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config value, e.g. --set train.lr=1e-3 (repeatable)")
        importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from ds2.config import load_config

    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.preset, args.config, args.overrides)
    except (ValueError, OSError) as exc:
        print(f"ds2 {args.command}: bad configuration: {exc}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(cfg, args) or 0)


if __name__ == "__main__":
    sys.exit(main())
