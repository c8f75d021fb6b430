"""The result of one probe, as the runner builds it and the rules and the report read it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

PASS, INFO, SKIP, WARN, FAIL = "pass", "info", "skip", "warn", "fail"
STATUSES = (PASS, INFO, SKIP, WARN, FAIL)
# How bad a status is: INFO and SKIP are no worse than PASS (a fact, or a check that does not apply).
SEVERITY = {PASS: 0, INFO: 0, SKIP: 0, WARN: 1, FAIL: 2}


def worse(a: str, b: str) -> str:
    return a if SEVERITY[a] >= SEVERITY[b] else b


@dataclass
class Diagnosis:
    rule_id: str
    title: str
    explanation: str
    fix: List[str]

    def to_json(self) -> Dict[str, Any]:
        return {"rule_id": self.rule_id, "title": self.title, "explanation": self.explanation, "fix": self.fix}


@dataclass
class ProbeResult:
    id: str
    title: str
    status: str
    summary: str
    details: Dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    findings: List[str] = field(default_factory=list)
    output: str = ""          # everything the probe printed or captured; searched by rules, not all shown
    diagnosis: List[Diagnosis] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "summary": self.summary,
            "details": self.details,
            "findings": self.findings,
            "duration_s": round(self.duration_s, 3),
            "diagnosis": [d.to_json() for d in self.diagnosis],
        }
