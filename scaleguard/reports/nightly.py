"""What report.html shows about nightly operations: root causes, changes since last run, waivers, expiry.

The HTML reporter passes ``nightly=nightly_view(ctx)`` to its template, which includes the
``_nightly.html.j2`` partial. The data comes from findings.json's extra keys when the pipeline added
them; causes and the expiry forecast are recomputed from the artefacts when they are missing, so a
report rebuilt from an older findings.json still shows them (history cannot be rebuilt: the partial
then says the run was not compared).
"""

from __future__ import annotations

from typing import Any

from scaleguard.findings.causes import find_causes
from scaleguard.reports.base import ReportContext
from scaleguard.reports.expiry import expiry_section
from scaleguard.reports.fixsteps import fix_step

SHOWN_CAUSES = 15
SHOWN_CHANGES = 50


def nightly_view(ctx: ReportContext) -> dict[str, Any]:
    extras = ctx.findings.model_extra or {}
    causes = extras.get("causes")
    if not isinstance(causes, list):
        causes = [c.as_json() for c in find_causes(ctx.findings.findings, ctx.snapshot)]
    since = extras.get("since_previous")
    waivers = extras.get("waivers")
    return {
        "causes": [{**c, "fix_step": fix_step(str(c.get("fix") or ""))} for c in causes[:SHOWN_CAUSES]],
        "more_causes": max(0, len(causes) - SHOWN_CAUSES),
        "cause_total": len(causes),
        "failing_total": sum(int(c.get("count", 0)) for c in causes),
        "since": _since(since) if isinstance(since, dict) else None,
        "waivers": waivers if isinstance(waivers, dict) else None,
        "warnings": [str(w) for w in extras.get("warnings", []) if w],
        "expiry": expiry_section(ctx.snapshot, ctx.now),
    }


def _since(since: dict[str, Any]) -> dict[str, Any]:
    new = list(since.get("new") or [])
    resolved = list(since.get("resolved") or [])
    return {
        "compared": since.get("previous_run") is not None,
        "previous_at": since.get("previous_at"),
        "previous_run": since.get("previous_run"),
        "new": new[:SHOWN_CHANGES],
        "resolved": resolved[:SHOWN_CHANGES],
        "new_total": len(new),
        "resolved_total": len(resolved),
        "persisting": int(since.get("persisting") or 0),
    }
