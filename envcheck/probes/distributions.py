"""Installed distributions against each other's declared requirements, as `pip check` does.

Reads every distribution's metadata with importlib.metadata (no package is imported), evaluates each
Requires-Dist line's marker for this interpreter (requirements that need an extra are skipped, as pip
check skips them), and checks the installed version against the specifier. Also reports a project
installed twice on sys.path: the first copy is the one imported, the other only confuses tools.

details.installed ({normalized name: version}) is what the rules' version conditions read.
"""
from __future__ import annotations

from importlib import metadata

from envcheck import versions


def _location(dist) -> str:
    """The sys.path entry the distribution is installed in."""
    try:
        return str(dist.locate_file(""))
    except Exception:  # a custom Distribution class without files on disk
        return "?"


def run(settings: dict) -> dict:
    env = versions.marker_environment()
    active = {}       # normalized name -> (display name, version, dist); the first on sys.path wins
    duplicates = {}   # normalized name -> [(version, location), ...]
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        key = versions.normalize_name(name)
        if key in active:
            duplicates.setdefault(key, [(active[key][1], _location(active[key][2]))])
            duplicates[key].append((dist.version, _location(dist)))
            continue
        active[key] = (name, dist.version, dist)

    problems = []
    for key, (name, version, dist) in sorted(active.items()):
        for line in dist.requires or []:
            req = versions.parse_requirement(line)
            if req is None:
                problems.append({"dist": name, "version": version, "requirement": line, "found": None,
                                 "problem": "unparsable requirement"})
                continue
            try:
                if not versions.marker_holds(req.marker, env):
                    continue
            except Exception:
                continue  # a marker this parser cannot evaluate: pip check would not report it either
            found = active.get(versions.normalize_name(req.name))
            if found is None:
                problems.append({"dist": name, "version": version, "requirement": line.split(";")[0].strip(),
                                 "found": None, "problem": "not installed"})
            elif not versions.specifier_contains(req.specifier, found[1]):
                problems.append({"dist": name, "version": version, "requirement": line.split(";")[0].strip(),
                                 "found": found[1], "problem": f"{found[0]} {found[1]} is installed"})

    details = {
        "count": len(active),
        "installed": {key: version for key, (_, version, _) in sorted(active.items())},
        "problems": problems,
        "duplicates": {key: [{"version": v, "location": loc} for v, loc in copies]
                       for key, copies in duplicates.items()},
        "parser": "packaging" if versions.HAVE_PACKAGING else "envcheck.versions fallback",
    }
    lines = [f"{p['dist']} {p['version']} requires {p['requirement']}, but {p['problem']}" for p in problems]
    details["problems_text"] = "; ".join(lines)
    findings = (["requirement-unmet"] if problems else []) + (["duplicate-distribution"] if duplicates else [])
    parts = []
    if problems:
        parts.append(f"{len(problems)} unmet requirement(s): " + "; ".join(lines[:3]))
    if duplicates:
        parts.append("installed more than once on sys.path: " + ", ".join(
            f"{k} ({', '.join(c['version'] for c in details['duplicates'][k])})" for k in duplicates))
    if parts:
        return {"status": "fail" if problems else "warn", "summary": "; ".join(parts), "details": details,
                "findings": findings, "output": "\n".join(lines)}
    return {"status": "pass", "summary": f"{len(active)} distributions; every declared requirement is met",
            "details": details}
