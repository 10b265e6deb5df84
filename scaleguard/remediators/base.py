"""What every remediator shares: the planning context, the unit builder and the remediator contract.

A remediator is pure: it reads failing findings and the intended cluster state, and answers with units
of typed steps (or with manual items when no safe automatic fix exists). It never talks to a node. The
context hands out ids, records what happened to every finding, and keeps the intended state current, so
remediators planned later see the effect of those planned earlier.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, Literal

from scaleguard.findings.model import Finding, Remediation
from scaleguard.remediators.actions import PARAMS, ActionParams, RestartService, Role, SecretRef, step_refs
from scaleguard.remediators.intent import ClusterIntent, NodeIntent
from scaleguard.remediators.manual_steps import documented_steps
from scaleguard.remediators.model import ActionName, Disposition, Expected, ManualItem, Outcome, Step, Unit

ACTION_OF: dict[type, ActionName] = {model: action for action, model in PARAMS.items()}  # type: ignore[misc]


def role_of(role: str) -> Role:
    return "master" if role == "master" else "worker"


@dataclass(frozen=True)
class MasterPfx:
    """An enterprise master certificate to import instead of creating one (``--master-pfx``)."""

    path: str
    password: SecretRef
    thumbprint: str
    der_b64: str
    names: tuple[str, ...]
    common_names: tuple[str, ...]
    subject: str
    key_bits: int | None
    self_signed: bool


@dataclass(frozen=True)
class PlanOptions:
    master_hash: Literal["sha256", "sha1"] = "sha256"
    worker_hash: Literal["sha256", "sha1"] = "sha256"
    key_bits: int = 2048
    valid_days: int = 730
    max_nodes: int | None = None
    master_pfx: MasterPfx | None = None
    new_guid: Callable[[], str] = field(default=lambda: "{" + str(uuid.uuid4()) + "}")
    now: datetime | None = None
    source: str = ""
    valid_for: timedelta = timedelta(days=7)


def finding_key(finding: Finding, cluster: str) -> str:
    return f"{finding.policy}@{cluster}/{finding.node}"


class UnitDraft:
    """A unit under construction: steps are numbered as they are added (refs need their ids)."""

    def __init__(
        self, ctx: PlanContext, remediation: Remediation, cluster: str, target: str, summary: str, phase: int
    ) -> None:
        self.ctx = ctx
        self.id = ctx.next_unit_id()
        self.remediation = remediation
        self.cluster = cluster
        self.target = target
        self.summary = summary
        self.phase = phase
        self.findings: list[str] = []
        self.depends_on: list[str] = []
        self.steps: list[Step] = []

    def step(
        self,
        node: NodeIntent,
        params: ActionParams,
        *,
        depends_on: Iterable[str] = (),
        expect: Expected | None = None,
    ) -> str:
        step_id = self.ctx.next_step_id()
        refs = [ref.from_step for ref in step_refs(params)]
        deps = [d for d in dict.fromkeys([*depends_on, *refs]) if d != step_id]
        own_node = {s.id for s in self.steps if s.node.lower() == node.name.lower()}
        self.steps.append(
            Step(
                id=step_id,
                unit=self.id,
                cluster=self.cluster,
                node=node.name,
                action=ACTION_OF[type(params)],
                params=params,
                depends_on=[d for d in deps if d not in own_node],
                expect=expect,
            )
        )
        return step_id

    def depend(self, unit_id: str | None) -> None:
        if unit_id and unit_id != self.id and unit_id not in self.depends_on:
            self.depends_on.append(unit_id)

    def restart(self, node: NodeIntent, role: str, *, depends_on: Iterable[str] = ()) -> str | None:
        """Restart ``role``'s service on ``node`` (documented after every config/trust/key change)."""
        service = node.service(role)
        if service is None:
            return None
        node.restarts.setdefault(service.name, []).append(self.id)
        return self.step(
            node,
            RestartService(role=role_of(role), name=node.service_name(role)),
            depends_on=depends_on,
        )

    def build(self) -> Unit:
        nodes = list(dict.fromkeys(s.node for s in self.steps))
        return Unit(
            id=self.id,
            remediation=self.remediation,
            cluster=self.cluster,
            target=self.target,
            summary=self.summary,
            findings=list(self.findings),
            nodes=nodes,
            depends_on=list(self.depends_on),
            steps=[s.id for s in self.steps],
        )


@dataclass
class PlanContext:
    options: PlanOptions
    clusters: dict[str, ClusterIntent]
    units: list[tuple[int, UnitDraft]] = field(default_factory=list)
    dispositions: list[Disposition] = field(default_factory=list)
    manual_items: list[ManualItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _unit_counter: int = 0
    _step_counter: int = 0

    def next_unit_id(self) -> str:
        self._unit_counter += 1
        return f"u{self._unit_counter:02d}"

    def next_step_id(self) -> str:
        self._step_counter += 1
        return f"s{self._step_counter:03d}"

    def cluster_of(self, finding: Finding) -> ClusterIntent | None:
        if finding.cluster and finding.cluster in self.clusters:
            return self.clusters[finding.cluster]
        holding = [c for c in self.clusters.values() if c.node(finding.node) is not None]
        if len(holding) == 1:
            return holding[0]
        return next(iter(self.clusters.values()), None) if len(self.clusters) == 1 else None

    def draft(self, remediator: Remediator, cluster: ClusterIntent, target: str, summary: str) -> UnitDraft:
        return UnitDraft(self, remediator.name, cluster.name, target, summary, remediator.phase)

    def commit(self, draft: UnitDraft, findings: Iterable[Finding]) -> None:
        """Keep ``draft`` if it has steps; every finding it answers is recorded as planned by it."""
        findings = list(findings)
        if not draft.steps:
            return
        draft.findings = [finding_key(f, draft.cluster) for f in findings]
        self.units.append((draft.phase, draft))
        for finding in findings:
            self.record(finding, draft.cluster, "planned", unit=draft.id, note=draft.summary)

    def answered(self, finding: Finding, cluster: str) -> bool:
        """Whether ``finding`` has its disposition already (the first answer stands)."""
        key = finding_key(finding, cluster)
        return any(d.finding == key for d in self.dispositions)

    def record(
        self, finding: Finding, cluster: str, outcome: Outcome, *, unit: str | None = None, note: str = ""
    ) -> None:
        if self.answered(finding, cluster):
            return
        self.dispositions.append(
            Disposition(
                finding=finding_key(finding, cluster),
                cluster=cluster,
                node=finding.node,
                policy=finding.policy,
                remediation=finding.remediation or "manual",
                outcome=outcome,
                unit=unit,
                note=note,
            )
        )

    def covered(self, findings: Iterable[Finding], cluster: str, provider: str | None, note: str) -> None:
        """Findings another unit (``provider``) answers, or nothing needs doing for."""
        for finding in findings:
            self.record(finding, cluster, "covered" if provider else "nothing_to_do", unit=provider or None, note=note)

    def manual_all(self, findings: Iterable[Finding], cluster: str, reason: str) -> None:
        """Every finding of a group left to a person, for one reason (a node the plan cannot touch)."""
        for finding in findings:
            self.manual(finding, cluster, reason)

    def manual(self, finding: Finding, cluster: str, reason: str, steps: list[str] | None = None) -> None:
        if self.answered(finding, cluster):
            return
        self.manual_items.append(
            ManualItem(
                cluster=cluster,
                node=finding.node,
                policy=finding.policy,
                remediation=finding.remediation or "manual",
                reason=reason,
                steps=steps if steps is not None else documented_steps(finding),
            )
        )
        self.record(finding, cluster, "manual", note=reason)


class Remediator(ABC):
    """One remediation name; ``plan`` turns its failing findings into units (pure: no I/O)."""

    name: ClassVar[Remediation]
    phase: ClassVar[int]

    @abstractmethod
    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        """Plan every finding into ``ctx`` (each ends up planned, covered, manual or nothing-to-do)."""


def group_by_node(
    findings: Iterable[Finding], ctx: PlanContext
) -> list[tuple[ClusterIntent, NodeIntent | None, list[Finding]]]:
    """Findings per (cluster, node), in a stable order; a node missing from the snapshot gives None."""
    groups: dict[tuple[str, str], tuple[ClusterIntent, NodeIntent | None, list[Finding]]] = {}
    for finding in sorted(findings, key=lambda f: (f.cluster, f.node.lower(), f.policy)):
        cluster = ctx.cluster_of(finding)
        if cluster is None:
            ctx.manual(finding, finding.cluster, "the finding's node is not in the snapshot")
            continue
        key = (cluster.name, finding.node.lower())
        if key not in groups:
            groups[key] = (cluster, cluster.node(finding.node), [])
        groups[key][2].append(finding)
    return list(groups.values())
