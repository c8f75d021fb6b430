"""Progress of long work: a bar on a terminal, plain lines on a pipe or in a log file.

A bar that redraws itself with carriage returns fills a log file with thousands of partial lines; where
stderr is not a terminal, `progress()` prints one plain line with the same fields (done / total, rate,
time left, the latest figures) at most every PLAIN_INTERVAL_S seconds, and one when the work ends.
"""
from __future__ import annotations

import sys
import time
from typing import Optional

PLAIN_INTERVAL_S = 10.0


def _amount(value: float, unit: str) -> str:
    if unit == "B":
        for size, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if value >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.0f} B"
    return f"{value:g} {unit}" if isinstance(value, float) else f"{value} {unit}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class PlainProgress:
    """The subset of tqdm's interface ds2 uses, printing plain lines."""

    def __init__(self, total: Optional[float], desc: str, unit: str, initial: float = 0,
                 disable: bool = False, stream=None, interval_s: float = PLAIN_INTERVAL_S, clock=time.monotonic):
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.n = self.start_n = initial
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.clock = clock
        self.start = self.last_print = clock()
        self.postfix = ""

    def line(self) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = (self.n - self.start_n) / elapsed
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.total:
            parts.append(f"{_amount(self.n, self.unit)} of {_amount(self.total, self.unit)} "
                         f"({100.0 * self.n / self.total:.0f} %)")
        else:
            parts.append(_amount(self.n, self.unit))
        parts.append(f", {_amount(round(rate, 2), self.unit)}/s, elapsed {_duration(elapsed)}")
        if self.total and rate > 0:
            parts.append(f", left {_duration((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(f", {self.postfix}")
        return "".join(parts)

    def update(self, n: float = 1) -> None:
        self.n += n
        now = self.clock()
        if not self.disable and now - self.last_print >= self.interval_s:
            self.last_print = now
            print(self.line(), file=self.stream, flush=True)

    def set_postfix(self, **values) -> None:
        self.postfix = " ".join(f"{key}={value}" for key, value in values.items())

    def write(self, message: str) -> None:
        print(message, flush=True)

    def close(self) -> None:
        if not self.disable and self.n != self.start_n:
            print(self.line(), file=self.stream, flush=True)
            self.disable = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(total: Optional[float], desc: str = "", unit: str = "it", initial: float = 0, disable: bool = False,
             stream=None):
    """A tqdm bar when `stream` (stderr) is a terminal, else a PlainProgress."""
    stream = stream or sys.stderr
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc or None, unit=unit, initial=initial, disable=disable, file=stream,
                    dynamic_ncols=True, unit_scale=unit == "B")
    return PlainProgress(total, desc, unit, initial, disable, stream)
