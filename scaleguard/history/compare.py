"""What changed since the previous run: new problems, resolved problems, and how many persist.

A *problem* is a finding that is ``fail`` or ``error`` — what breaks Scale Out or the audit. A finding
that is waived, not assessed or passing is not one; a problem that becomes waived is listed as resolved
with ``now: waived``, so the difference between "fixed" and "accepted" stays visible.

Runs are compared within a *scope*: the set of clusters audited. A nightly job that audits ``prod``
from a fresh evidence folder every night (``/evidence/2026-05-01/prod``, ...) compares night to night,
while an ad-hoc audit of ``staging`` from the same machine never becomes "everything in prod resolved".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scaleguard.findings.fingerprint import fingerprint
from scaleguard.findings.model import Finding, Severity, Status
from scaleguard.history.store import StoredFinding

_STATUS_WEIGHT = {
    Status.ERROR.value: 4,
    Status.FAIL.value: 3,
    Status.NOT_ASSESSED.value: 2,
    Status.WAIVED.value: 1,
}
_MESSAGE_LIMIT = 500


def scope_of(clusters: Iterable[str], source: str) -> str:
    """The sorted, de-duplicated cluster names; the source only when findings name no cluster."""
    names = sorted({c.strip().casefold() for c in clusters if c.strip()})
    return ",".join(names) if names else f"source:{source}"


def stored_findings(findings: Iterable[Finding]) -> dict[str, StoredFinding]:
    """Every non-passing finding by fingerprint; if a policy reports one subject twice, the worse wins."""
    out: dict[str, StoredFinding] = {}
    for f in findings:
        if f.status is Status.PASS:
            continue
        fp = fingerprint(f)
        row = StoredFinding(
            fingerprint=fp,
            policy=f.policy,
            cluster=f.cluster,
            node=f.node,
            subject=f.subject,
            status=f.status.value,
            severity=f.severity.value,
            message=f.message[:_MESSAGE_LIMIT],
        )
        held = out.get(fp)
        if held is None or _weight(row) > _weight(held):
            out[fp] = row
    return out


def _weight(f: StoredFinding) -> tuple[int, int]:
    return _STATUS_WEIGHT.get(f.status, 0), Severity(f.severity).rank


@dataclass(frozen=True)
class CurrentStatuses:
    """Where every finding of the current run stands, passes included, to say what a resolved one is now.

    By fingerprint first; when the subject changed with the fix (a re-pinned worker's SO-W02 names the
    new thumbprint), by (policy, cluster, node), the worst status among that node's findings of it.
    """

    by_fingerprint: Mapping[str, str]
    by_node: Mapping[tuple[str, str, str], str]

    @classmethod
    def of(cls, findings: Iterable[Finding]) -> CurrentStatuses:
        by_fp: dict[str, str] = {}
        by_node: dict[tuple[str, str, str], str] = {}
        for f in findings:
            status = f.status.value
            by_fp[fingerprint(f)] = status
            key = _node_key(f.policy, f.cluster, f.node)
            if _STATUS_WEIGHT.get(status, 0) >= _STATUS_WEIGHT.get(by_node.get(key, ""), -1):
                by_node[key] = status
        return cls(by_fp, by_node)

    def now(self, old: StoredFinding) -> str:
        same_node = self.by_node.get(_node_key(old.policy, old.cluster, old.node), "absent")
        return self.by_fingerprint.get(old.fingerprint, same_node)


def _node_key(policy: str, cluster: str, node: str) -> tuple[str, str, str]:
    return (policy.upper(), cluster.casefold(), node.casefold())


def compare_runs(
    previous: Mapping[str, StoredFinding],
    current: Mapping[str, StoredFinding],
    *,
    statuses: CurrentStatuses,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(new, resolved, persisting) between two runs' stored findings.

    A resolved entry says what the finding is ``now``: ``pass``, ``waived``, another status when the
    policy still fails on that node for another subject (which is then also listed as new), or
    ``absent`` when the policy no longer evaluates that node at all.
    """
    was = {fp for fp, f in previous.items() if f.is_problem}
    now = {fp for fp, f in current.items() if f.is_problem}
    new = [_entry(current[fp]) for fp in now - was]
    resolved = [
        {**_entry(previous[fp]), "was": previous[fp].status, "now": statuses.now(previous[fp])}
        for fp in was - now
    ]
    return sorted(new, key=_order), sorted(resolved, key=_order), len(now & was)


def _entry(f: StoredFinding) -> dict[str, Any]:
    return {
        "policy": f.policy,
        "cluster": f.cluster,
        "node": f.node,
        "subject": f.subject,
        "status": f.status,
        "severity": f.severity,
        "message": f.message,
        "fingerprint": f.fingerprint,
    }


def _order(entry: dict[str, Any]) -> tuple[int, str, str, str]:
    return (-Severity(entry["severity"]).rank, entry["policy"], entry["cluster"], entry["node"].casefold())
