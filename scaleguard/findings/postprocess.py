"""The post-audit stages the pipeline runs between *evaluate* and *report*, in this order:

1. waivers — applies ``--waivers FILE`` (first: waived findings are not problems for the stages after it);
2. causes  — groups failing findings by root cause, most impactful first;
3. history — records the run in the history file and compares it with the previous run of the same
   clusters: the problems that are new and resolved, and how many persist.

Each returns its part of ``findings.json`` (see :class:`FindingsFile`) plus any warnings for the
operator; the pipeline puts them in place.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

from scaleguard.exitcodes import ExitCode
from scaleguard.findings.causes import find_causes
from scaleguard.findings.model import CauseSummary, Finding, SincePrevious, WaiverSummary
from scaleguard.findings.waivers import apply_waivers, load_waivers
from scaleguard.history.compare import CurrentStatuses, compare_runs, scope_of, stored_findings
from scaleguard.history.store import HistoryStore, NewRun, StoredFinding
from scaleguard.snapshot.model import Snapshot


def apply_waiver_file(
    findings: list[Finding], path: Path, *, max_days: int | None, today: date
) -> tuple[WaiverSummary, list[str]]:
    """Waives the matching findings in place; the summary and a warning per expired or stale waiver."""
    waivers = load_waivers(path, today=today, max_days=max_days)
    outcome = apply_waivers(findings, waivers, today=today)
    summary = WaiverSummary(file=str(path), max_days=waivers.max_days, **outcome.summary(today))
    return summary, outcome.warnings(today)


def group_causes(findings: list[Finding], snapshot: Snapshot) -> list[CauseSummary]:
    return [CauseSummary.model_validate(c.as_json()) for c in find_causes(findings, snapshot)]


TREND_RUNS = 30
"""Runs the report's trend chart shows: a month of nightly audits."""


def _trend(path: Path, scope: str) -> list[dict[str, Any]]:
    """Failing findings (fail + error) of the last runs of ``scope``, for the report's chart."""
    try:
        runs = HistoryStore(path).runs(scope=scope, limit=TREND_RUNS)
    except (sqlite3.Error, OSError, ValueError):  # the run is recorded; only the chart is lost
        return []
    return [
        {"run": r.id, "at": r.generated_at.isoformat(timespec="seconds"), "failing": r.problems} for r in runs
    ]


def record_history(
    findings: list[Finding], path: Path, *, source: str, mode: str, exit_code: ExitCode, now: datetime
) -> tuple[SincePrevious | None, list[str]]:
    """Records the run; the comparison with the previous one, or None and a warning when the history
    file cannot be written (the audit's verdict and reports do not depend on it, but nobody may mistake
    "not compared" for "nothing changed")."""
    current = stored_findings(findings)
    statuses = CurrentStatuses.of(findings)
    changes: dict[str, Any] = {}

    def compare(previous: dict[str, StoredFinding]) -> tuple[int, int]:
        changes["new"], changes["resolved"], changes["persisting"] = compare_runs(
            previous, current, statuses=statuses
        )
        return len(changes["new"]), len(changes["resolved"])

    run = NewRun(
        generated_at=now,
        scope=scope_of((f.cluster for f in findings), source),
        source=source,
        mode=mode,
        exit_code=int(exit_code),
        counts=Counter(f.status.value for f in findings),
        findings=current,
    )
    try:
        run_id, previous = HistoryStore(path).record(run, compare=compare)
    except (sqlite3.Error, OSError, ValueError) as exc:
        return None, [f"history not recorded in {path}: {exc}"]
    since = SincePrevious(
        trend=_trend(path, run.scope),
        previous_run=previous.id if previous is not None else None,
        previous_at=previous.generated_at.isoformat(timespec="seconds") if previous is not None else None,
        run=run_id,
        scope=run.scope,
        history_file=str(path),
        **changes,
    )
    return since, []
