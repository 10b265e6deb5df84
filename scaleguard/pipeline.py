"""The audit as one pass through the stages: collect → snapshot → evaluate → findings → reports.

Each stage hands the next one an artefact (``snapshot.json``, ``findings.json``) and never reaches back
to the nodes, so a report can be rebuilt from files alone and evaluation stays pure. The CLI only turns
flags into :class:`AuditOptions` and the result into an exit code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from scaleguard import parallel
from scaleguard.exitcodes import ExitCode, audit_exit_code
from scaleguard.findings.model import Finding, FindingsFile, Severity
from scaleguard.policies.model import Policy, Thresholds
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
    extras: dict[str, Any] = field(default_factory=dict)


def collect(options: AuditOptions, *, meanwhile: Callable[[], object] | None = None) -> Snapshot:
    """Stage 1: evidence folder or live WinRM, both giving the same snapshot model.

    ``meanwhile`` is run once, before or during collection, on a CPU collection leaves idle."""
    if options.evidence is not None:
        from scaleguard.collectors.evidence import read_evidence

        return Snapshot(clusters=[read_evidence(options.evidence, meanwhile=meanwhile)])
    if meanwhile is not None:
        meanwhile()
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
    errand: parallel.Deferred[Any] | None = None,
) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Stage 2 (pure): every policy (``policies``, else those ``options`` name) against every node it
    applies to. ``errand``: independent work the engine's helper process may take on meanwhile."""
    from scaleguard.policies.engine import evaluate as evaluate_policies

    if policies is None:
        policies = load_policies(options)
    findings = evaluate_policies(snapshot, policies, now=now, thresholds=options.thresholds, errand=errand)
    return findings, [p.summary() for p in policies]


def load_policies(options: AuditOptions) -> list[Policy]:
    """The built-in pack and ``--policies`` packs; raises on an invalid policy file (a usage error)."""
    from scaleguard.policies.loader import load_policies as load

    return load(list(options.policy_dirs))


class PostProcessor(Protocol):
    """A later stage that enriches the findings file in place (waivers, history, root causes)."""

    def __call__(
        self,
        findings: list[Finding],
        findings_file: FindingsFile,
        options: AuditOptions,
        now: datetime,
        *,
        snapshot: Snapshot | None = None,
    ) -> None: ...


def _post_processors() -> list[PostProcessor]:
    hooks: list[PostProcessor] = []
    try:
        from scaleguard.findings.postprocess import POST_PROCESSORS
    except ImportError:  # the nightly-operations stages are optional building blocks
        return hooks
    hooks.extend(POST_PROCESSORS)
    return hooks


def _write_snapshot_artefacts(
    snapshot: Snapshot, snapshot_path: Path, options: AuditOptions, now: datetime
) -> dict[str, Path]:
    """``snapshot.json`` and the reports that read nothing else (``registry.SNAPSHOT_ONLY``)."""
    from scaleguard.reports.registry import write_snapshot_reports

    snapshot.write(snapshot_path)
    return write_snapshot_reports(options.out_dir, snapshot, now=now)


def run_audit(options: AuditOptions, *, on_stage: Callable[[str], None] | None = None) -> AuditResult:
    """Every stage, in order. The cyclic garbage collector is paused throughout (the audit's objects live
    until it ends, see :func:`scaleguard.parallel.gc_paused`), and on a system with ``fork`` the stages'
    independent writes overlap: ``snapshot.json`` and the reports that need only the snapshot are written
    by the child that helps evaluate, before it judges, and ``findings.json`` and the other reports are
    written by this process and a child side by side (:mod:`scaleguard.parallel`)."""
    with parallel.gc_paused():
        return _run_audit(options, on_stage or (lambda _stage: None))


def _run_audit(options: AuditOptions, note: Callable[[str], None]) -> AuditResult:
    started = time.monotonic()
    now = options.now or datetime.now(UTC)
    options.out_dir.mkdir(parents=True, exist_ok=True)

    note("collect")
    loaded: list[list[Policy]] = []
    snapshot = collect(options, meanwhile=lambda: loaded.append(load_policies(options)))
    snapshot_path = options.out_dir / "snapshot.json"
    # What needs only the snapshot is written by the process that helps evaluate, before it judges
    # (one-directional: it reads the snapshot, writes files, and hands nothing back but their names);
    # with no helper, it is written here once the reports are.
    snapshot_written = parallel.Deferred(lambda: _write_snapshot_artefacts(snapshot, snapshot_path, options, now))

    note("evaluate")
    findings, policy_summaries = evaluate(snapshot, options, now, policies=loaded[0], errand=snapshot_written)
    source = str(options.evidence or options.inventory)
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
    for hook in _post_processors():
        hook(findings_file.findings, findings_file, options, now, snapshot=snapshot)
    findings_path = options.out_dir / "findings.json"

    note("report")
    from scaleguard.reports.registry import SNAPSHOT_ONLY, write_reports

    try:
        outputs = write_reports(
            options.out_dir, snapshot, findings_file, now=now, also=[lambda: findings_file.write(findings_path)],
            skip=SNAPSHOT_ONLY,
        )
    finally:
        early = snapshot_written.result()
    from scaleguard.reports.metrics import FILENAME as METRICS
    from scaleguard.reports.metrics import write_metrics

    # Last, so its completion time and duration cover every other file (the audit's clock plus the
    # time elapsed, so a run with a fixed ``now`` still reports a true duration).
    finished = now + timedelta(seconds=time.monotonic() - started)
    metrics = write_metrics(options.out_dir, snapshot, findings_file, now=now, finished=finished)
    outputs = {"snapshot.json": snapshot_path, "findings.json": findings_path, **outputs, **early, METRICS: metrics}
    code = audit_exit_code(
        findings_file.findings, options.fail_on, allow_incomplete=options.allow_incomplete,
        warn_only=options.warn_only,
    )
    result = AuditResult(snapshot=snapshot, findings=findings_file, exit_code=code, outputs=outputs)
    if options.notify_webhook or options.notify:  # after the reports exist, so the summary can point at them
        result.extras["notify_failures"] = _notify(options, result)
    return result


def _notify(options: AuditOptions, result: AuditResult) -> list[str]:
    """Send every notification; returns one line per failure, for the exit summary (never the exit code)."""
    failures: list[str] = []
    if options.notify_webhook:
        from scaleguard.notify import WebhookError, post_json, summary_payload

        try:
            post_json(options.notify_webhook, summary_payload(result, report_url=options.report_url))
        except WebhookError as exc:
            failures.append(str(exc))
    if options.notify:
        from scaleguard.alerts import send, summary_message

        message = summary_message(result, report_url=options.report_url)
        failures += [failure.line() for failure in send(list(options.notify), message)]
    return failures
