"""After apply: collect again, evaluate again, and say which findings the run fixed and which it did not.

A fix is only as good as the next audit, so success is never inferred from the actions' answers: the
nodes are read again by the collect agent — in the same agent run as their last change where the agent
can (:func:`after_run`), else by a collection of their own — converted as an audit converts them, and
the policies re-evaluated.
Every finding the plan addressed (planned or covered) is reported as fixed or still failing, and any
finding that was passing before and fails now is reported as new — a fix must not trade one problem for
another unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scaleguard.apply.transport import inventory_of
from scaleguard.collectors.agent.convert import node_from_agent
from scaleguard.collectors.agent.schema import AgentDocument
from scaleguard.collectors.live import live_snapshot, plan_jobs, run_jobs
from scaleguard.findings.model import Finding, Status
from scaleguard.pipeline import AuditOptions, collect, evaluate
from scaleguard.remediators.model import Plan
from scaleguard.remoting.credentials import CredentialResolver
from scaleguard.remoting.inventory import Inventory
from scaleguard.snapshot.model import NodeSnapshot, Snapshot

PROBLEM = (Status.FAIL, Status.ERROR)


@dataclass
class Verification:
    fixed: list[str] = field(default_factory=list)
    still_failing: dict[str, str] = field(default_factory=dict)
    new_problems: dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.still_failing and not self.new_problems


def _key(finding: Finding) -> str:
    return f"{finding.policy}@{finding.node}"


def reaudit(
    inventory: Path,
    *,
    policy_dirs: tuple[Path, ...] = (),
    insecure: bool = False,
    concurrency: int = 8,
) -> tuple[Snapshot, list[Finding]]:
    """Collect and evaluate exactly as ``scaleguard audit --inventory`` does (no reports written)."""
    options = AuditOptions(
        out_dir=Path("."), inventory=inventory, policy_dirs=policy_dirs, insecure=insecure, progress=False,
        concurrency=concurrency,
    )
    return _evaluated(collect(options), inventory, policy_dirs)


def _evaluated(snapshot: Snapshot, inventory: Path, policy_dirs: tuple[Path, ...]) -> tuple[Snapshot, list[Finding]]:
    options = AuditOptions(out_dir=Path("."), inventory=inventory, policy_dirs=policy_dirs, progress=False)
    findings, _ = evaluate(snapshot, options, datetime.now(UTC))
    return snapshot, findings


def _from_document(name: str, document: dict[str, Any] | None, *, insecure: bool) -> NodeSnapshot | None:
    """The node as its collect agent's document shows it (converted as the live collector converts it);
    None when there is no document this collector can read, and the node is collected again."""
    try:
        agent = AgentDocument.model_validate(document) if document is not None else None
    except ValueError:
        return None
    return node_from_agent(name, agent, insecure=insecure, duration_ms=0.0) if agent is not None else None


def compare(plan: Plan, before: list[Finding], after: list[Finding]) -> Verification:
    addressed = {f"{d.policy}@{d.node}" for d in plan.dispositions if d.outcome in ("planned", "covered")}
    was_problem = {_key(f) for f in before if f.status in PROBLEM}
    now = {_key(f): f for f in after}
    result = Verification()
    for key in sorted(addressed):
        finding = now.get(key)
        if finding is not None and finding.status is Status.PASS:
            result.fixed.append(key)
        else:
            result.still_failing[key] = finding.status.value if finding is not None else "not evaluated"
    for key, finding in sorted(now.items()):
        if finding.status in PROBLEM and key not in was_problem and key not in addressed:
            result.new_problems[key] = finding.status.value
    return result


def recollect(
    inventory: Path,
    nodes: list[tuple[str, str]],
    base: Snapshot,
    *,
    policy_dirs: tuple[Path, ...] = (),
    insecure: bool = False,
    concurrency: int = 8,
) -> tuple[Snapshot, list[Finding]]:
    """Collect only ``nodes`` again and evaluate the whole snapshot with them replaced (the canary check:
    policies judge a worker against its master, so the rest of the cluster stays as last read)."""
    wanted = {(c.lower(), n.lower()) for c, n in nodes}
    fresh = _collected(
        inventory_of(inventory), lambda c, n: (c.lower(), n.lower()) in wanted, insecure=insecure,
        concurrency=concurrency,
    )
    by_key = {(c.lower(), n.lower()): node for (c, n), node in fresh.items()}
    clusters = []
    for cluster in base.clusters:
        nodes_now = [by_key.get((cluster.cluster.lower(), node.name.lower()), node) for node in cluster.nodes]
        clusters.append(cluster.model_copy(update={"nodes": nodes_now}))
    return _evaluated(base.model_copy(update={"clusters": clusters}), inventory, policy_dirs)


def canary_verdict(
    plan: Plan, before: list[Finding], after: list[Finding], nodes: list[tuple[str, str]]
) -> str | None:
    """None when the canaries came out fixed: every finding the plan addresses on them passes, and none
    that passed before fails now. Otherwise, what is wrong (the run stops and rolls them back)."""
    names = {n.lower() for _c, n in nodes}
    mine = [f for f in after if f.node.lower() in names]
    verification = compare(plan, [f for f in before if f.node.lower() in names], mine)
    still = {k: v for k, v in verification.still_failing.items() if k.rsplit("@", 1)[-1].lower() in names}
    problems = {**still, **verification.new_problems}
    if not problems:
        return None
    return "; ".join(f"{key} {status}" for key, status in sorted(problems.items()))


def after_run(
    inventory: Path,
    before: Snapshot,
    documents: dict[tuple[str, str], dict[str, Any]],
    touched: set[tuple[str, str]],
    *,
    policy_dirs: tuple[Path, ...] = (),
    insecure: bool = False,
    concurrency: int = 8,
) -> tuple[Snapshot, list[Finding]]:
    """The cluster as the run left it, evaluated: what ``reaudit`` gives, with fewer rounds.

    A node whose last round read it right after its changes (the collect agent's document, converted as
    the live collector converts it) needs no read of its own; a node the run never sent anything to is
    as the read taken under the lease found it (the lease kept other runs away); every other node is
    collected again."""
    schemes = {(c.name.lower(), n.name.lower()): n.transport.scheme for c, n in inventory_of(inventory).nodes()}
    again: list[tuple[str, str]] = []
    clusters = []
    for cluster in before.clusters:
        nodes: list[NodeSnapshot] = []
        for node in cluster.nodes:
            key = (cluster.cluster.lower(), node.name.lower())
            read = _from_document(node.name, documents.get(key), insecure=insecure and schemes.get(key) == "https")
            if read is not None:
                nodes.append(read)
                continue
            nodes.append(node)
            if key in touched:
                again.append((cluster.cluster, node.name))
        clusters.append(cluster.model_copy(update={"nodes": nodes, "collected_at": datetime.now(UTC)}))
    base = before.model_copy(update={"clusters": clusters})
    return recollect(inventory, again, base, policy_dirs=policy_dirs, insecure=insecure, concurrency=concurrency)


def fresh_read(
    inventory: Path,
    documents: dict[tuple[str, str], dict[str, Any]],
    *,
    policy_dirs: tuple[Path, ...] = (),
    insecure: bool = False,
    concurrency: int = 8,
) -> tuple[Snapshot, list[Finding]]:
    """What ``reaudit`` gives, for the read an apply takes under its lease: the masters read in the round
    that took the lease (``documents``) are not read again, every other node is collected."""
    parsed = inventory_of(inventory)
    started = datetime.now(UTC)
    read: dict[tuple[str, str], NodeSnapshot] = {}
    for cluster, node in parsed.nodes():
        document = documents.get((cluster.name.lower(), node.name.lower()))
        found = _from_document(node.name, document, insecure=insecure and node.transport.scheme == "https")
        if found is not None:
            read[(cluster.name, node.name)] = found
    read.update(_collected(parsed, lambda c, n: (c, n) not in read, insecure=insecure, concurrency=concurrency))
    return _evaluated(live_snapshot(parsed, read, started=started, source=str(inventory)), inventory, policy_dirs)


def _collected(
    parsed: Inventory, wanted: Callable[[str, str], bool], *, insecure: bool, concurrency: int
) -> dict[tuple[str, str], NodeSnapshot]:
    """The (cluster, node) pairs ``wanted`` of the inventory, collected as an audit collects them."""
    jobs = plan_jobs(parsed, insecure=insecure, resolver=CredentialResolver())
    chosen = [job for job in jobs if wanted(job.cluster.name, job.node.name)]
    return run_jobs(chosen, concurrency=concurrency, insecure=insecure, progress=False)
