"""The exception types a user's mistake, or a file that cannot be read, becomes.

A UserError's message is one line that says what is wrong with what the user gave (a file, an option,
a config value, the order of the stages) and how to fix it. `python -m ds2` prints it as
"ds2 <command>: <message>" and exits 1, never with a traceback. Anything else that escapes a command is
a bug and keeps its traceback.

A DataError is the UserError of every reader (manifests, audio, ARPA models, checkpoints and their
sidecars, metrics.jsonl, the feature cache, YAML configs, tar archives, torch pickles): a file, or one
entry of it, that is not what it should be. It names the file, the place in it (a line, an archive
member, a byte offset, a sample) when one is known, what is wrong, and the fix. Readers raise it and
nothing else on malformed input; a reader of a file of many entries counts, names and skips the bad
entries instead, and raises DataError only when no entry is usable.
"""
from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any, Optional, Union

# A problem quoted from a library (a JSON or YAML parser, libsndfile, zlib) is cut to this many characters.
MAX_PROBLEM_CHARS = 300


class UserError(Exception):
    """A mistake in what the user gave; the message names the fix."""


def one_line(text: str, limit: int = MAX_PROBLEM_CHARS) -> str:
    """text on one line (line breaks and runs of spaces become one space), cut to `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


class DataError(UserError, ValueError):
    """A file, or a part of one, that cannot be read as what it should be.

    str(error) is one line: "<file> (<place>): <problem>; <fix>". The parts stay available as
    attributes (path, place, problem, fix) for callers that count and name bad entries.
    """

    def __init__(self, path: Union[str, PurePath, None], problem: str, fix: str = "",
                 place: Optional[str] = None):
        self.path = "" if path is None else one_line(str(path), limit=4096)
        self.place = one_line(place) if place else None
        self.problem = one_line(problem)
        self.fix = one_line(fix)
        where = self.path + (f" ({self.place})" if self.place else "")
        message = f"{where}: {self.problem}" if where else self.problem
        super().__init__(message + (f"; {self.fix}" if self.fix else ""))

    def __reduce__(self):   # picklable across the data-loader's worker processes
        return (type(self), (self.path, self.problem, self.fix, self.place))


def finite_number(value: Any) -> bool:
    """Whether a value read from a file (JSON, YAML) is a number usable as a float: not a bool, not NaN or
    infinity, and not an integer too large for a float (JSON holds any number of digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library errors run to pages), or its type."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
