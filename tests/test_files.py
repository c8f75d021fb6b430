"""ds2.files: every writer leaves the old content or the new, never part of one, whatever fails where.

The fault-injection test does not list failure points: for each writer, each system call it makes
that can fail (open, write, fsync, mkdir, link, rename) and each errno a disk gives (ENOSPC, EIO,
EROFS), it fails the 1st call, then the 2nd, ... until the writer runs through without meeting the
failure, and checks every outcome.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ds2 import files

REPO = Path(__file__).resolve().parent.parent
OLD = b'{"step": 1}\n'
NEW = b'{"step": 2, "loss": 0.5}\n'


def produce_with_os_write(target: Path) -> None:
    """A writer of write_with's kind that writes through os.write, so injected write failures reach it."""
    fd = os.open(str(target), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, NEW[:7])
        os.write(fd, NEW[7:])
    finally:
        os.close(fd)


# name -> (write NEW into the destination, the destination's content afterwards)
WRITERS = {
    "write_bytes": (lambda path: files.write_bytes(path, NEW), NEW),
    "write_text": (lambda path: files.write_text(path, NEW.decode()), NEW),
    "write_json": (lambda path: files.write_json(path, {"step": 2, "loss": 0.5}, indent=None), NEW),
    "write_json_lines": (lambda path: files.write_json_lines(path, [{"step": 2, "loss": 0.5}]), NEW),
    "write_with": (lambda path: files.write_with(path, produce_with_os_write), NEW),
    "link_or_copy": (lambda path: files.link_or_copy(path.with_name("source"), path), NEW),
    "append_line": (lambda path: files.append_line(path, {"step": 2, "loss": 0.5}), OLD + NEW),
}
SYSTEM_CALLS = ["open", "write", "fsync", "mkdir", "link", "replace"]
ERRNOS = [errno.ENOSPC, errno.EIO, errno.EROFS]


class Injected(Exception):
    pass


def fail_call(monkeypatch, name: str, index: int, code: int) -> list:
    """Make the index-th call (from 0) of os.<name> raise OSError(code); returns the list of calls made."""
    real = getattr(os, name)
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) - 1 == index:
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)
    monkeypatch.setattr(os, name, failing)
    return calls


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("call", SYSTEM_CALLS)
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_failure_at_any_call_leaves_old_or_new_content_no_temporary_file_and_one_line(
        tmp_path, monkeypatch, writer, call, code):
    write, new_content = WRITERS[writer]
    index = 0
    while True:
        folder = tmp_path / f"attempt-{index}"
        folder.mkdir()
        destination = folder / "metrics.jsonl"
        destination.write_bytes(OLD)
        (folder / "source").write_bytes(NEW)
        expected_names = sorted(os.listdir(folder))
        with monkeypatch.context() as patch:
            calls = fail_call(patch, call, index, code)
            try:
                write(destination)
                failed = None
            except files.WriteError as exc:
                failed = exc
        assert destination.read_bytes() in (OLD, new_content), f"partial content after failing {call} #{index}"
        assert sorted(os.listdir(folder)) == expected_names, f"a temporary file was left after failing {call} #{index}"
        if failed is None:
            assert len(calls) <= index, f"the failure of {call} #{index} was swallowed"
            assert destination.read_bytes() == new_content
            break
        message = str(failed)
        assert "\n" not in message and str(folder) in message and os.strerror(code) in message
        index += 1


def test_the_search_reaches_every_call_of_a_writer(monkeypatch, tmp_path):
    """The fault-injection test stops at the first run that does not meet the failure: check that a
    writer's calls are really counted (a writer that bypassed os would make that test vacuous)."""
    counted = {name: fail_call(monkeypatch, name, -1, errno.EIO) for name in ("write", "fsync", "replace")}
    files.write_bytes(tmp_path / "f", NEW)
    assert [len(counted[name]) for name in ("write", "fsync", "replace")] == [1, 2, 1]


def test_a_write_error_names_the_folder_and_what_to_do(tmp_path, monkeypatch):
    fail_call(monkeypatch, "write", 0, errno.ENOSPC)
    with pytest.raises(files.WriteError) as caught:
        files.write_text(tmp_path / "config.yaml", "a: 1\n")
    assert str(caught.value) == (f"cannot write config.yaml in {tmp_path}/ (No space left on device): the disk is "
                                 f"full: free space there (or write elsewhere) and run the command again")


def test_a_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    if os.access(folder, os.W_OK):
        pytest.skip("running as root: no folder is read-only to us")
    with pytest.raises(files.WriteError, match=f"cannot write a.json in {folder}/ .*permissions"):
        files.write_json(folder / "a.json", {})


def test_json_never_holds_nan_or_infinity(tmp_path):
    files.write_json(tmp_path / "a.json", {"loss": float("nan"), "lr": [float("inf"), 1.0]})
    files.append_line(tmp_path / "m.jsonl", {"loss": float("-inf")})
    assert json.loads((tmp_path / "a.json").read_text()) == {"loss": None, "lr": [None, 1.0]}
    assert (tmp_path / "m.jsonl").read_text() == '{"loss": null}\n'


def test_an_append_after_a_cut_off_line_cuts_it_first(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(OLD + b'{"step": 2, "lo')
    files.append_line(path, {"step": 2})
    assert path.read_bytes() == OLD + b'{"step": 2}\n'
    path.write_bytes(b'{"st')
    files.append_line(path, {"step": 1})
    assert path.read_bytes() == b'{"step": 1}\n'


def test_a_short_append_is_cut_back(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(OLD)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:5]))
    with pytest.raises(files.WriteError, match="No space left"):
        files.append_line(path, {"step": 2})
    assert path.read_bytes() == OLD


def test_a_failing_library_writer_leaves_nothing(tmp_path):
    """What a writer of write_with's kind leaves beside its file (MindSpore's own .tmp) goes too."""
    (tmp_path / "step-1.ckpt").write_bytes(OLD)

    def partial_then_full(target: Path) -> None:
        target.with_name(target.name + ".tmp").write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(files.WriteError):
        files.write_with(tmp_path / "step-1.ckpt", partial_then_full)
    assert os.listdir(tmp_path) == ["step-1.ckpt"] and (tmp_path / "step-1.ckpt").read_bytes() == OLD


# ---------------------------------------------------------------------------------------------
# sweep


def a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def temporary_name(name: str, pid: int, host: str = "") -> str:
    return f".{name}.tmp-{host or files.host_tag()}-{pid}-0123abcd"


def test_sweep_removes_what_dead_writers_left_and_nothing_else(tmp_path):
    dead = a_dead_pid()
    left_file = tmp_path / temporary_name("metrics.jsonl", dead)
    left_folder = tmp_path / temporary_name("step-0000010.ckpt", dead)
    live = tmp_path / temporary_name("curves.png", os.getppid())
    elsewhere_young = tmp_path / temporary_name("a.json", dead, host="00000000")
    elsewhere_old = tmp_path / temporary_name("b.json", dead, host="00000000")
    not_ours = [tmp_path / ".hidden", tmp_path / "x.tmp", tmp_path / ".tmp-step-1.ckpt", tmp_path / "data.json"]
    left_folder.mkdir()
    (left_folder / "step-0000010.ckpt.tmp").write_bytes(b"half")
    for path in [left_file, live, elsewhere_young, elsewhere_old] + not_ours:
        path.write_bytes(b"x")
    hours_ago = time.time() - 2 * files.STALE_SECONDS
    os.utime(elsewhere_old, (hours_ago, hours_ago))
    assert files.sweep(tmp_path, tmp_path / "missing") == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [live, elsewhere_young] + not_ours)


def test_a_sweep_under_the_folders_lock_removes_what_other_containers_left(tmp_path):
    """Every writer of a held folder holds its lock: a writer whose pid cannot be checked here (another
    container) is gone; one seen alive here keeps its file."""
    elsewhere = tmp_path / temporary_name("step-0000010.ckpt", 1234, host="00000000")
    live = tmp_path / temporary_name("curves.png", os.getppid())
    for path in (elsewhere, live):
        path.write_bytes(b"x")
    assert files.sweep(tmp_path) == 0
    assert files.sweep(tmp_path, held=True) == 1
    assert [p.name for p in tmp_path.iterdir()] == [live.name]


def test_a_temporary_name_planted_as_a_link_is_removed_not_followed(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "model.ckpt").write_bytes(b"keep")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / temporary_name("step-1.ckpt", a_dead_pid())).symlink_to(target)
    assert files.sweep(folder, held=True) == 1
    assert list(folder.iterdir()) == [] and (target / "model.ckpt").read_bytes() == b"keep"


def test_sweep_tree_reaches_the_feature_cache_fan_out(tmp_path):
    deep = tmp_path / "features" / "0f3a" / "ab"
    deep.mkdir(parents=True)
    left = deep / temporary_name("ab12.npy", a_dead_pid())
    left.write_bytes(b"x")
    assert files.sweep_tree(tmp_path / "features", depth=1) == 0 and left.exists()
    assert files.sweep_tree(tmp_path / "features", depth=2) == 1 and not left.exists()


def test_a_writers_temporary_name_is_one_sweep_recognises(tmp_path):
    name = files.temp_path(tmp_path / "step-0000010.ckpt").name
    match = files.TEMP_NAME.match(name)
    assert match and match.group("name") == "step-0000010.ckpt" and int(match.group("pid")) == os.getpid()


# ---------------------------------------------------------------------------------------------
# hold: one writer per folder


HOLDER = "import sys, time; from ds2 import files; files.hold(sys.argv[1], 'train'); print('held', flush=True); time.sleep(60)"


@pytest.fixture
def other_holder(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield folder, holder
    holder.kill()
    holder.wait()
    files.release(folder)


def test_a_second_writer_is_refused_in_one_line_naming_the_holder(other_holder):
    folder, holder = other_holder
    with pytest.raises(files.FolderInUse) as caught:
        files.hold(folder, "eval")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{folder} is in use by ds2 train (pid {holder.pid} on ")
    assert "started" in message


def test_a_refusal_stays_one_line_whatever_the_lock_file_holds(other_holder):
    folder, _ = other_holder
    (folder / files.LOCK_NAME).write_text("ds2 train (pid 1)\n" + "x" * 5000 + "\nmore\n")
    with pytest.raises(files.FolderInUse) as caught:
        files.hold(folder, "eval")
    assert str(caught.value).startswith(f"{folder} is in use by ds2 train (pid 1); ")


def test_a_killed_holder_leaves_the_folder_free(other_holder):
    folder, holder = other_holder
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    files.hold(folder, "train")
    files.hold(folder, "train")  # holding it again is a no-op
    assert f"ds2 train (pid {os.getpid()} " in (folder / files.LOCK_NAME).read_text()


def test_holding_a_file_is_one_line(tmp_path):
    (tmp_path / "run").write_text("")
    with pytest.raises(files.WriteError, match=f"^{tmp_path / 'run'} is a file, not a folder: give a folder"):
        files.hold(tmp_path / "run", "train")


def test_holding_a_folder_sweeps_it(tmp_path):
    left = tmp_path / temporary_name("config.yaml", a_dead_pid())
    left.write_bytes(b"x")
    try:
        files.hold(tmp_path, "train")
    finally:
        files.release(tmp_path)
    assert not left.exists()
