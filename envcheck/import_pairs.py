"""Modules that import alone but not together: the import-together probes and the pairs they start.

Each import.<module> probe imports one module in a fresh process. Two more probes then import every
module that passed alone in one process: `import.together` in the order of probes.IMPORTS and
`import.together-reversed` in the opposite order. Between them every pair of modules is imported in
both orders (a before b in one, b before a in the other) for the cost of two processes.

When a together probe fails at module X, envcheck names the culprit: for every module Y imported
before X in that probe it runs the pair probe `import.Y+X` (Y, then X, in a fresh process).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List

from envcheck.probes import IMPORTS, TOGETHER_IDS, Probe
from envcheck.result import FAIL, PASS, WARN, ProbeResult

MODULE_OF = {"import." + key: module for key, module, _, _ in IMPORTS}


def _key(module: str) -> str:
    return module.lower()


def with_modules(probe: Probe, selected: List[Probe], results: Dict[str, ProbeResult]) -> Probe:
    """The together probe with its module list: the selected import probes' modules that imported alone
    (all of probes.IMPORTS when no import probe was selected)."""
    import_ids = [p.id for p in selected if p.id in MODULE_OF] or list(MODULE_OF)
    modules, excluded = [], {}
    for probe_id in import_ids:
        module = MODULE_OF[probe_id]
        alone = results.get(probe_id)
        if alone is None or alone.status in (PASS, WARN):
            modules.append(module)
        else:
            excluded[module] = f"{probe_id}: {alone.status}"
    return dataclasses.replace(probe, arguments={**probe.arguments, "modules": modules, "excluded": excluded})


def _failure_point(result: ProbeResult):
    """(module that failed, modules imported before it) from a failed together or pair probe."""
    details = result.details
    if details.get("outcome") == "completed":
        return details.get("failed_module"), list(details.get("imported") or [])
    # crashed or hung: the progress log has one "import NAME" step per module the probe started
    started = [s[len("import "):] for s in details.get("steps") or [] if s.startswith("import ")]
    if not started:
        return None, []
    return started[-1], started[:-1]


def pairs_to_isolate(probe: Probe, result: ProbeResult, results: Dict[str, ProbeResult]) -> List[Probe]:
    """Pair probes that find which earlier module makes a failed together probe's module fail."""
    if probe.id not in TOGETHER_IDS or result.status != FAIL:
        return []
    failed, before = _failure_point(result)
    if failed is None:
        return []
    return [
        Probe(id=f"import.{_key(first)}+{_key(failed)}", title=f"import {first}, then {failed}",
              module="imports", function="run_together", arguments={"modules": [first, failed], "reverse": False},
              stages=probe.stages, timeout_s=probe.timeout_s, cost_s=3.0)
        for first in before
    ]


def judge_together(results: Dict[str, ProbeResult]) -> None:
    """Add to each failed together probe which pairs reproduce its failure."""
    for together_id in TOGETHER_IDS:
        result = results.get(together_id)
        if result is None or result.status != FAIL:
            continue
        failed, before = _failure_point(result)
        if failed is None:
            continue
        culprits = [first for first in before
                    if results.get(f"import.{_key(first)}+{_key(failed)}") is not None
                    and results[f"import.{_key(first)}+{_key(failed)}"].status == FAIL]
        result.details["culprits"] = culprits
        if culprits:
            result.summary += "; reproduced by importing " + " or ".join(culprits) + f" before {failed}"
        elif before:
            result.summary += f"; no single module imported before {failed} reproduces it"
