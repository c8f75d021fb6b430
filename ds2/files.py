"""The one way ds2 writes a file, and the one lock a folder's writer holds.

Every file a command leaves behind (checkpoints and their sidecars, metrics, eval outputs, tuned-LM
settings, ARPA models, manifests, transcripts, the feature cache, stored configs, plots, exported
graphs, envcheck's report) is written here, so that:

- A file appears whole or not at all. The new content goes to a temporary name in the destination's
  folder, is fsynced, renamed over the destination, and the folder is fsynced: a crash, a SIGKILL or a
  full disk at any point leaves the old file or the new one, never part of one.
- A temporary name says what it is and who made it: `.<name>.tmp-<host>-<pid>-<random>` (a file, or a
  folder for writers that make files of their own, like MindSpore's save_checkpoint).
  It is removed when its write fails; `sweep(folder)`, run by every writing command at its start,
  removes the ones a killed process left (only ours: only names of that form, and only when their
  writer is gone, see sweep).
- A failure of the disk or the folder (full, read-only, no permission, I/O error, quota) is one line,
  WriteError (a UserError), naming the folder and what to do.
- metrics-style JSON lines are appended with one write each, and an append that fails is cut back,
  so the file never ends in half a record (append_line).
- Nothing non-finite reaches a JSON file: json_text writes NaN and infinities as null.

`hold(folder, command)` is the one-writer-per-folder lock: an flock on <folder>/.ds2.lock, released by
the kernel when its process ends however it ends, so a killed command never leaves a folder locked.

A plain module: standard library only, no command imports (envcheck uses it too).
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import socket
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Union

from ds2.errors import UserError

PathLike = Union[str, "os.PathLike[str]"]

LOCK_NAME = ".ds2.lock"
# A temporary file this old belongs to no live write even when its writer's pid cannot be checked (it
# ran on another host or in another container): every writer here writes continuously until its rename.
STALE_SECONDS = 3600
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<random>[0-9a-f]{8})$")

# What to do, per errno, when a write fails for a reason of the disk or the folder.
ADVICE = {
    errno.ENOSPC: "the disk is full: free space there (or write elsewhere) and run the command again",
    errno.EDQUOT: "the disk quota is used up: free space there (or write elsewhere) and run the command again",
    errno.EROFS: "the file system is read-only: mount it writable, or point the command at another folder",
    errno.EACCES: "this user may not write there: fix the folder's permissions, or point the command at "
                  "another folder",
    errno.EPERM: "this user may not write there: fix the folder's permissions, or point the command at "
                 "another folder",
    errno.EIO: "the disk reported an I/O error: check the disk (dmesg), then run the command again",
}


class WriteError(UserError):
    """A file could not be written (the disk or the folder refused); the message names the folder and the fix,
    `reason` is the system's word for what went wrong."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


class FolderInUse(UserError):
    """Another live process holds the folder's lock."""


def host_tag() -> str:
    """Eight hex digits naming this host (a container has its own hostname), so sweep can tell whether a
    temporary file's pid can be checked here."""
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{host_tag()}-{os.getpid()}-{os.urandom(4).hex()}")


def write_error(path: Path, exc: OSError) -> WriteError:
    advice = ADVICE.get(exc.errno, "check the folder and the disk, then run the command again")
    reason = exc.strerror or type(exc).__name__
    return WriteError(f"cannot write {path.name} in {path.parent}/ ({reason}): {advice}", reason)


def _fsync(path: Path) -> None:
    """Flush a file's content, or a folder's entries, to the disk."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Best effort: a temporary file or folder that cannot be removed now is swept later."""
    try:
        if path.is_dir() and not path.is_symlink():
            # A staging folder holds files only (what the library wrote): no need for rmtree's walk.
            for entry in os.scandir(path):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def _mode() -> int:
    """The permissions any file the user writes gets (mkstemp and some libraries give 0600 or 0400)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _make_folder(path: Path) -> None:
    if path.parent.is_dir():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from None


def _publish(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    _fsync(path.parent)


def _replace(path: PathLike, fill: Callable[[Path], Any]) -> Path:
    """Replace path with the file fill(tmp) makes at a temporary name beside it: published (fsync, rename,
    fsync the folder) when fill returns, removed when anything fails; an OSError becomes a WriteError."""
    path = Path(path)
    _make_folder(path)
    tmp = temp_path(path)
    try:
        fill(tmp)
        _publish(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise write_error(path, exc) from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _write_new_file(tmp: Path, data: bytes) -> None:
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, _mode())
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Replace path's content with data, atomically (see the module's docstring)."""
    return _replace(path, lambda tmp: _write_new_file(tmp, data))


def write_text(path: PathLike, text: str) -> Path:
    """Replace path's content with text (UTF-8), atomically."""
    return write_bytes(path, text.encode("utf-8"))


def finite(value: Any) -> Any:
    """value with every non-finite float (NaN, infinities) replaced by None, in nested lists and dicts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def json_text(value: Any, indent: Optional[int] = None) -> str:
    """Strict JSON (no NaN or Infinity, which JSON does not have): non-finite numbers become null."""
    return json.dumps(finite(value), indent=indent, allow_nan=False)


def write_json(path: PathLike, value: Any, indent: Optional[int] = 2) -> Path:
    """Replace path's content with value as strict JSON (json_text) and a newline, atomically."""
    return write_text(path, json_text(value, indent) + "\n")


def write_json_lines(path: PathLike, records: Iterable[Dict[str, Any]]) -> Path:
    """Replace path's content with one strict JSON object per line, atomically."""
    return write_text(path, "".join(json_text(record) + "\n" for record in records))


@contextmanager
def staging(path: PathLike) -> Iterator[Path]:
    """A private temporary folder beside path, removed on leaving, for writers that make files of their own
    (MindSpore's save_checkpoint and export, gzip): write there, then publish_file into place. Anything
    else such a writer leaves (MindSpore's own .tmp file) goes with the folder."""
    path = Path(path)
    _make_folder(path)
    work = temp_path(path)
    try:
        os.mkdir(work)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        yield work
    finally:
        _remove(work)


def write_with(path: PathLike, produce: Callable[[Path], Any]) -> Path:
    """Atomically replace path with the file produce(target) writes at `target` (in a staging folder)."""
    path = Path(path)
    with staging(path) as work:
        target = work / path.name
        try:
            produce(target)
        except OSError as exc:
            raise write_error(path, exc) from None
        return publish_file(target, path)


def publish_file(source: PathLike, path: PathLike) -> Path:
    """Move a finished file (e.g. one a library wrote into a folder of write_with's kind) over path,
    atomically: fsync, rename in path's folder, fsync the folder. source must be on path's file system."""
    source, path = Path(source), Path(path)
    try:
        os.chmod(source, _mode())
        _fsync(source)
        _publish(source, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    return path


def link_or_copy(source: PathLike, path: PathLike) -> Path:
    """Make path the same content as source, atomically: a hard link renamed into place, or a copy
    where the file system has no hard links."""
    source = Path(source)

    def link_or_write(tmp: Path) -> None:
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            _write_new_file(tmp, source.read_bytes())

    return _replace(path, link_or_write)


def append_line(path: PathLike, record: Dict[str, Any]) -> None:
    """Append record to a JSON-lines file as one strict JSON line.

    The line goes out in one write(2) and is fsynced; if the write is short or anything fails, the file
    is cut back to its length before, so it never ends in half a record that a reader would have to
    guess about. A file left ending without a newline (by a writer of another kind) is cut back to its
    last whole line first. Rewriting the whole file atomically would hold the same, at a cost growing
    with the file: metrics.jsonl gets a line every training step.
    """
    path = Path(path)
    line = (json_text(record) + "\n").encode("utf-8")
    _make_folder(path)
    try:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_APPEND, _mode())
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        size = os.fstat(fd).st_size
        try:
            size = _whole_lines_length(fd, size)
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise write_error(path, exc) from None
    finally:
        os.close(fd)


def _whole_lines_length(fd: int, size: int) -> int:
    """The length of the file's whole lines; the file is cut to it when it ends in part of one."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    block = 1 << 16
    end = size
    while end > 0:
        start = max(0, end - block)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            whole = start + newline + 1
            break
        end = start
    else:
        whole = 0
    os.ftruncate(fd, whole)
    return whole


# ---------------------------------------------------------------------------------------------
# Leftovers of killed writers


def _writer_state(match: "re.Match[str]") -> str:
    """"alive", "gone", or "unknown" (it ran on another host or in another container: its pid means
    nothing here) for the writer a temporary name names."""
    if match.group("host") != host_tag():
        return "unknown"
    pid = int(match.group("pid"))
    if pid == os.getpid():
        return "alive"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:  # alive, another user's
        return "alive"
    return "alive"


def sweep(*folders: PathLike, held: bool = False) -> int:
    """Remove the temporary files and folders killed writers left directly in each folder; the number
    removed. Folders that do not exist are skipped.

    Only names of TEMP_NAME's form are touched, and of those only ones whose writer is gone from this
    host, or that are older than STALE_SECONDS. held=True says the caller holds the lock that every
    writer of these folders takes (hold): then a writer of another host or container is gone too, and
    only a writer seen alive here keeps its file.
    """
    removed = 0
    now = time.time()
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            match = TEMP_NAME.match(entry.name)
            if not match:
                continue
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            state = _writer_state(match)
            if state == "gone" or (state == "unknown" and held) or (state != "alive" and age > STALE_SECONDS):
                _remove(Path(entry.path))
                removed += 1
    return removed


def inside(path: PathLike, folder: PathLike) -> bool:
    """True when path is folder or lies under it (both resolved)."""
    folder = Path(folder).resolve()
    path = Path(path).resolve()
    return path == folder or folder in path.parents


def sweep_tree(folder: PathLike, depth: int) -> int:
    """sweep(folder) and its subfolders down to `depth` levels (the feature cache's fan-out folders)."""
    removed = sweep(folder)
    if depth > 0:
        try:
            subfolders = [entry.path for entry in os.scandir(folder) if entry.is_dir(follow_symlinks=False)
                          and not TEMP_NAME.match(entry.name)]
        except OSError:
            return removed
        for sub in subfolders:
            removed += sweep_tree(sub, depth - 1)
    return removed


# ---------------------------------------------------------------------------------------------
# One writer per folder

_held: Dict[str, int] = {}  # folder -> the open lock file's descriptor, kept for the process's life


def hold(folder: PathLike, command: str) -> None:
    """Make this process the one ds2 writer of folder (created if missing) until it ends, and sweep the
    folder's leftovers. Another live holder: FolderInUse naming it. Holding a folder twice is a no-op."""
    import fcntl

    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _held:
        return
    lock = folder / LOCK_NAME
    if folder.exists() and not folder.is_dir():
        raise WriteError(f"{folder} is a file, not a folder: give a folder (for ds2 {command}), or move the file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(lock), os.O_RDWR | os.O_CREAT, _mode())
    except OSError as exc:
        raise write_error(lock, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        # The first line the holder wrote, cut short: the refusal stays one line whatever the file holds.
        written = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip().splitlines()
        holder = written[0][:200] if written else "another process"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise FolderInUse(f"{folder} is in use by {holder}; wait for it to finish, stop it, or use another "
                              f"folder") from None
        raise write_error(lock, exc) from None
    # Who holds it, for the refusal above. Written in place: the lock, not this text, is what counts.
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"ds2 {command} (pid {os.getpid()} on {socket.gethostname()}, started {started})\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise write_error(lock, exc) from None
    _held[key] = fd
    sweep(folder, held=True)


def release(folder: PathLike) -> None:
    """Give up a folder held by hold() (a process's end does the same)."""
    fd = _held.pop(os.path.realpath(Path(folder)), None)
    if fd is not None:
        os.close(fd)


def release_all() -> None:
    """Give up every folder this process holds (a command that ran in-process, e.g. in a test, is done)."""
    for folder in list(_held):
        release(folder)
