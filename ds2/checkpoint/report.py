"""The reconciliation's report: every checkpoint entry as a model parameter, an optimizer state entry,
or a row of a table that says why not (MISSING, UNEXPECTED, MISMATCHED, reshaped, mapped, filled,
ignored), and its one-line summary."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ds2.checkpoint.layouts import NATIVE


class CheckpointMismatch(ValueError):
    """The checkpoint's model weights do not fit the model; the message holds the table."""

    def __init__(self, report: "ReconcileReport"):
        super().__init__(report.summary() + "\n" + report.format_table())
        self.report = report


@dataclass
class Entry:
    """One row of the report: a checkpoint entry, the ds2 parameter it is for, or both."""
    part: str                                   # "model" or "optimizer"
    checkpoint_name: str                        # "" when the checkpoint has no such entry
    model_name: str                             # "" when ds2 has no place for it
    checkpoint_shape: Optional[Tuple[int, ...]]
    model_shape: Optional[Tuple[int, ...]]
    note: str = ""


@dataclass
class ReconcileReport:
    layout: str = NATIVE.name
    model_params: Dict[str, np.ndarray] = field(default_factory=dict)     # model name -> value to load
    optimizer_state: Dict[str, np.ndarray] = field(default_factory=dict)  # optimizer name -> value to load
    optimizer_restart: str = ""      # why the optimizer state is not loaded; "" when it is (or no optimizer)
    loaded: int = 0                  # model parameters found under their own name (maybe under a
                                     # wrapper's prefix) and shape
    mapped: List[Entry] = field(default_factory=list)      # found under another name or converted
    reshaped: List[Entry] = field(default_factory=list)    # shapes differing only by size-1 dimensions
    filled: List[Entry] = field(default_factory=list)      # no counterpart in the layout: neutral value
    missing: List[Entry] = field(default_factory=list)
    unexpected: List[Entry] = field(default_factory=list)
    mismatched: List[Entry] = field(default_factory=list)
    ignored: List[Entry] = field(default_factory=list)     # read and deliberately not loaded

    @property
    def refused(self) -> bool:
        """True when the model's weights cannot be loaded: nothing is loaded then."""
        return any(e.part == "model" for e in self.missing + self.unexpected + self.mismatched)

    def summary(self) -> str:
        if self.refused:
            problems = [f"{sum(1 for e in rows if e.part == 'model')} {what}" for what, rows in
                        (("missing", self.missing), ("unexpected", self.unexpected), ("mismatched", self.mismatched))
                        if any(e.part == "model" for e in rows)]
            return (f"checkpoint (layout {self.layout}) does not fit the model: "
                    f"{', '.join(problems)} model entries; nothing was loaded")
        text = (f"checkpoint layout {self.layout}: {len(self.model_params)} model parameters "
                f"({self.loaded} by name, {len(self.mapped)} mapped, {len(self.filled)} filled neutral, "
                f"{len([e for e in self.reshaped if e.part == 'model'])} reshaped)")
        if self.optimizer_restart:
            text += f"; optimizer state not loaded ({self.optimizer_restart}): restarting the optimizer"
        elif self.optimizer_state:
            text += f"; optimizer state loaded ({len(self.optimizer_state)} entries)"
        return text

    def format_table(self) -> str:
        """Every entry that did not load unchanged under its own name, one row each."""
        rows = [(status, e) for status, entries in (
            ("MISSING", self.missing), ("UNEXPECTED", self.unexpected), ("MISMATCHED", self.mismatched),
            ("reshaped", self.reshaped), ("mapped", self.mapped), ("filled", self.filled),
            ("ignored", self.ignored)) for e in entries]
        if not rows:
            return "(every entry loaded under its own name and shape)"
        header = ("status", "part", "checkpoint entry", "ds2 name", "checkpoint shape", "model shape", "note")
        lines = [header] + [(status, e.part, e.checkpoint_name or "-", e.model_name or "-",
                             shape_text(e.checkpoint_shape), shape_text(e.model_shape), e.note)
                            for status, e in rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
        return "\n".join(("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1]).rstrip()
                         for line in lines)


def shape_text(shape: Optional[Tuple[int, ...]]) -> str:
    return "-" if shape is None else "(" + ",".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
