"""Tables a human reads, derived from the snapshot and findings (shared by every human-facing report).

Ordering is "problems first" everywhere: an auditor opens a report to see what is wrong, and a report of
14,000 findings that opens on passes hides the twelve that matter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scaleguard.findings.model import Finding, FindingsFile, Severity, Status
from scaleguard.policies.model import Thresholds
from scaleguard.reports.fixsteps import fix_step
from scaleguard.snapshot.model import NodeSnapshot, Snapshot, days_left

STATUS_ORDER: tuple[Status, ...] = (
    Status.ERROR, Status.FAIL, Status.NOT_ASSESSED, Status.WAIVED, Status.PASS,
)
SEVERITY_ORDER: tuple[Severity, ...] = (
    Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO,
)
_STATUS_RANK = {s: i for i, s in enumerate(STATUS_ORDER)}



_SEVERITY_RANK = {s: s.rank for s in Severity}  # ``rank`` is a property: looked up once, not per finding
ENUM_TEXT: dict[Status | Severity, str] = {**{s: s.value for s in Status}, **{s: s.value for s in Severity}}
"""A status or severity as reports write it. Enum ``.value`` is a slow descriptor on Python 3.11, and the
reports look it up twice per finding (14,000 per 1,000-node audit)."""


def finding_order(f: Finding) -> tuple[int, int, str, str, str]:
    return (_STATUS_RANK[f.status], -_SEVERITY_RANK[f.severity], f.policy, f.cluster, f.node)


def sorted_findings(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=finding_order)


def severity_status_matrix(findings: Iterable[Finding]) -> dict[Severity, dict[Status, int]]:
    matrix = {sev: dict.fromkeys(STATUS_ORDER, 0) for sev in SEVERITY_ORDER}
    for f in findings:
        matrix[f.severity][f.status] += 1
    return matrix


def bucket_of(days: int, limits: Thresholds) -> str:
    if days < 0:
        return "expired"
    if days <= limits.expiry_high_days:
        return "high"
    if days <= limits.expiry_medium_days:
        return "medium"
    return "later"


_EXPIRY_CLASS = {"expired": "expired", "high": "soon", "medium": "warn", "later": "ok"}


def expiry_class(days: int | None, limits: Thresholds) -> str:
    return "unknown" if days is None else _EXPIRY_CLASS[bucket_of(days, limits)]


@dataclass
class PolicyRow:
    id: str
    title: str
    severity: str
    scope: str
    description: str
    references: list[str]
    remediation: str
    fix_step: str
    counts: dict[Status, int] = field(default_factory=dict)
    not_applicable: int = 0
    """not_assessed findings of a check that cannot apply in this mode: shown, but not a problem."""

    @property
    def problems(self) -> int:
        counted = (Status.ERROR, Status.FAIL, Status.NOT_ASSESSED)
        return sum(self.counts.get(s, 0) for s in counted) - self.not_applicable


def policy_rows(findings_file: FindingsFile) -> list[PolicyRow]:
    """One row per policy: what the pack declares, completed by what its findings carry."""
    declared: dict[str, dict[str, Any]] = {}
    for summary in findings_file.policies:
        pid = str(summary.get("id", ""))
        if pid:
            declared[pid] = summary
    # per policy, in one pass: its first finding, its counts per status, its checks that cannot apply
    first_of: dict[str, Finding] = {}
    counts_of: dict[str, dict[Status, int]] = {}
    not_applicable_of: dict[str, int] = {}
    not_assessed = Status.NOT_ASSESSED
    for f in findings_file.findings:
        pid = f.policy
        counts = counts_of.get(pid)
        if counts is None:
            first_of[pid] = f
            counts = counts_of[pid] = dict.fromkeys(STATUS_ORDER, 0)
            not_applicable_of[pid] = 0
        counts[f.status] += 1
        if f.status is not_assessed and not f.applicable:
            not_applicable_of[pid] += 1
    rows = []
    for pid in sorted(set(declared) | set(counts_of)):
        meta = declared.get(pid, {})
        first = first_of.get(pid)
        remediation = str(meta.get("remediation") or (first.remediation if first else "") or "")
        references = meta.get("references") or (first.references if first else [])
        rows.append(
            PolicyRow(
                id=pid,
                title=str(meta.get("title") or (first.title if first else "")),
                severity=str(meta.get("severity") or (first.severity.value if first else "")),
                scope=str(meta.get("scope") or (first.scope if first else "")),
                description=str(meta.get("description") or ""),
                references=[str(r) for r in references],
                remediation=remediation,
                fix_step=fix_step(remediation),
                counts=counts_of.get(pid) or dict.fromkeys(STATUS_ORDER, 0),
                not_applicable=not_applicable_of.get(pid, 0),
            )
        )
    rows.sort(key=lambda r: (-r.counts[Status.ERROR] - r.counts[Status.FAIL], -r.problems, r.id))
    return rows


@dataclass
class NodeRow:
    cluster: str
    name: str
    roles: list[str]
    state: str
    reason: str
    fqdn: str
    counts: dict[Status, int]
    worst: str
    certificates: int | None
    soonest_days: int | None


def node_rows(snapshot: Snapshot, findings: Iterable[Finding], now: datetime) -> list[NodeRow]:
    """Every node of the snapshot, plus any subject a finding names that the snapshot lacks."""
    tallies = _node_tallies(findings)
    rows = []
    seen: set[tuple[str, str]] = set()
    for cluster in snapshot.clusters:
        for node in cluster.nodes:
            key = (cluster.cluster, node.name.lower())
            seen.add(key)
            stores = [s for s in (node.root, node.my) if s is not None]
            tally = tallies.get(key)
            rows.append(
                NodeRow(
                    cluster=cluster.cluster,
                    name=node.name,
                    roles=node.roles(),
                    state=node.collection.state.value,
                    reason=node.collection.reason or "",
                    fqdn=node.identity.fqdn or "",
                    counts=tally.counts if tally else dict.fromkeys(STATUS_ORDER, 0),
                    worst=tally.worst() if tally else "",
                    certificates=sum(len(s.certificates) for s in stores) if stores else None,
                    soonest_days=_soonest_own(node, now) if stores else None,
                )
            )
    for (cluster_name, node_key), tally in tallies.items():
        if (cluster_name, node_key) in seen:
            continue
        # cluster-scope policies report on the cluster itself; anything else names a node we never saw
        is_cluster = node_key == cluster_name.lower()
        rows.append(
            NodeRow(cluster_name, tally.name, ["cluster"] if is_cluster else [],
                    "cluster" if is_cluster else "not in snapshot", "", "", tally.counts,
                    tally.worst(), None, None)
        )
    rows.sort(key=lambda r: (-(r.counts[Status.ERROR] + r.counts[Status.FAIL]), r.cluster, r.name.lower()))
    return rows


_PROBLEMS = frozenset({Status.ERROR, Status.FAIL})


class _NodeTally:
    """One node's findings counted: per status, and its worst problem's severity."""

    __slots__ = ("name", "counts", "worst_severity")

    def __init__(self, name: str) -> None:
        self.name = name  # as the first finding spells it
        self.counts = dict.fromkeys(STATUS_ORDER, 0)
        self.worst_severity: Severity | None = None

    def worst(self) -> str:
        return self.worst_severity.value if self.worst_severity is not None else ""


def _node_tallies(findings: Iterable[Finding]) -> dict[tuple[str, str], _NodeTally]:
    """Per (cluster, lower-cased node): one pass over the findings (a 1,000-node audit has 14,000), where
    grouping them first and then counting each group took three passes."""
    tallies: dict[tuple[str, str], _NodeTally] = {}
    for f in findings:
        key = (f.cluster, f.node.lower())
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _NodeTally(f.node)
        status = f.status
        tally.counts[status] += 1
        if status in _PROBLEMS:
            worst = tally.worst_severity
            if worst is None or _SEVERITY_RANK[f.severity] > _SEVERITY_RANK[worst]:
                tally.worst_severity = f.severity
    return tallies


def _soonest_own(node: NodeSnapshot, now: datetime) -> int | None:
    """Soonest expiry among the node's *own* Scale Out certificates (the ones its config names).

    Public root CAs in Root expire on their own schedule and say nothing about the cluster, so they are
    left out; the certificate inventory still lists them with their days left.
    """
    wanted = {
        _hex_only(config.get(key))
        for config, key in (
            (node.master_config, "SSLCertThumbprint"),
            (node.worker_config, "WorkerHttpsCertThumbprint"),
        )
        if config is not None
    }
    days = [
        days_left(c.not_after, now)
        for s in (node.root, node.my) if s is not None
        for c in s.certificates if c.thumbprint in wanted
    ]
    return min(days) if days else None


_NOT_HEX = re.compile(r"[^0-9a-fA-F]+")


def _hex_only(value: str | None) -> str:
    """A config thumbprint as the store names it (spaces and U+200E dropped), only to find the cert."""
    return _NOT_HEX.sub("", value or "").upper()
