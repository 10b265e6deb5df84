"""Live collection: every inventory node over WinRM, at most ``concurrency`` at a time.

Each node costs one agent run on one reused shell (:class:`HostChannel`), and each is collected on its
own: an unreachable host, refused credentials, a TLS failure, a deadline or garbage on stdout becomes that
node's :class:`Collection` state and reason (SO-C01 turns it into an error finding for that node only),
while the others are collected as usual. Credentials are resolved once, before the first connection, so a
missing password is a usage error rather than N identical per-node failures.

SSISDB knows which workers registered with a master; a worker it names that the inventory lacks is not
collected behind the user's back but reported (a diagnostic on the master, and in :func:`summarize`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scaleguard.collectors.agent import bootstrap_command, stdin_payload
from scaleguard.collectors.agent.convert import node_from_agent
from scaleguard.collectors.agent.schema import AGENT_SCHEMA, AgentDocument
from scaleguard.console import console
from scaleguard.remoting.channel import ChannelError, ChannelSettings, HostChannel, describe_stderr
from scaleguard.remoting.credentials import CredentialResolver
from scaleguard.remoting.errors import InventoryError
from scaleguard.remoting.inventory import (
    SPNEGO_AUTH,
    Inventory,
    InventoryCluster,
    InventoryNode,
    load_inventory,
)
from scaleguard.remoting.negotiate import kerberos_unavailable_reason
from scaleguard.safetext import may_hold_surrogates, plain_json
from scaleguard.snapshot.model import (
    ClusterSnapshot,
    Collection,
    CollectionState,
    Diagnostic,
    DiagnosticLevel,
    HostIdentity,
    NodeSnapshot,
    Snapshot,
)

log = logging.getLogger(__name__)

UNLISTED_WORKER_SOURCE = "ssisdb/worker_agents"


@dataclass(frozen=True)
class NodeJob:
    cluster: InventoryCluster
    node: InventoryNode
    settings: ChannelSettings
    timeout_s: float


def collect_inventory(
    inventory: Path,
    *,
    concurrency: int,
    insecure: bool,
    progress: bool,
    resolver: CredentialResolver | None = None,
) -> Snapshot:
    """Collect every node of ``inventory``; raises ``InventoryError`` (usage) before contacting any."""
    parsed = load_inventory(inventory)
    jobs = plan_jobs(parsed, insecure=insecure, resolver=resolver or CredentialResolver())
    started = datetime.now(UTC)
    results = run_jobs(jobs, concurrency=concurrency, insecure=insecure, progress=progress)
    return live_snapshot(parsed, results, started=started, source=str(inventory))


def live_snapshot(
    inventory: Inventory, read: dict[tuple[str, str], NodeSnapshot], *, started: datetime, source: str
) -> Snapshot:
    """The snapshot of ``inventory`` from every node ``read`` (by cluster and node name), in inventory
    order, each cluster's unlisted workers reported."""
    clusters = []
    for cluster in inventory.clusters:
        nodes = [read[(cluster.name, n.name)] for n in cluster.nodes]
        report_unlisted_workers(cluster, nodes)
        clusters.append(
            ClusterSnapshot(cluster=cluster.name, collected_at=started, source=source, mode="live", nodes=nodes)
        )
    return Snapshot(clusters=clusters)


def plan_jobs(inventory: Inventory, *, insecure: bool, resolver: CredentialResolver) -> list[NodeJob]:
    check_auth_libraries(inventory)
    jobs = []
    for cluster, node in inventory.nodes():
        t = node.transport
        context = f"{inventory.path} cluster {cluster.name}"
        password = None if t.auth == "certificate" else resolver.resolve(t.credential, t.username, context=context)
        jobs.append(
            NodeJob(
                cluster=cluster,
                node=node,
                settings=ChannelSettings(
                    endpoint=node.endpoint,
                    auth=t.auth,
                    username=t.username,
                    password=password,
                    ca_bundle=t.ca_bundle,
                    validate_tls=not insecure,
                    client_cert=t.client_cert,
                    client_key=t.client_key,
                    operation_timeout_s=t.operation_timeout,
                    spn_service=t.spn_service,
                    spn_hostname=t.spn_hostname,
                    delegate=t.delegate,
                    message_encryption=t.message_encryption,
                ),
                timeout_s=t.timeout,
            )
        )
    return jobs


def check_auth_libraries(inventory: Inventory) -> None:
    """Kerberos needs GSSAPI; say so once, before any host is contacted, instead of once per node."""
    spnego_nodes = [n.name for _c, n in inventory.nodes() if n.transport.auth in SPNEGO_AUTH]
    if not spnego_nodes:
        return
    reason = kerberos_unavailable_reason()
    if reason is not None:
        more = f" and {len(spnego_nodes) - 3} more" if len(spnego_nodes) > 3 else ""
        raise InventoryError(
            f"{inventory.path}: auth kerberos/negotiate (nodes {', '.join(spnego_nodes[:3])}{more}) "
            f"cannot work here: {reason}"
        )


def run_jobs(
    jobs: list[NodeJob], *, concurrency: int, insecure: bool, progress: bool
) -> dict[tuple[str, str], NodeSnapshot]:
    results: dict[tuple[str, str], NodeSnapshot] = {}
    with (
        _Progress(len(jobs), enabled=progress) as bar,
        ThreadPoolExecutor(
            max_workers=max(1, min(concurrency, len(jobs) or 1)), thread_name_prefix="collect"
        ) as pool,
    ):
        futures = {pool.submit(collect_node, job, insecure=insecure): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            snapshot = future.result()
            results[(job.cluster.name, job.node.name)] = snapshot
            bar.advance(snapshot)
    return results


def collect_node(job: NodeJob, *, insecure: bool) -> NodeSnapshot:
    """One node, start to finish; never raises (every failure is a collection state)."""
    insecure = insecure and job.node.transport.scheme == "https"  # recorded where validation was skipped
    started = time.monotonic()
    deadline = started + job.timeout_s
    request = {"op": "collect", "schema": AGENT_SCHEMA}
    try:
        with HostChannel(job.settings, deadline=deadline) as channel:
            result = channel.run(bootstrap_command(), stdin_payload(request), idempotent=True)
        elapsed = (time.monotonic() - started) * 1000
        if result.exit_code != 0:
            raise ChannelError(
                CollectionState.FAILED,
                f"the agent failed on {job.node.host} (exit code "
                f"{result.exit_code}): {describe_stderr(result.stderr) or 'no error text'}",
            )
        document = parse_agent_output(result.stdout, job.node)
        snapshot = node_from_agent(job.node.name, document, insecure=insecure, duration_ms=elapsed)
        snapshot.collection.unencrypted = job.node.travels_unencrypted
        for recovery in result.recoveries:
            snapshot.diagnostics.append(
                Diagnostic(level=DiagnosticLevel.INFO, source="winrm", message=recovery)
            )
        log.debug("%s: collected in %.0f ms", job.node.name, elapsed)
        return snapshot
    except ChannelError as exc:
        log.info("%s: %s: %s", job.node.name, exc.state.value, exc.reason)
        state, reason = exc.state, exc.reason
    except Exception as exc:  # noqa: BLE001 - a bug must cost one node, not the audit
        log.exception("%s: collection crashed", job.node.name)
        state, reason = CollectionState.FAILED, f"collection crashed: {type(exc).__name__}: {exc}"
    return failed_node(job.node, state, reason, insecure=insecure, duration_ms=(time.monotonic() - started) * 1000)


def parse_agent_output(stdout: bytes, node: InventoryNode) -> AgentDocument:
    """The agent's one JSON document, validated whole; anything else is a clear per-node failure."""
    text = stdout.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChannelError(
            CollectionState.FAILED,
            f"malformed agent output from {node.host}: not JSON ({exc.msg} at character {exc.pos} of "
            f"{len(text)})",
        ) from exc
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, brackets 100,000 deep
        raise ChannelError(
            CollectionState.FAILED,
            f"malformed agent output from {node.host}: not JSON Python can hold ({type(exc).__name__}, "
            f"{len(text)} characters)",
        ) from exc
    if may_hold_surrogates(text):
        data = plain_json(data)
    if not isinstance(data, dict) or data.get("schema") != AGENT_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ChannelError(
            CollectionState.FAILED,
            f"malformed agent output from {node.host}: expected schema {AGENT_SCHEMA}, got {found!r}",
        )
    try:
        return AgentDocument.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ChannelError(
            CollectionState.FAILED,
            f"malformed agent output from {node.host}: {where}: {first['msg']} "
            f"({exc.error_count()} problem(s))",
        ) from exc


def failed_node(
    node: InventoryNode, state: CollectionState, reason: str, *, insecure: bool, duration_ms: float
) -> NodeSnapshot:
    return NodeSnapshot(
        name=node.name,
        identity=HostIdentity(computer_name=node.name),
        collection=Collection(
            state=state,
            reason=reason,
            transport="winrm",
            insecure=insecure,
            unencrypted=node.travels_unencrypted,
            duration_ms=round(duration_ms, 3),
        ),
        diagnostics=[Diagnostic(level=DiagnosticLevel.ERROR, source="winrm", message=reason)],
    )


def report_unlisted_workers(cluster: InventoryCluster, nodes: list[NodeSnapshot]) -> None:
    for node in nodes:
        if node.ssisdb is None:
            continue
        for agent in node.ssisdb.worker_agents:
            machine = (agent.machine_name or "").strip()
            if not machine or cluster.knows(machine):
                continue
            node.diagnostics.append(
                Diagnostic(
                    level=DiagnosticLevel.WARNING,
                    source=UNLISTED_WORKER_SOURCE,
                    message=(
                        f"worker {machine} (agent {agent.worker_agent_id}) is registered with this master in "
                        f"SSISDB but is not in the inventory of cluster {cluster.name}: it was not audited"
                    ),
                )
            )


@dataclass
class CollectionSummary:
    nodes: int = 0
    states: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (node, state, reason)
    unlisted_workers: list[str] = field(default_factory=list)
    insecure: bool = False
    unencrypted: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        counts = ", ".join(f"{count} {state}" for state, count in sorted(self.states.items()))
        out = [f"collected {self.nodes} node(s): {counts}"]
        if self.insecure:
            out.append("TLS validation was OFF (--insecure): the nodes' identities were not verified")
        if self.unencrypted:
            out.append(f"NOT encrypted on the network (allow_unencrypted): {', '.join(self.unencrypted)}")
        out += [f"  {node}: {state}: {reason}" for node, state, reason in self.failures]
        out += [f"  not in the inventory: {message}" for message in self.unlisted_workers]
        return out


def summarize(snapshot: Snapshot) -> CollectionSummary:
    summary = CollectionSummary()
    for cluster in snapshot.clusters:
        for node in cluster.nodes:
            summary.nodes += 1
            summary.states[node.collection.state.value] += 1
            summary.insecure |= node.collection.insecure
            if node.collection.unencrypted:
                summary.unencrypted.append(node.name)
            if node.collection.state is not CollectionState.OK:
                summary.failures.append(
                    (node.name, node.collection.state.value, node.collection.reason or "")
                )
            summary.unlisted_workers += [
                d.message for d in node.diagnostics if d.source == UNLISTED_WORKER_SOURCE
            ]
    return summary


class _Progress:
    """A rich progress bar on stderr (silent when disabled); counts failures as they happen."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and total > 0
        self._lock = threading.Lock()
        self._failed = 0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("collecting"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=console(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("collect", total=self.total, status="")
        return self

    def advance(self, node: NodeSnapshot) -> None:
        if not self.enabled:
            return
        with self._lock:
            if node.collection.state is not CollectionState.OK:
                self._failed += 1
            status = f"{self._failed} not collected" if self._failed else ""
            self._progress.update(self._task, advance=1, status=status)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
