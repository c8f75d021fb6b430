"""Match probe results against the knowledge base in envcheck/rules/*.json.

A rule file holds {"rules": [RULE, ...]}. A rule:

    id           stable identifier, e.g. "mindspore-needs-numpy-1.21"
    title        one line
    probes       glob patterns of the probe ids it can explain, e.g. ["import.*", "distributions"]
    evidence     list of conditions that must all hold (below)
    severity     optional, "warn" or "fail". Without it a rule only explains results that already are
                 WARN or FAIL. With it, the rule also applies to results that passed and raises them to
                 that status: knowledge a probe cannot see by itself ("this combination is declared
                 compatible but is not").
    explanation  why it happens. {name} placeholders are filled from the probe's details (lists joined
                 with ", "), from named groups of the matched "output" regexes, {probe} and {summary} with the
                 probe's id and summary,
                 and {dist:NAME} with NAME's installed version.
    fix          list of steps / commands that fix it, with the same placeholders; a step that is only a
                 placeholder of a list (e.g. "{shadow_fixes}") becomes one step per item

Conditions:
    {"output": REGEX}            REGEX (Python re, MULTILINE) found in what the probe printed, its
                                 summary, error and traceback
    {"not_output": REGEX}        REGEX not found there
    {"finding": CODE}            the probe (or the runner) reported finding CODE, e.g. "crash-during-import"
    {"dist": NAME, OP: VERSION}  NAME is installed with a version satisfying every OP (<, <=, >, >=, ==,
                                 !=, ~=); {"dist": NAME, "installed": false}: NAME is not installed.
                                 Installed versions come from the `distributions` probe.
    {"any": [CONDITION, ...]}    at least one of them holds
    {"all": [CONDITION, ...]}    every one of them holds (to group conditions inside "any")
"""
from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Dict, List

from envcheck import versions
from envcheck.result import FAIL, SEVERITY, WARN, Diagnosis, ProbeResult, worse

RULES_DIR = Path(__file__).resolve().parent / "rules"
RULE_KEYS = {"id", "title", "probes", "evidence", "explanation", "fix", "severity"}
VERSION_OPS = ("<", "<=", ">", ">=", "==", "!=", "~=")
_PLACEHOLDER = re.compile(r"\{(dist:[A-Za-z0-9._-]+|[A-Za-z_][A-Za-z0-9_]*)\}")


class RuleError(ValueError):
    """A rule file is malformed: an envcheck bug, reported as such."""


def _check_condition(cond, where: str) -> None:
    if not isinstance(cond, dict) or not cond:
        raise RuleError(f"{where}: a condition must be a non-empty object, got {cond!r}")
    if "any" in cond or "all" in cond:
        key = "any" if "any" in cond else "all"
        if set(cond) != {key} or not isinstance(cond[key], list) or not cond[key]:
            raise RuleError(f"{where}: '{key}' takes a non-empty list and nothing else")
        for sub in cond[key]:
            _check_condition(sub, where)
    elif "output" in cond or "not_output" in cond:
        if len(cond) != 1:
            raise RuleError(f"{where}: an output condition has one key, got {sorted(cond)}")
        try:
            re.compile(next(iter(cond.values())), re.MULTILINE)
        except re.error as exc:
            raise RuleError(f"{where}: bad regex: {exc}") from None
    elif "finding" in cond:
        if len(cond) != 1:
            raise RuleError(f"{where}: a finding condition has one key, got {sorted(cond)}")
    elif "dist" in cond:
        extra = set(cond) - {"dist", "installed", *VERSION_OPS}
        if extra:
            raise RuleError(f"{where}: unknown keys in dist condition: {sorted(extra)}")
        for op in VERSION_OPS:
            if op in cond and versions.version_key(str(cond[op])) is None:
                raise RuleError(f"{where}: {cond[op]!r} is not a version")
    else:
        raise RuleError(f"{where}: unknown condition {sorted(cond)}")


def validate(rule: dict, where: str) -> None:
    missing = {"id", "title", "probes", "evidence", "explanation", "fix"} - set(rule)
    if missing:
        raise RuleError(f"{where}: missing {sorted(missing)}")
    unknown = set(rule) - RULE_KEYS
    if unknown:
        raise RuleError(f"{where}: unknown keys {sorted(unknown)}")
    if rule.get("severity") not in (None, WARN, FAIL):
        raise RuleError(f"{where}: severity must be 'warn' or 'fail'")
    if not isinstance(rule["probes"], list) or not rule["probes"]:
        raise RuleError(f"{where}: probes must be a non-empty list of patterns")
    if not isinstance(rule["evidence"], list) or not rule["evidence"]:
        raise RuleError(f"{where}: evidence must be a non-empty list of conditions")
    if not isinstance(rule["fix"], list) or not all(isinstance(step, str) for step in rule["fix"]):
        raise RuleError(f"{where}: fix must be a list of strings")
    for cond in rule["evidence"]:
        _check_condition(cond, where)


def load_rules(rules_dir: Path = RULES_DIR) -> List[dict]:
    rules, seen = [], set()
    for path in sorted(rules_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise RuleError(f"{path.name}: not valid JSON: {exc}") from None
        for rule in data.get("rules", []):
            where = f"{path.name}: rule {rule.get('id', '?')}"
            validate(rule, where)
            if rule["id"] in seen:
                raise RuleError(f"{where}: duplicate id")
            seen.add(rule["id"])
            rules.append(rule)
    return rules


def installed_versions(results: List[ProbeResult]) -> Dict[str, str]:
    for result in results:
        if result.id == "distributions":
            return dict(result.details.get("installed") or {})
    return {}


def _searchable_text(result: ProbeResult) -> str:
    details = result.details
    return "\n".join([result.summary, str(details.get("error", "")), str(details.get("traceback", "")),
                      result.output])


def _holds(cond: dict, result: ProbeResult, text: str, installed: Dict[str, str], groups: dict) -> bool:
    if "any" in cond:
        return any(_holds(sub, result, text, installed, groups) for sub in cond["any"])
    if "all" in cond:
        return all(_holds(sub, result, text, installed, groups) for sub in cond["all"])
    if "output" in cond:
        m = re.search(cond["output"], text, re.MULTILINE)
        if m:
            groups.update({k: v for k, v in m.groupdict().items() if v is not None})
        return m is not None
    if "not_output" in cond:
        return re.search(cond["not_output"], text, re.MULTILINE) is None
    if "finding" in cond:
        return cond["finding"] in result.findings
    version = installed.get(versions.normalize_name(cond["dist"]))
    if cond.get("installed") is False:
        return version is None
    if version is None:
        return False
    spec = ",".join(f"{op}{cond[op]}" for op in VERSION_OPS if op in cond)
    return versions.specifier_contains(spec, version)


def _fill(template: str, values: dict, installed: Dict[str, str]) -> str:
    def replace(m: re.Match) -> str:
        key = m.group(1)
        if key.startswith("dist:"):
            return installed.get(versions.normalize_name(key[len("dist:"):]), "not installed")
        value = values.get(key)
        if isinstance(value, list):
            return ", ".join(str(v) for v in value) or "nothing"
        return m.group(0) if value is None or isinstance(value, dict) else str(value)
    return _PLACEHOLDER.sub(replace, template)


def _fix_steps(steps: List[str], values: dict, installed: Dict[str, str]) -> List[str]:
    filled = []
    for step in steps:
        whole = _PLACEHOLDER.fullmatch(step)
        listed = values.get(whole.group(1)) if whole else None
        if isinstance(listed, list):
            filled += [str(item) for item in listed]
        else:
            filled.append(_fill(step, values, installed))
    return filled


def diagnose(results: List[ProbeResult], rules: List[dict]) -> None:
    """Attach every matching rule's diagnosis to each result; rules with a severity raise the status."""
    installed = installed_versions(results)
    for result in results:
        text = _searchable_text(result)
        for rule in rules:
            if not any(fnmatch.fnmatchcase(result.id, pattern) for pattern in rule["probes"]):
                continue
            if rule.get("severity") is None and SEVERITY[result.status] == 0:
                continue
            groups: dict = {}
            if not all(_holds(cond, result, text, installed, groups) for cond in rule["evidence"]):
                continue
            values = {**result.details, **groups, "probe": result.id, "summary": result.summary}
            result.diagnosis.append(Diagnosis(rule["id"], _fill(rule["title"], values, installed),
                                              _fill(rule["explanation"], values, installed),
                                              _fix_steps(rule["fix"], values, installed)))
            if rule.get("severity") and worse(result.status, rule["severity"]) != result.status:
                # The probe's own summary described what it saw before the rule knew better; the line's
                # status and its words must agree, so the summary says what raised it.
                result.status = rule["severity"]
                result.summary = f"{result.summary}; but: {result.diagnosis[-1].title}"

