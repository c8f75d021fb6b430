"""LD_PRELOAD: every library it names is really loaded into the process.

The dynamic loader loads LD_PRELOAD's libraries (separated by spaces or colons) into every process before
the program's own; one it cannot find or load is skipped with "ERROR: ld.so: object ... cannot be
preloaded ...: ignored." on stderr, and the process runs without it: the allocator, tracer or fix it was
meant to bring is silently absent. This probe's process started with the same LD_PRELOAD; the libraries in
its memory map (/proc/self/maps) are the ones the loader took.
"""
from __future__ import annotations

import os
import re
import struct
from typing import List, Optional, Set

MAPS = "/proc/self/maps"


def entries(value: str) -> List[str]:
    return [e for e in re.split(r"[\s:]+", value) if e]


def mapped_files(maps: str = MAPS) -> Set[str]:
    files = set()
    with open(maps, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/"):
                files.add(fields[5].strip())
    return files


def _elf_problem(path: str) -> Optional[str]:
    """Why the loader cannot preload an existing file into this (64-bit) process, or None."""
    try:
        with open(path, "rb") as f:
            ident = f.read(20)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    if ident[:4] != b"\x7fELF":
        return "it is not an ELF shared library"
    if ident[4] != (2 if struct.calcsize("P") == 8 else 1):
        return f"it is a {32 if ident[4] == 1 else 64}-bit library, and this process is {struct.calcsize('P') * 8}-bit"
    if len(ident) >= 18 and struct.unpack(("<" if ident[5] == 1 else ">") + "H", ident[16:18])[0] != 3:
        return "it is an ELF file but not a shared library"
    return None


def why_not_loaded(entry: str) -> str:
    if "/" not in entry:
        return "the loader finds no library of that name in its search path (LD_LIBRARY_PATH, ld.so.cache, /lib, /usr/lib)"
    if not os.path.exists(entry):
        return "no such file"
    return _elf_problem(entry) or "the loader could not load it (a dependency of it is missing, or its symbols conflict)"


def run(settings: dict) -> dict:
    value = os.environ.get("LD_PRELOAD", "")
    names = entries(value)
    if not names:
        return {"status": "skip", "summary": "LD_PRELOAD is not set", "details": {}}
    try:
        loaded = mapped_files()
    except OSError as exc:
        return {"status": "skip", "summary": f"cannot read {MAPS} to see what was preloaded ({exc.strerror})",
                "details": {"ld_preload": value}}
    loaded_real = {os.path.realpath(f) for f in loaded}
    loaded_names = {os.path.basename(f) for f in loaded}
    missing = []
    for name in names:
        taken = (os.path.realpath(name) in loaded_real) if "/" in name else (name in loaded_names)
        if not taken:
            missing.append({"entry": name, "why": why_not_loaded(name)})
    kept = [n for n in names if n not in {m["entry"] for m in missing}]
    details = {"ld_preload": value, "entries": names, "missing": missing}
    if not missing:
        return {"status": "pass", "summary": f"LD_PRELOAD: {', '.join(names)} loaded", "details": details}
    details["missing_text"] = "; ".join(f"{m['entry']}: {m['why']}" for m in missing)
    details["preload_fix"] = (f"export LD_PRELOAD='{' '.join(kept)}'    # keeps what loads" if kept else "unset LD_PRELOAD")
    return {"status": "warn", "summary": f"LD_PRELOAD names {len(missing)} librar{'y' if len(missing) == 1 else 'ies'} "
            f"the loader skipped: {details['missing_text']}", "details": details, "findings": ["preload-missing"]}
