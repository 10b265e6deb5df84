"""``metrics.prom``: the audit as OpenMetrics text, for Prometheus through node_exporter's textfile collector.

Certificate expiry is what Prometheus users alert on (x509-certificate-exporter, ssl_exporter), so every
certificate Scale Out depends on (the rows of ``expiry.csv``: the master and worker certificates, their
trust copies, what HTTP.sys serves and what workers pin) becomes a not-after timestamp and a days-left
gauge labelled by cluster, node, role, store and thumbprint. Findings are counted per cluster, severity
and status (every combination, zeros included, so ``absent()`` never has to guess), and each cluster's
audit says when it completed and how long it took.

The text is produced by ``prometheus_client``'s OpenMetrics exposition. It carries no sample timestamps
(node_exporter refuses them in text files); ``# UNIT`` and ``# EOF`` lines are comments to the classic
text parser node_exporter uses, so the same file serves both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import ALLOWUTF8, generate_latest

from scaleguard.findings.model import FindingsFile, Severity, Status
from scaleguard.reports.base import write_atomic
from scaleguard.reports.expiry import expiry_rows
from scaleguard.snapshot.model import Snapshot

FILENAME = "metrics.prom"
CERT_LABELS = ["cluster", "node", "role", "store", "thumbprint"]


class _AuditCollector:
    """A one-shot ``prometheus_client`` collector over one finished audit (nothing is kept between runs)."""

    def __init__(self, snapshot: Snapshot, findings: FindingsFile, now: datetime, finished: datetime) -> None:
        self.snapshot = snapshot
        self.findings = findings
        self.now = now
        self.finished = finished

    def collect(self) -> Iterator[Metric]:
        yield from self._certificates()
        yield self._finding_counts()
        clusters = [c.cluster for c in self.snapshot.clusters] or sorted({f.cluster for f in self.findings.findings})
        completed = GaugeMetricFamily(
            "scaleguard_audit_completion_timestamp_seconds",
            "When the audit of the cluster completed (Unix time).",
            labels=["cluster"],
            unit="seconds",
        )
        duration = GaugeMetricFamily(
            "scaleguard_audit_duration_seconds",
            "How long the audit took, collection to reports.",
            labels=["cluster"],
            unit="seconds",
        )
        for cluster in clusters:
            completed.add_metric([cluster], self.finished.timestamp())
            duration.add_metric([cluster], max(0.0, (self.finished - self.now).total_seconds()))
        yield completed
        yield duration

    def _certificates(self) -> Iterator[Metric]:
        not_after = GaugeMetricFamily(
            "scaleguard_certificate_not_after_timestamp_seconds",
            "Not-after of a certificate Scale Out depends on (Unix time), per copy in a node's store.",
            unit="seconds",
        )
        days = GaugeMetricFamily(
            "scaleguard_certificate_days_left",
            "Whole days until the certificate expires at the audit's time (negative once expired).",
        )
        seen: set[tuple[str, ...]] = set()  # one series per label set: node_exporter rejects duplicates
        for row in expiry_rows(self.snapshot, self.now):
            key = (row.cluster, row.node, row.role, row.store, row.cert.thumbprint)
            if key in seen:
                continue
            seen.add(key)
            labels = dict(zip(CERT_LABELS, key, strict=True))  # one dict for both samples: only read
            not_after.add_sample(not_after.name, labels, row.cert.not_after.timestamp())
            days.add_sample(days.name, labels, row.days_left)
        yield not_after
        yield days

    def _finding_counts(self) -> Metric:
        counts = Counter((f.cluster, f.severity, f.status) for f in self.findings.findings)
        family = GaugeMetricFamily(
            "scaleguard_findings",
            "Findings of the audit by cluster, severity and status.",
            labels=["cluster", "severity", "status"],
        )
        for cluster in sorted({cluster for cluster, _, _ in counts}):
            for severity in Severity:
                for status in Status:
                    family.add_metric([cluster, severity.value, status.value], counts[(cluster, severity, status)])
        return family


def render_metrics(snapshot: Snapshot, findings: FindingsFile, *, now: datetime, finished: datetime) -> bytes:
    """OpenMetrics text for one audit; ``now`` is the audit's clock (days left agree with the verdicts),
    ``finished`` when its reports were written."""
    # ``generate_latest`` only calls ``collect()``: no registry is needed for one collector. The names are
    # fixed and in the legacy character set, so ``allow-utf-8`` writes them as the default ``underscores``
    # would, without rebuilding every sample's name one character at a time.
    text: bytes = generate_latest(  # type: ignore[no-untyped-call]
        _AuditCollector(snapshot, findings, now, finished), escaping=ALLOWUTF8
    )
    return text


def write_metrics(
    out_dir: Path, snapshot: Snapshot, findings: FindingsFile, *, now: datetime, finished: datetime
) -> Path:
    return write_atomic(out_dir / FILENAME, render_metrics(snapshot, findings, now=now, finished=finished))
