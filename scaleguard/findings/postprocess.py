"""The nightly-operations stages the pipeline runs between *evaluate* and *report*.

Each stage takes ``(findings, findings_file, options, now)`` and changes them in place; what it adds to
``findings.json`` lives in the file's extra keys so older readers simply ignore it:

1. ``waivers``  — applies ``--waivers FILE``; adds ``"waivers": {"applied", "active", "expired", "stale"}``
   and warns on stderr about expired and stale ones (must run first: waived findings are not problems
   for the stages after it);
2. ``causes``   — groups failing findings by root cause; adds ``"causes": [...]``, most impactful first;
3. ``history``  — records the run in the history file and adds ``"since_previous"``: the problems that
   are new and resolved since the previous run of the same clusters, and how many persist.

Order matters and is fixed here, not spread over imports.
"""

from __future__ import annotations

import sqlite3
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scaleguard.findings.causes import find_causes
from scaleguard.findings.model import Finding, FindingsFile
from scaleguard.findings.waivers import WaiverError, apply_waivers, load_waivers
from scaleguard.history.compare import CurrentStatuses, SincePrevious, compare_runs, scope_of, stored_findings
from scaleguard.history.store import HistoryStore, NewRun, default_history_path
from scaleguard.snapshot.model import Snapshot

if TYPE_CHECKING:
    from scaleguard.pipeline import AuditOptions, PostProcessor

__all__ = [
    "POST_PROCESSORS",
    "WaiverError",
    "apply_waiver_file",
    "group_causes",
    "record_history",
    "set_extra",
]


def set_extra(findings_file: FindingsFile, key: str, value: Any) -> None:
    """Add a key to findings.json beyond the core model (the model allows extras for exactly this)."""
    setattr(findings_file, key, value)


def warn(findings_file: FindingsFile, message: str) -> None:
    """A warning for the operator now (stderr) and for the reader later (findings.json ``warnings``)."""
    print(f"scaleguard: warning: {message}", file=sys.stderr)
    extras = findings_file.model_extra or {}
    set_extra(findings_file, "warnings", [*extras.get("warnings", []), message])


def apply_waiver_file(
    findings: list[Finding],
    findings_file: FindingsFile,
    options: AuditOptions,
    now: datetime,
    *,
    snapshot: Snapshot | None = None,
) -> None:
    if options.waivers is None:
        return
    today = now.date()
    waivers = load_waivers(options.waivers, today=today, max_days=options.waiver_max_days)
    outcome = apply_waivers(findings, waivers, today=today)
    set_extra(
        findings_file,
        "waivers",
        {"file": str(options.waivers), "max_days": waivers.max_days, **outcome.summary(today)},
    )
    for line in outcome.warnings(today):
        warn(findings_file, line)


def group_causes(
    findings: list[Finding],
    findings_file: FindingsFile,
    options: AuditOptions,
    now: datetime,
    *,
    snapshot: Snapshot | None = None,
) -> None:
    del now
    causes = find_causes(findings, snapshot if snapshot is not None else _snapshot(options))
    set_extra(findings_file, "causes", [c.as_json() for c in causes])


def _snapshot(options: AuditOptions) -> Snapshot | None:
    """The snapshot the pipeline wrote before evaluating (rule titles name thumbprints from it)."""
    path = options.out_dir / "snapshot.json"
    try:
        return Snapshot.read(path)
    except (OSError, ValueError):
        return None


def record_history(
    findings: list[Finding],
    findings_file: FindingsFile,
    options: AuditOptions,
    now: datetime,
    *,
    snapshot: Snapshot | None = None,
) -> None:
    path = options.history or default_history_path()
    if path is None:
        set_extra(findings_file, "since_previous", None)
        return
    from scaleguard.exitcodes import audit_exit_code

    code = audit_exit_code(
        findings, options.fail_on, allow_incomplete=options.allow_incomplete, warn_only=options.warn_only
    )
    current = stored_findings(findings)
    statuses = CurrentStatuses.of(findings)
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.status.value] = counts.get(f.status.value, 0) + 1
    since = SincePrevious(previous_run=None, previous_at=None)

    def compare(previous: dict[str, Any]) -> tuple[int, int]:
        since.new, since.resolved, since.persisting = compare_runs(previous, current, statuses=statuses)
        return len(since.new), len(since.resolved)

    run = NewRun(
        generated_at=now,
        scope=scope_of((f.cluster for f in findings), findings_file.source),
        source=findings_file.source,
        mode=findings_file.mode,
        exit_code=int(code),
        counts=counts,
        findings=current,
    )
    try:
        record, previous, _ = HistoryStore(path).record(run, compare=compare)
    except (sqlite3.Error, OSError, ValueError) as exc:
        # The audit's verdict and reports do not depend on the history; a broken or locked file must
        # not cost the night's report, but nobody may mistake "not compared" for "nothing changed".
        warn(findings_file, f"history not recorded in {path}: {exc}")
        set_extra(findings_file, "since_previous", None)
        return
    if previous is not None:
        since.previous_run = previous.id
        since.previous_at = previous.generated_at.isoformat(timespec="seconds")
    set_extra(
        findings_file,
        "since_previous",
        {**since.as_json(), "run": record.id, "scope": record.scope, "history_file": str(path)},
    )


POST_PROCESSORS: list[PostProcessor] = [apply_waiver_file, group_causes, record_history]
