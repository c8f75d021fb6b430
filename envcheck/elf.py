"""Read what a shared library needs, and which GPUs its CUDA kernels were built for, from its ELF file.

    dynamic_entries(path)  -> {"needed": [...], "rpath": [...], "runpath": [...]}  (DT_NEEDED etc.)
    cuda_architectures(path) -> {"sass": [60, 70, ...], "ptx": [60, 86]}  from the .nv_fatbin section

Reading the file instead of running `ldd` works without binutils and without executing the loader,
and keeps what the library asks for apart from what this machine happens to provide.
"""
from __future__ import annotations

import struct
from typing import BinaryIO, Dict, List, Tuple

SHT_DYNAMIC = 6
DT_NULL, DT_NEEDED, DT_RPATH, DT_RUNPATH = 0, 1, 15, 29
FATBIN_MAGIC = 0xBA55ED50
FATBIN_KIND_PTX, FATBIN_KIND_ELF = 1, 2


class ELFError(ValueError):
    pass


def _sections(f: BinaryIO) -> Tuple[str, bool, List[dict]]:
    """(struct byte order, is 64-bit, section headers) of the ELF file open in f."""
    ident = f.read(16)
    if ident[:4] != b"\x7fELF":
        raise ELFError("not an ELF file")
    is64 = ident[4] == 2
    order = "<" if ident[5] == 1 else ">"
    f.seek(0)
    header = f.read(64)
    if is64:
        shoff = struct.unpack_from(order + "Q", header, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", header, 0x3A)
        layout = order + "IIQQQQIIQQ"
    else:
        shoff = struct.unpack_from(order + "I", header, 0x20)[0]
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", header, 0x2E)
        layout = order + "IIIIIIIIII"
    if shoff == 0 or shnum == 0:
        raise ELFError("no section headers")
    f.seek(shoff)
    raw = f.read(shentsize * shnum)
    sections = []
    for i in range(shnum):
        name, kind, _, _, offset, size, link, _, _, entsize = struct.unpack_from(layout, raw, i * shentsize)
        sections.append({"name_offset": name, "type": kind, "offset": offset, "size": size, "link": link,
                         "entsize": entsize})
    names = _read(f, sections[shstrndx]["offset"], sections[shstrndx]["size"])
    for section in sections:
        section["name"] = _cstring(names, section["name_offset"])
    return order, is64, sections


def _read(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def _cstring(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")


def dynamic_entries(path: str) -> Dict[str, List[str]]:
    with open(path, "rb") as f:
        order, is64, sections = _sections(f)
        dynamic = next((s for s in sections if s["type"] == SHT_DYNAMIC), None)
        if dynamic is None:
            raise ELFError("no dynamic section (a static binary?)")
        strings = _read(f, sections[dynamic["link"]]["offset"], sections[dynamic["link"]]["size"])
        data = _read(f, dynamic["offset"], dynamic["size"])
    entry = order + ("qQ" if is64 else "iI")
    size = struct.calcsize(entry)
    found: Dict[str, List[str]] = {"needed": [], "rpath": [], "runpath": []}
    for i in range(0, len(data) - size + 1, size):
        tag, value = struct.unpack_from(entry, data, i)
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            found["needed"].append(_cstring(strings, value))
        elif tag == DT_RPATH:
            found["rpath"] += [p for p in _cstring(strings, value).split(":") if p]
        elif tag == DT_RUNPATH:
            found["runpath"] += [p for p in _cstring(strings, value).split(":") if p]
    return found


def cuda_architectures(path: str) -> Dict[str, List[int]]:
    """SM versions with machine code (sass) and with PTX in the library's CUDA fat binaries."""
    sass, ptx = set(), set()
    with open(path, "rb") as f:
        order, _, sections = _sections(f)
        fatbin = next((s for s in sections if s["name"] == ".nv_fatbin"), None)
        if fatbin is None:
            return {"sass": [], "ptx": []}
        position, end = fatbin["offset"], fatbin["offset"] + fatbin["size"]
        while position + 16 <= end:
            magic, _, header_size, body_size = struct.unpack(order + "IHHQ", _read(f, position, 16))
            if magic != FATBIN_MAGIC:
                position += 8  # fat binaries are 8-byte aligned inside the section
                continue
            entry, body_end = position + header_size, position + header_size + body_size
            while entry + 32 <= body_end:
                head = _read(f, entry, 32)
                kind, _, entry_header_size, entry_size = struct.unpack_from(order + "HHIQ", head, 0)
                arch = struct.unpack_from(order + "I", head, 28)[0]
                (ptx if kind == FATBIN_KIND_PTX else sass if kind == FATBIN_KIND_ELF else set()).add(arch)
                if entry_header_size + entry_size == 0:
                    break
                entry += entry_header_size + entry_size
            position = body_end
    return {"sass": sorted(sass), "ptx": sorted(ptx)}
