"""Versions, specifiers, requirements and environment markers (PEP 440 / PEP 508).

Uses `packaging` when the interpreter has it, and otherwise a small parser written here, because
envcheck must also run in interpreters that have nothing but the standard library (a bare venv, a
broken install). The fallback covers what installed distributions' metadata uses: release segments,
pre/post/dev/local parts, the operators == != < <= > >= ~= === (with == X.* wildcards), extras and
markers with and/or/parentheses.

    version_key("1.20.0")                          -> comparable key, or None if unparsable
    specifier_contains(">=1.15,<1.21", "1.20.0")   -> True
    parse_requirement("numpy (>=1.15) ; python_version < '3.10'")
                                                   -> Requirement(name, extras, specifier, marker)
    marker_holds("python_version < '3.10'")        -> True on Python 3.9
"""
from __future__ import annotations

import os
import platform
import re
import sys
from typing import Dict, NamedTuple, Optional, Tuple

try:  # packaging is optional; the fallback below is used when it is missing or broken
    from packaging.markers import Marker as _Marker
    from packaging.requirements import Requirement as _Requirement
    from packaging.specifiers import SpecifierSet as _SpecifierSet
    from packaging.version import InvalidVersion as _InvalidVersion
    from packaging.version import Version as _Version
    HAVE_PACKAGING = True
except Exception:  # an ImportError, or a broken packaging install
    HAVE_PACKAGING = False


class Requirement(NamedTuple):
    name: str
    extras: Tuple[str, ...]
    specifier: str        # "" when any version will do (also for "name @ url")
    marker: str           # "" when the requirement always applies


def normalize_name(name: str) -> str:
    """PEP 503 name normalisation: 'Python_Levenshtein' and 'python-levenshtein' are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --- versions --------------------------------------------------------------------------------------

_VERSION_RE = re.compile(
    r"""^\s*v?
    (?:(?P<epoch>\d+)!)?
    (?P<release>\d+(?:\.\d+)*)
    (?:[-_.]?(?P<pre_l>alpha|beta|preview|pre|rc|a|b|c)[-_.]?(?P<pre_n>\d+)?)?
    (?:-(?P<post_n1>\d+)|[-_.]?(?P<post_l>post|rev|r)[-_.]?(?P<post_n2>\d+)?)?
    (?:[-_.]?(?P<dev_l>dev)[-_.]?(?P<dev_n>\d+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?
    \s*$""",
    re.VERBOSE | re.IGNORECASE,
)
_PRE_ORDER = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}
_NEG_INF = (-1, "")   # sorts below every (0, n) part
_POS_INF = (2, "")    # sorts above every (0, n) part


class _Parsed(NamedTuple):
    epoch: int
    release: Tuple[int, ...]
    pre: Optional[Tuple[int, int]]
    post: Optional[int]
    dev: Optional[int]
    local: Optional[str]


def _parse(text: str) -> Optional[_Parsed]:
    m = _VERSION_RE.match(text)
    if not m:
        return None
    pre = None
    if m.group("pre_l"):
        pre = (_PRE_ORDER[m.group("pre_l").lower()], int(m.group("pre_n") or 0))
    post = None
    if m.group("post_n1") is not None:
        post = int(m.group("post_n1"))
    elif m.group("post_l"):
        post = int(m.group("post_n2") or 0)
    dev = int(m.group("dev_n") or 0) if m.group("dev_l") else None
    return _Parsed(int(m.group("epoch") or 0), tuple(int(p) for p in m.group("release").split(".")),
                   pre, post, dev, m.group("local"))


def _key(v: _Parsed, with_local: bool = True) -> tuple:
    release = list(v.release)
    while len(release) > 1 and release[-1] == 0:  # 1.0 == 1.0.0
        release.pop()
    if v.pre is None and v.post is None and v.dev is not None:
        pre = _NEG_INF                                 # 1.0.dev1 < 1.0a1
    elif v.pre is None:
        pre = _POS_INF
    else:
        pre = (0, v.pre)
    post = _NEG_INF if v.post is None else (0, v.post)
    dev = _POS_INF if v.dev is None else (0, v.dev)
    local: tuple = ()
    if with_local and v.local:
        local = tuple((1, int(p), "") if p.isdigit() else (0, 0, p.lower())
                      for p in re.split(r"[-_.]", v.local))
    return (v.epoch, tuple(release), pre, post, dev, local)


def version_key(text: str):
    """A key that orders versions as PEP 440 does, or None if `text` is not a valid version."""
    if HAVE_PACKAGING:
        try:
            return _Version(text)
        except _InvalidVersion:
            return None
    parsed = _parse(text)
    return None if parsed is None else _key(parsed)


# --- specifiers ------------------------------------------------------------------------------------

_SPEC_RE = re.compile(r"^\s*(~=|===|==|!=|<=|>=|<|>)\s*(\S+?)\s*$")


def _release_prefix_match(candidate: _Parsed, prefix_text: str) -> bool:
    prefix = _parse(prefix_text)
    if prefix is None or prefix.epoch != candidate.epoch:
        return False
    n = len(prefix.release)
    padded = candidate.release + (0,) * max(0, n - len(candidate.release))
    return padded[:n] == prefix.release


def _one_spec_contains(op: str, spec_text: str, candidate_text: str) -> bool:
    if op == "===":
        return candidate_text.strip().lower() == spec_text.lower()
    candidate = _parse(candidate_text)
    if candidate is None:
        return False
    if op in ("==", "!=") and spec_text.endswith(".*"):
        match = _release_prefix_match(candidate, spec_text[:-2])
        return match if op == "==" else not match
    spec = _parse(spec_text)
    if spec is None:
        return False
    cand_key = _key(candidate, with_local=spec.local is not None)
    spec_key = _key(spec)
    same_base = _key(candidate._replace(pre=None, post=None, dev=None, local=None)) == \
        _key(spec._replace(pre=None, post=None, dev=None, local=None))
    if op == "==":
        return cand_key == spec_key
    if op == "!=":
        return cand_key != spec_key
    if op == "<=":
        return _key(candidate, with_local=False) <= spec_key
    if op == ">=":
        return _key(candidate, with_local=False) >= spec_key
    if op == "<":
        # "<2.0" does not admit 2.0's own pre-releases unless the bound is itself a pre-release
        if spec.pre is None and spec.dev is None and (candidate.pre or candidate.dev is not None) and same_base:
            return False
        return _key(candidate, with_local=False) < spec_key
    if op == ">":
        # ">2.0" does not admit 2.0.post1 or 2.0+local unless the bound is itself a post-release
        if spec.post is None and candidate.post is not None and same_base:
            return False
        if candidate.local and same_base:
            return False
        return _key(candidate, with_local=False) > spec_key
    if op == "~=":
        if len(spec.release) < 2:
            return False
        prefix = ".".join(str(p) for p in spec.release[:-1])
        if spec.epoch:
            prefix = f"{spec.epoch}!{prefix}"
        return _key(candidate, with_local=False) >= spec_key and _release_prefix_match(candidate, prefix)
    return False


def specifier_contains(specifier: str, version: str) -> bool:
    """True if `version` satisfies every clause of `specifier` (pre-releases allowed, as pip check does)."""
    if not specifier.strip():
        return True
    if HAVE_PACKAGING:
        try:
            return _SpecifierSet(specifier).contains(version, prereleases=True)
        except Exception:  # an invalid version or specifier: treat as not satisfied
            return False
    for clause in specifier.split(","):
        m = _SPEC_RE.match(clause)
        if not m or not _one_spec_contains(m.group(1), m.group(2), version):
            return False
    return True


# --- requirements and markers ----------------------------------------------------------------------

_REQ_RE = re.compile(r"^\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*"
                     r"(?:\[(?P<extras>[^\]]*)\])?\s*(?P<rest>.*)$")


def parse_requirement(text: str) -> Optional[Requirement]:
    """Parse a Requires-Dist line; None if it cannot be parsed."""
    if HAVE_PACKAGING:
        try:
            req = _Requirement(text)
        except Exception:
            return None
        return Requirement(req.name, tuple(sorted(req.extras)), str(req.specifier),
                           str(req.marker) if req.marker else "")
    m = _REQ_RE.match(text)
    if not m:
        return None
    rest = m.group("rest")
    marker = ""
    if ";" in rest:
        rest, marker = rest.split(";", 1)
    rest = rest.strip()
    if rest.startswith("@"):
        rest = ""  # a direct URL reference: any installed version is the one asked for
    rest = rest.strip("() ")
    extras = tuple(sorted(e.strip() for e in (m.group("extras") or "").split(",") if e.strip()))
    return Requirement(m.group("name"), extras, rest.replace(" ", ""), marker.strip())


def marker_environment() -> Dict[str, str]:
    """PEP 508 marker variables for this interpreter, with no extra requested."""
    info = sys.implementation.version
    implementation_version = f"{info.major}.{info.minor}.{info.micro}"
    if info.releaselevel != "final":
        implementation_version += info.releaselevel[0] + str(info.serial)
    return {
        "implementation_name": sys.implementation.name,
        "implementation_version": implementation_version,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
        "extra": "",
    }


_MARKER_TOKEN_RE = re.compile(r"""\s*(?:(?P<string>'[^']*'|"[^"]*")|(?P<op>===|==|!=|<=|>=|~=|<|>)|"""
                              r"""(?P<paren>[()])|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))""")


def _marker_tokens(text: str):
    pos, tokens = 0, []
    text = text.strip()
    while pos < len(text):
        m = _MARKER_TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse marker {text!r} at {text[pos:]!r}")
        pos = m.end()
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
    return tokens


def _compare(lhs: str, op: str, rhs: str) -> bool:
    if op in ("in", "not in"):
        return (lhs in rhs) == (op == "in")
    if op == "===":
        return lhs == rhs
    if _parse(lhs) is not None and _parse(rhs) is not None:
        return _one_spec_contains(op, rhs, lhs)
    if op == "==":
        return lhs == rhs
    if op == "!=":
        return lhs != rhs
    return False  # ordering comparison of non-versions is undefined in PEP 508


class _MarkerParser:
    """Recursive descent over: or_expr := and_expr ('or' and_expr)*; and_expr := atom ('and' atom)*;
    atom := '(' or_expr ')' | value op value."""

    def __init__(self, text: str, env: Dict[str, str]):
        self.tokens = _marker_tokens(text)
        self.pos = 0
        self.env = env

    def _peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)

    def _take(self):
        token = self._peek()
        self.pos += 1
        return token

    def parse(self) -> bool:
        value = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"unexpected {self._peek()[1]!r} in marker")
        return value

    def _or(self) -> bool:
        value = self._and()
        while self._peek() == ("word", "or"):
            self._take()
            value = self._and() or value
        return value

    def _and(self) -> bool:
        value = self._atom()
        while self._peek() == ("word", "and"):
            self._take()
            value = self._atom() and value
        return value

    def _value(self) -> str:
        kind, text = self._take()
        if kind == "string":
            return text[1:-1]
        if kind == "word" and text in self.env:
            return self.env[text]
        raise ValueError(f"unknown marker value {text!r}")

    def _atom(self) -> bool:
        if self._peek() == ("paren", "("):
            self._take()
            value = self._or()
            if self._take() != ("paren", ")"):
                raise ValueError("unbalanced parentheses in marker")
            return value
        lhs = self._value()
        kind, op = self._take()
        if (kind, op) == ("word", "not"):
            if self._take() != ("word", "in"):
                raise ValueError("expected 'in' after 'not' in marker")
            op = "not in"
        elif (kind, op) == ("word", "in"):
            op = "in"
        elif kind != "op":
            raise ValueError(f"expected a comparison in marker, got {op!r}")
        rhs = self._value()
        return _compare(lhs, op, rhs)


def marker_holds(marker: str, env: Optional[Dict[str, str]] = None) -> bool:
    """Evaluate a PEP 508 marker for this interpreter with no extra requested ('' marker: True)."""
    if not marker.strip():
        return True
    env = env or marker_environment()
    if HAVE_PACKAGING:
        return _Marker(marker).evaluate({k: v for k, v in env.items()})
    return _MarkerParser(marker, env).parse()
