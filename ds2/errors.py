"""The one exception type a user's mistake becomes.

A UserError's message is one line that says what is wrong with what the user gave (a file, an option,
a config value, the order of the stages) and how to fix it. `python -m ds2` prints it as
"ds2 <command>: <message>" and exits 1, never with a traceback. Anything else that escapes a command is
a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave; the message names the fix."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library errors run to pages), or its type."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
