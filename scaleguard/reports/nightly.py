"""What report.html shows about nightly operations: root causes, changes since last run, waivers, expiry.

The HTML reporter passes ``nightly=nightly_view(ctx)`` to its template, which includes the
``_nightly.html.j2`` partial. Causes come from findings.json when the pipeline grouped them, else they
are grouped here, so a report rebuilt from an older findings.json still shows them (history cannot be
rebuilt: the partial then says the run was not compared); the expiry forecast comes from the snapshot.
"""

from __future__ import annotations

from typing import Any

from scaleguard.findings.causes import find_causes
from scaleguard.findings.model import CauseSummary, SincePrevious
from scaleguard.reports.base import ReportContext
from scaleguard.reports.expiry import expiry_section
from scaleguard.reports.fixsteps import fix_step
from scaleguard.reports.trend import trend_svg

SHOWN_CAUSES = 15
SHOWN_CHANGES = 50


def nightly_view(ctx: ReportContext) -> dict[str, Any]:
    ff = ctx.findings
    causes = ff.causes
    if causes is None:
        causes = [CauseSummary.model_validate(c.as_json()) for c in find_causes(ff.findings, ctx.snapshot)]
    return {
        "causes": [{**c.model_dump(), "fix_step": fix_step(c.fix)} for c in causes[:SHOWN_CAUSES]],
        "more_causes": max(0, len(causes) - SHOWN_CAUSES),
        "cause_total": len(causes),
        "failing_total": sum(c.count for c in causes),
        "since": _since(ff.since_previous) if ff.since_previous is not None else None,
        "waivers": ff.waivers,
        "warnings": [w for w in ff.warnings if w],
        "expiry": expiry_section(ctx.snapshot, ctx.now, ctx.thresholds),
    }


def _since(since: SincePrevious) -> dict[str, Any]:
    return {
        "compared": since.previous_run is not None,
        "previous_at": since.previous_at,
        "previous_run": since.previous_run,
        "new": since.new[:SHOWN_CHANGES],
        "resolved": since.resolved[:SHOWN_CHANGES],
        "new_total": len(since.new),
        "resolved_total": len(since.resolved),
        "persisting": since.persisting,
        "trend": trend_svg(since.trend),
        "trend_runs": len(since.trend),
    }
