"""Progress: a bar on a terminal; on a pipe or in a log file, plain lines at most every 10 s."""
import io

from ds2.progress import PLAIN_INTERVAL_S, PlainProgress, progress


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_plain_lines_at_most_every_interval_with_the_bars_fields():
    clock, stream = Clock(), io.StringIO()
    bar = PlainProgress(total=100, desc="training", unit="step", stream=stream, clock=clock)
    for _ in range(60):            # 60 steps, one every 0.5 s: 30 s of work
        clock.now += 0.5
        bar.set_postfix(epoch=0, loss="1.234")
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 30 // PLAIN_INTERVAL_S + 1       # every 10 s, and once at the end
    assert lines[0] == "training: 20 step of 100 step (20 %), 2 step/s, elapsed 00:10, left 00:40, epoch=0 loss=1.234"
    assert lines[-1].startswith("training: 60 step of 100 step (60 %)")
    assert "\r" not in stream.getvalue()


def test_bytes_are_shown_in_units_and_a_resumed_count_is_not_its_rate():
    clock, stream = Clock(), io.StringIO()
    bar = PlainProgress(total=3e9, desc="dev-clean.tar.gz", unit="B", initial=1e9, stream=stream, clock=clock)
    clock.now += 20
    bar.update(2e8)
    assert stream.getvalue().startswith("dev-clean.tar.gz: 1.2 GB of 3.0 GB (40 %), 10.0 MB/s, elapsed 00:20")


def test_disabled_or_idle_progress_prints_nothing():
    stream = io.StringIO()
    PlainProgress(total=5, desc="x", unit="it", stream=stream).close()
    bar = PlainProgress(total=5, desc="x", unit="it", disable=True, stream=stream, clock=Clock())
    bar.update(5)
    bar.close()
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_bar_and_anything_else_plain_lines():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert type(progress(10, stream=Terminal())).__name__ == "tqdm"
    assert isinstance(progress(10, stream=io.StringIO()), PlainProgress)
