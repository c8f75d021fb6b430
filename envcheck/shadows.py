"""Which file Python will import for a module, and whether that file shadows the environment's own copy.

Python imports the first match along sys.path, and `python -m ds2` puts the working directory first,
then PYTHONPATH, then the standard library and site-packages (then directories that .pth files add).
A `numpy.py` in the working directory, a package directory on PYTHONPATH, or a path a .pth file adds
ahead of site-packages therefore replaces the installed module for every import, ds2's and its
dependencies' alike.

    find(name)            the Shadow Python would import for top-level module `name`, or None when it
                          imports the environment's own copy (the standard library or site-packages),
                          a built-in module, a real installation placed outside it on purpose (a
                          directory holding the distribution's metadata), or nothing at all
    loaded(skip, text)    Shadows among the modules this process has imported, and in_traceback(text)
    in_traceback(text)    Shadows among the modules whose files a traceback names (a shadow that raised
                          is no longer imported)

Standard library only: it runs in envcheck's own process and inside probes of any interpreter.
"""
from __future__ import annotations

import functools
import importlib.machinery
import os
import re
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Dict, Iterable, List, Optional, Set

from envcheck import syspath

# The project's own packages: a checkout in the working directory is ds2 itself, not a shadow.
OWN = {"ds2", "envcheck"}
WORKING_DIRECTORY = "the working directory"
_TRACEBACK_FILE = re.compile(r'^\s*File "([^"<>]+)", line \d+', re.MULTILINE)


@dataclass
class Shadow:
    module: str             # top-level module name
    file: str               # what Python imports: the module file or the package directory
    entry: str              # the sys.path entry it is found in
    via: str                # how that entry is on sys.path: WORKING_DIRECTORY, "PYTHONPATH", a .pth file, "sys.path"
    hides: Optional[str]    # the environment's own copy it hides, or None when the environment has none

    def _place(self):
        """(where the file is, in words, and the fix for a file there)."""
        move = f"rename or move {self.file}"
        if self.via == WORKING_DIRECTORY:
            return f"{self.file} in the working directory", f"{move.capitalize()}, or work in another directory"
        if self.via == "PYTHONPATH":
            return (f"{self.file} on PYTHONPATH",
                    f"Take {self.entry} off PYTHONPATH (unset PYTHONPATH, or set it without that directory), or {move}")
        if self.via.endswith(".pth"):
            return (f"{self.file} (its directory is on sys.path through {self.via})",
                    f"Delete the line naming {self.entry} from {self.via}, or {move}")
        return f"{self.file} (its directory was put on sys.path at run time)", move.capitalize()

    def describe(self) -> str:
        where = self._place()[0]
        if self.hides:
            whose = "the standard library's" if in_stdlib(self.hides) else "the installed"
            return f"{self.module}: {where} shadows {whose} {self.module} ({self.hides})"
        return f"{self.module}: {where} is not an installed package, and this environment has no {self.module}"

    def fix(self) -> str:
        step = self._place()[1]
        if not self.hides:
            step += "; then install the real one: python -m pip install --require-hashes -r docker/requirements/cpu.lock"
        return step

    def to_json(self) -> dict:
        return asdict(self)


def _real(path: str) -> str:
    return os.path.realpath(path or os.curdir)


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


@functools.lru_cache(maxsize=None)
def site_directories() -> List[str]:
    """This environment's install locations: site-packages (or dist-packages) and the user site."""
    return syspath.site_directories()


@functools.lru_cache(maxsize=None)
def _stdlib_directories() -> List[str]:
    return syspath.stdlib_directories()


def _forms(path: str) -> Set[str]:
    """The path as written (absolute) and with its links resolved: a Debian stdlib links sitecustomize.py
    to /etc, and a venv's lib64 is a link to lib."""
    return {os.path.abspath(path or os.curdir), _real(path)}


def in_stdlib(path: str) -> bool:
    """True for a path in the standard library (a site-packages below its directory is not)."""
    for form in _forms(path):
        for stdlib in _stdlib_directories():
            if _under(form, stdlib) and \
                    os.path.relpath(form, stdlib).split(os.sep)[0] not in ("site-packages", "dist-packages"):
                return True
    return False


def in_environment(path: str) -> bool:
    """True for a path inside the standard library or one of this environment's site directories."""
    return any(_under(form, d) for form in _forms(path) for d in site_directories()) or in_stdlib(path)


def _pythonpath() -> Set[str]:
    return {_real(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}


def _pth_file(entry: str) -> Optional[str]:
    """The .pth file in a site directory that puts `entry` on sys.path, or None."""
    for directory in site_directories():
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(".pth"))
        except OSError:
            continue
        for name in names:
            try:
                with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
                    lines = f.read().splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith(("import ", "import\t")):  # code, e.g. sys.path.insert(0, '/some/dir')
                    if entry in line:
                        return os.path.join(directory, name)
                elif _real(os.path.join(directory, line)) == entry:
                    return os.path.join(directory, name)
    return None


def via(entry: str) -> str:
    entry = _real(entry)
    if sys.path and _real(sys.path[0]) == entry and entry == _real(os.getcwd()):
        return WORKING_DIRECTORY
    if entry in _pythonpath():
        return "PYTHONPATH"
    return _pth_file(entry) or "sys.path"


def _first_spec(name: str):
    """The spec the import system finds for a top-level module, ignoring what is already imported."""
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(name, None)
        except Exception:   # a broken finder (an editable install's hook) is not our finding
            continue
        if spec is not None:
            return spec
    return None


def _location(spec) -> Optional[str]:
    """The file or package directory a spec loads, or None (built-in, frozen)."""
    if spec.origin in (None, "built-in", "frozen", "namespace"):
        locations = list(spec.submodule_search_locations or [])
        return locations[0] if locations and spec.origin in (None, "namespace") else None
    if spec.submodule_search_locations:  # a package: its directory
        return os.path.dirname(spec.origin)
    return spec.origin


def _entry_of(path: str) -> str:
    """The sys.path entry `path` was found in (the longest one it is under)."""
    path = _real(path)
    entries = sorted({_real(p) for p in sys.path}, key=len, reverse=True)
    return next((e for e in entries if _under(path, e)), os.path.dirname(path))


def _environment_copy(name: str) -> Optional[str]:
    entries = [p for p in sys.path if in_environment(p)]
    try:
        spec = importlib.machinery.PathFinder.find_spec(name, entries)
    except Exception:
        return None
    if spec is None or spec.origin in (None, "namespace"):
        return None
    return _location(spec)


def _installed_at(entry: str, name: str) -> bool:
    """True when a distribution's metadata in `entry` lists `name`: installed there (pip install --target,
    a module system's PYTHONPATH), not a stray file."""
    try:
        for dist in metadata.distributions(path=[entry]):
            if name in top_level_names(dist):
                return True
    except Exception:
        return False
    return False


def top_level_names(dist) -> Set[str]:
    """The top-level modules a distribution installs (top_level.txt, else its RECORD)."""
    text = dist.read_text("top_level.txt")
    if text:
        return {line.strip() for line in text.splitlines() if line.strip()}
    names = set()
    for file in dist.files or []:
        first = str(file).split("/")[0]
        if first.endswith((".dist-info", ".egg-info", ".data")) or first in ("..", "__pycache__"):
            continue
        module = first.split(".")[0]
        if module.isidentifier():
            names.add(module)
    return names


def find(name: str) -> Optional[Shadow]:
    if name in OWN or name in sys.builtin_module_names:
        return None
    spec = _first_spec(name)
    if spec is None:
        return None
    location = _location(spec)
    if location is None or in_environment(location):
        return None
    if spec.origin in (None, "namespace") and any(in_environment(p) for p in spec.submodule_search_locations or []):
        return None  # a namespace package: a directory outside merges with the installed portions, hides nothing
    entry = _entry_of(location)
    hides = _environment_copy(name)
    if hides is None and _installed_at(entry, name):
        return None
    return Shadow(name, location, entry, via(entry), hides)


def _module_of_file(path: str) -> Optional[str]:
    entry = _entry_of(path)
    first = os.path.relpath(_real(path), entry).split(os.sep)[0]
    name = first.split(".")[0]
    return name if name.isidentifier() and not first.startswith("..") else None


def in_traceback(text: str, skip: Iterable[str] = ()) -> List[Shadow]:
    """Shadows among the modules whose files a traceback passes through (a shadowing module that raised is
    no longer in sys.modules; its file is still in the traceback)."""
    skipped, names = set(skip), {}
    for path in _TRACEBACK_FILE.findall(text or ""):
        name = _module_of_file(path) if os.path.isabs(path) and not in_environment(path) else None
        if name and name not in skipped:
            names[name] = None
    return [shadow for shadow in map(find, names) if shadow is not None]


def loaded(skip: Iterable[str] = (), traceback_text: str = "") -> List[Shadow]:
    """Shadows among the modules imported in this process, less `skip` (modules the interpreter had loaded
    before any directory of the caller was searched), and those in_traceback() finds in `traceback_text`."""
    skipped = set(skip)
    names: Dict[str, None] = {}
    for key, module in list(sys.modules.items()):
        top = key.split(".")[0]
        path = getattr(module, "__file__", None)
        if top in skipped or top == "__main__" or not path or in_environment(path):
            continue
        names[top] = None
    found = [shadow for shadow in map(find, names) if shadow is not None]
    return found + [s for s in in_traceback(traceback_text, skipped) if s.module not in names]


def report(shadows: List[Shadow]) -> dict:
    """The details a probe result carries for the module-shadowed rule."""
    return {"shadowed": [s.to_json() for s in shadows],
            "shadows_text": "; ".join(s.describe() for s in shadows),
            "shadow_fixes": [s.fix() for s in shadows]}
