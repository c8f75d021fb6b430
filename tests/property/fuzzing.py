"""What every reader's property test shares: inputs made from a valid file, and the one allowed failure.

A reader given any bytes either returns a valid result or raises its DataError, whose message is one
line naming the file; any other exception is a bug the test reports with the input that caused it.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from hypothesis import strategies as st

from ds2.errors import DataError

# Set by conftest.py from DS2_FUZZ_SECONDS: how long each test searches (0: one Hypothesis run).
SECONDS_PER_TEST = 0.0


def searches(test: Callable) -> Callable:
    """Run a Hypothesis test again and again (fresh random inputs each time) until its share of the fuzzing
    time is used; once when there is none. Put it above @given."""

    @functools.wraps(test)
    def search(*args, **kwargs):
        stop = time.monotonic() + SECONDS_PER_TEST
        test(*args, **kwargs)
        while time.monotonic() < stop:
            test(*args, **kwargs)

    search.searches_for = True
    return search


def outcome(read: Callable[[Path], Any], path: Path, data: bytes) -> Optional[Any]:
    """read(path) with path holding data: its result, or None when it raised a well-formed DataError."""
    path.write_bytes(data)
    try:
        return read(path)
    except DataError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        assert exc.path, f"the DataError names no file: {message}"
        return None


def truncations(valid: bytes) -> Iterator[bytes]:
    """Every prefix of valid, shorter than it (a file cut by a kill or a full disk)."""
    for length in range(len(valid)):
        yield valid[:length]


@st.composite
def mutations(draw, valid: bytes) -> bytes:
    """valid with one to four changes: a flipped byte, bytes inserted or deleted, a line deleted, repeated
    or replaced by random bytes."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "delete line", "repeat line", "random line"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        else:
            lines = bytes(data).split(b"\n")
            index = draw(st.integers(0, len(lines) - 1))
            if kind == "delete line":
                del lines[index]
            elif kind == "repeat line":
                lines.insert(index, lines[index])
            else:
                lines.insert(index, draw(st.binary(max_size=40)).replace(b"\n", b""))
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def random_bytes() -> st.SearchStrategy[bytes]:
    return st.binary(max_size=2048)
