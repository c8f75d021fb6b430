"""Memory this process may use (RAM, and the cgroup limit Docker's --memory sets) versus what the
configured model and batches need: ds2.memory's plan, the same numbers `ds2 train` fits itself to."""
from __future__ import annotations

from envcheck.settings import configured


def _gib(n: float) -> str:
    return f"{n / 1024 ** 3:.1f} GiB"


def run(settings: dict) -> dict:
    from ds2 import cgroup, memory

    stage = settings.get("stage")
    info = memory.meminfo()
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    limit, limit_source = cgroup.memory_limit()
    usable = min(v for v in (total, limit) if v) if (total or limit) else None
    cfg = configured(settings)
    details = {"ram_bytes": total, "available_bytes": available, "cgroup_limit_bytes": limit,
               "cgroup_source": limit_source, "usable_bytes": usable}
    have = f"{_gib(usable)} usable" if usable else "unknown memory"
    if limit:
        have += f" (cgroup limit {_gib(limit)} of {_gib(total or 0)} RAM)"
    if cfg is None:
        return {"status": "info", "summary": f"{have}; no model estimate (no ds2 config)", "details": details}
    need = memory.estimate(cfg, training=stage != "eval")
    details.update(estimate=need.to_dict(), estimate_total=_gib(need.total_bytes),
                   usable=_gib(usable) if usable else "unknown")
    what = f"{'eval' if stage == 'eval' else 'training'} needs about {_gib(need.total_bytes)} " \
           f"({need.parameters / 1e6:.1f} M parameters, {need.batch_frames} frames per batch, " \
           f"{'one compiled graph for every batch shape' if need.graphs == 1 else f'{need.graphs} compiled shapes'})"
    if stage != "eval" and usable:
        # What ds2 train computes at its start (memory.usable_bytes): free memory counts too.
        fitted = memory.fit(cfg, min(v for v in (usable, available) if v))
        if available and available < need.total_bytes <= usable:
            have += f", only {_gib(available)} available now"
        if fitted is None:
            smallest = memory.smallest(cfg)
            details["estimate_total"] = _gib(smallest.total_bytes)
            return {"status": "fail", "summary": f"{have}, but {what}; even {smallest.num_buckets} buckets "
                    f"of {smallest.batch_seconds:g} s batches need {_gib(smallest.total_bytes)}",
                    "details": details, "findings": ["memory-below-estimate"]}
        if (fitted.num_buckets, fitted.batch_seconds) != (need.num_buckets, need.batch_seconds):
            details["fitted"] = fitted.to_dict()
            # ds2 train will run, but not with the configured batch settings: the user should know.
            return {"status": "warn", "summary": f"{have}, but {what}; ds2 train will use "
                    f"train.num_buckets={fitted.num_buckets} train.max_batch_seconds={fitted.batch_seconds:g} "
                    f"(about {_gib(fitted.total_bytes)}) unless train.fit_memory=false",
                    "details": details, "findings": ["batch-reduced-to-fit"]}
    if usable and usable < need.total_bytes:
        return {"status": "fail", "summary": f"{have}, but {what}", "details": details,
                "findings": ["memory-below-estimate"]}
    if available and available < need.total_bytes:
        details["available"] = _gib(available)
        return {"status": "warn", "summary": f"{have}, only {_gib(available)} available now; {what}",
                "details": details, "findings": ["memory-available-below-estimate"]}
    return {"status": "pass", "summary": f"{have}; {what}", "details": details}
