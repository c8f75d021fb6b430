"""This interpreter's own import directories (the standard library, site-packages), and sys.path with
them first.

envcheck's own code must import the real json, re or yaml even where a file named like them sits in the
working directory, on PYTHONPATH or in a folder a .pth file puts first: those are what envcheck reports,
not what it runs on. This module uses only os, sys and site, which the interpreter has loaded before it
runs a line of ours, so envcheck/child.py can use it before importing anything else.
"""
import os
import site
import sys


def stdlib_directories():
    """The standard library's directory, its lib-dynload, and the zipped standard library beside it."""
    stdlib = os.path.realpath(os.path.dirname(os.__file__))
    zipped = [os.path.realpath(p) for p in sys.path
              if p.endswith(".zip") and os.path.realpath(os.path.dirname(p)) == os.path.dirname(stdlib)]
    return [stdlib, os.path.join(stdlib, "lib-dynload")] + zipped


def site_directories():
    """Where this environment installs packages: its site-packages (or dist-packages) and the user site."""
    found = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    if site.ENABLE_USER_SITE and hasattr(site, "getusersitepackages"):
        found.append(site.getusersitepackages())
    return sorted({os.path.realpath(p) for p in found})


def environment_first(path, own=None):
    """`path` reordered: its standard library entries, then `own` (the directory envcheck is in), then its
    site directories, then everything else (PYTHONPATH, folders .pth files add) in the order it had."""
    stdlib, sites = stdlib_directories(), site_directories()

    def real(p):
        return os.path.realpath(p or os.curdir)

    mine = [] if own is None else [own]
    first = [p for p in path if real(p) in stdlib]
    middle = [p for p in path if real(p) in sites and real(p) not in map(real, mine)]
    rest = [p for p in path if p not in first and p not in middle and real(p) not in map(real, mine)]
    return first + mine + middle + rest
