"""The audit as one pass through the stages: collect → snapshot → evaluate → findings → reports.

Each stage hands the next one an artefact (``snapshot.json``, ``findings.json``) and never reaches back
to the nodes, so a report can be rebuilt from files alone and evaluation stays pure. The CLI only turns
flags into :class:`AuditOptions` and the result into an exit code.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scaleguard.exitcodes import ExitCode, audit_exit_code
from scaleguard.findings.model import Finding, FindingsFile, Severity
from scaleguard.findings.postprocess import apply_waiver_file, group_causes, record_history
from scaleguard.history.store import history_path
from scaleguard.policies.model import Policy, Thresholds
from scaleguard.safetext import os_name
from scaleguard.snapshot.model import Snapshot


@dataclass(frozen=True)
class AuditOptions:
    out_dir: Path
    evidence: Path | None = None
    inventory: Path | None = None
    policy_dirs: tuple[Path, ...] = ()
    fail_on: Severity = Severity.HIGH
    allow_incomplete: bool = False
    warn_only: bool = False
    concurrency: int = 8
    insecure: bool = False
    progress: bool = True
    waivers: Path | None = None
    waiver_max_days: int | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    history: Path | None = None
    notify_webhook: str | None = None
    notify: tuple[str, ...] = ()
    """Apprise URLs (:mod:`scaleguard.alerts`)."""
    report_url: str | None = None
    """Where people open the report (a share or a web server); linked from notifications."""
    now: datetime | None = None


@dataclass
class AuditResult:
    snapshot: Snapshot
    findings: FindingsFile
    exit_code: ExitCode
    outputs: dict[str, Path] = field(default_factory=dict)
    notify_failures: list[str] = field(default_factory=list)
    """One line per notification that did not go out (reported in the exit summary, never the exit code)."""


def collect(options: AuditOptions) -> Snapshot:
    """Stage 1: evidence folder or live WinRM, both giving the same snapshot model."""
    if options.evidence is not None:
        from scaleguard.collectors.evidence import read_evidence

        return Snapshot(clusters=[read_evidence(options.evidence)])
    if options.inventory is not None:
        from scaleguard.collectors.live import collect_inventory

        return collect_inventory(
            options.inventory,
            concurrency=options.concurrency,
            insecure=options.insecure,
            progress=options.progress,
        )
    raise ValueError("either an evidence folder or an inventory is needed")


def evaluate(
    snapshot: Snapshot,
    options: AuditOptions,
    now: datetime,
    *,
    policies: list[Policy] | None = None,
) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Stage 2 (pure): every policy (``policies``, else those ``options`` name) against every node it
    applies to."""
    from scaleguard.policies.engine import evaluate as evaluate_policies

    if policies is None:
        policies = load_policies(options)
    findings = evaluate_policies(snapshot, policies, now=now, thresholds=options.thresholds)
    return findings, [p.summary() for p in policies]


def load_policies(options: AuditOptions) -> list[Policy]:
    """The built-in pack and ``--policies`` packs; raises on an invalid policy file (a usage error)."""
    from scaleguard.policies.loader import load_policies as load

    return load(list(options.policy_dirs))


def run_audit(options: AuditOptions, *, on_stage: Callable[[str], None] | None = None) -> AuditResult:
    """Every stage, in order, with the cyclic garbage collector paused (see :func:`gc_paused`)."""
    with gc_paused():
        return _run_audit(options, on_stage or (lambda _stage: None))


@contextmanager
def gc_paused() -> Iterator[None]:
    """The audit builds hundreds of thousands of small objects that all stay alive until it ends; the
    cyclic collector would rescan that growing heap again and again for garbage it does not produce.
    Reference counting still frees what is dropped.

    On the way out everything allocated meanwhile goes straight to the oldest generation (``freeze`` +
    ``unfreeze``: two list splices): otherwise the first allocation after ``gc.enable()`` triggers a
    young collection that walks all of it only to promote it. Later full collections still see it, so
    garbage cycles are not leaked."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def _post_audit(findings_file: FindingsFile, snapshot: Snapshot, options: AuditOptions, now: datetime) -> ExitCode:
    """Waivers, root causes and history (see :mod:`scaleguard.findings.postprocess`) into
    ``findings_file``; returns the exit code, decided once the waivers have been applied."""
    findings = findings_file.findings
    if options.waivers is not None:
        findings_file.waivers, warnings = apply_waiver_file(
            findings, options.waivers, max_days=options.waiver_max_days, today=now.date()
        )
        _warn(findings_file, warnings)
    findings_file.causes = group_causes(findings, snapshot)
    code = audit_exit_code(
        findings, options.fail_on, allow_incomplete=options.allow_incomplete, warn_only=options.warn_only
    )
    history = history_path(options.history)
    if history is not None:
        findings_file.since_previous, warnings = record_history(
            findings, history, source=findings_file.source, mode=findings_file.mode, exit_code=code, now=now
        )
        _warn(findings_file, warnings)
    return code


def _warn(findings_file: FindingsFile, warnings: list[str]) -> None:
    """For the operator now (stderr) and for the reader later (findings.json ``warnings``)."""
    for message in warnings:
        print(f"scaleguard: warning: {message}", file=sys.stderr)
        findings_file.warnings.append(message)


def _run_audit(options: AuditOptions, note: Callable[[str], None]) -> AuditResult:
    started = time.monotonic()
    now = options.now or datetime.now(UTC)
    options.out_dir.mkdir(parents=True, exist_ok=True)

    policies = load_policies(options)  # a broken policy file is a usage error: before any collection
    note("collect")
    snapshot = collect(options)
    note("evaluate")
    findings, policy_summaries = evaluate(snapshot, options, now, policies=policies)
    source = os_name(str(options.evidence or options.inventory))
    live = any(c.mode == "live" for c in snapshot.clusters)
    insecure = any(n.collection.insecure for c in snapshot.clusters for n in c.nodes)
    unencrypted = [n.name for c in snapshot.clusters for n in c.nodes if n.collection.unencrypted]
    findings_file = FindingsFile(
        generated_at=now,
        source=source,
        mode="live" if live else "offline",
        insecure=insecure,
        unencrypted_nodes=unencrypted,
        policies=policy_summaries,
        findings=findings,
    )
    code = _post_audit(findings_file, snapshot, options, now)

    note("report")
    from scaleguard.reports.base import ReportContext
    from scaleguard.reports.registry import write_reports

    snapshot_path = options.out_dir / "snapshot.json"
    findings_path = options.out_dir / "findings.json"
    snapshot.write(snapshot_path)
    findings_file.write(findings_path)
    outputs = write_reports(options.out_dir, ReportContext(snapshot, findings_file, now, options.thresholds))
    from scaleguard.reports.metrics import FILENAME as METRICS
    from scaleguard.reports.metrics import write_metrics

    # Last, so its completion time and duration cover every other file (the audit's clock plus the
    # time elapsed, so a run with a fixed ``now`` still reports a true duration).
    finished = now + timedelta(seconds=time.monotonic() - started)
    metrics = write_metrics(options.out_dir, snapshot, findings_file, now=now, finished=finished)
    outputs = {"snapshot.json": snapshot_path, "findings.json": findings_path, **outputs, METRICS: metrics}
    result = AuditResult(snapshot=snapshot, findings=findings_file, exit_code=code, outputs=outputs)
    if options.notify_webhook or options.notify:  # after the reports exist, so the summary can point at them
        result.notify_failures = _notify(options, result)
    return result


def _notify(options: AuditOptions, result: AuditResult) -> list[str]:
    """Send every notification; returns one line per failure, for the exit summary (never the exit code)."""
    failures: list[str] = []
    if options.notify_webhook:
        from scaleguard.notify import WebhookError, post_json, summary_payload

        try:
            payload = summary_payload(
                result.findings, result.exit_code, result.outputs.get("report.html"), report_url=options.report_url
            )
            post_json(options.notify_webhook, payload)
        except WebhookError as exc:
            failures.append(str(exc))
    if options.notify:
        from scaleguard.alerts import send, summary_message

        message = summary_message(result.findings, result.snapshot, result.exit_code, report_url=options.report_url)
        failures += [failure.line() for failure in send(list(options.notify), message)]
    return failures
