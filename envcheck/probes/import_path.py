"""The modules ds2 imports come from this environment, not from a file that shadows them.

Runs with the import path `python -m ds2` has (envcheck/child.py puts the working directory first; PYTHONPATH
and .pth files apply as usual) and imports nothing: for every module ds2 imports, and every module of the
distributions those come from and their requirements, it asks the import system which file it would load
(envcheck/shadows.py). A file or package directory in the working directory, on PYTHONPATH or added by a
.pth file that Python would load instead of the installed module is a FAIL naming it and the fix.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import sys
from importlib import metadata
from typing import Dict, Iterable, List, Set

from envcheck import shadows, versions
from envcheck.probes import IMPORTS


def ds2_imports() -> Set[str]:
    """Top-level modules ds2's own code imports (standard library and third-party), read from its source."""
    spec = sys.modules["ds2"].__spec__ if "ds2" in sys.modules else importlib.util.find_spec("ds2")
    names: Set[str] = set()
    for directory in (spec.submodule_search_locations or []) if spec else []:
        for root, _, files in os.walk(directory):
            for file in files:
                if not file.endswith(".py"):
                    continue
                try:
                    with open(os.path.join(root, file), encoding="utf-8") as f:
                        tree = ast.parse(f.read())
                except (OSError, SyntaxError, ValueError):
                    continue
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        names.update(alias.name.split(".")[0] for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names.add(node.module.split(".")[0])
    return names - {"__future__"} - shadows.OWN


def _installed_distributions() -> Dict[str, metadata.Distribution]:
    found: Dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions(path=shadows.site_directories()):
        name = dist.metadata["Name"]
        if name:
            found.setdefault(versions.normalize_name(name), dist)
    return found


def with_dependencies(modules: Iterable[str]) -> Set[str]:
    """`modules`, plus every top-level module of the installed distributions that provide them and of those
    distributions' requirements, transitively (requirements that need an extra are left out, as pip does)."""
    dists = _installed_distributions()
    provider: Dict[str, List[str]] = {}
    for key, dist in dists.items():
        for module in shadows.top_level_names(dist):
            provider.setdefault(module, []).append(key)
    names = set(modules)
    todo = [key for module in names for key in provider.get(module, [])]
    seen: Set[str] = set()
    environment = versions.marker_environment()
    while todo:
        key = todo.pop()
        if key in seen or key not in dists:
            continue
        seen.add(key)
        names |= shadows.top_level_names(dists[key])
        for line in dists[key].requires or []:
            requirement = versions.parse_requirement(line)
            try:
                needed = requirement is not None and versions.marker_holds(requirement.marker, environment)
            except Exception:  # a marker the fallback parser cannot read
                needed = False
            if needed:
                todo.append(versions.normalize_name(requirement.name))
    return names


def checked_modules() -> List[str]:
    wanted = {module.split(".")[0] for _, module, _, _ in IMPORTS} | ds2_imports()
    return sorted(with_dependencies(wanted))


def run(settings: dict) -> dict:
    preloaded = set(settings.get("startup_modules") or ())
    modules = [m for m in checked_modules() if m not in preloaded]  # already imported: no file can replace them
    found = [shadow for shadow in map(shadows.find, modules) if shadow is not None]
    details = {"checked": len(modules), "modules": modules, "sys_path": list(sys.path),
               "working_directory": os.getcwd(), "pythonpath": os.environ.get("PYTHONPATH", "")}
    if found:
        details.update(shadows.report(found))
        return {"status": "fail", "summary": f"{len(found)} shadowed module(s): " + "; ".join(s.describe() for s in found),
                "details": details, "findings": ["module-shadowed"]}
    return {"status": "pass", "summary": f"{len(modules)} modules checked (those ds2's code and its dependencies import): "
            "none is shadowed by a file in the working directory, on PYTHONPATH or in a folder a .pth file adds",
            "details": details}
