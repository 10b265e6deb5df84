"""Clusters and findings for the fix tests, described the way the policy cases describe them.

The policy tests' :class:`Materialiser` (tests/policies/policy_cases.py) turns a short spec — a healthy
cluster plus the one defect under test — into a real evidence folder read back by the real reader.
The fix tests reuse it rather than inventing a second dialect, so "a cluster with defect X" means the
same thing in both suites.
"""

from __future__ import annotations

import importlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scaleguard.findings.model import Finding, FindingsFile, Severity, Status
from scaleguard.pipeline import AuditOptions, evaluate
from scaleguard.remediators import PlanOptions
from scaleguard.snapshot.model import Snapshot

_POLICY_TESTS = Path(__file__).resolve().parents[1] / "policies"
if str(_POLICY_TESTS) not in sys.path:
    sys.path.append(str(_POLICY_TESTS))
policy_cases: Any = importlib.import_module("policy_cases")

NOW = datetime.now(UTC)
FIXED_GUID = "{00000000-0000-4000-8000-0000000000a1}"
CLUSTER = policy_cases.CLUSTER


class Cluster:
    """A materialised case: the spec's certificates by name, the evidence folder and its snapshot."""

    def __init__(self, spec: dict[str, Any], folder: Path) -> None:
        self.m = policy_cases.Materialiser(spec, NOW)
        self.folder = folder
        self.snapshot: Snapshot = self.m.snapshot(folder)

    @property
    def evidence(self) -> Path:
        return self.folder / CLUSTER

    def thumb(self, name: str) -> str:
        return str(self.m.cert(name).thumbprint)

    def der_b64(self, name: str) -> str:
        import base64

        return base64.b64encode(self.m.cert(name).der).decode("ascii")

    def findings(self) -> list[Finding]:
        found, _ = evaluate(self.snapshot, AuditOptions(out_dir=self.folder), NOW)
        return found

    def failing(self) -> set[tuple[str, str]]:
        return {(f.policy, f.node) for f in self.findings() if f.status in (Status.FAIL, Status.ERROR)}


def finding(policy: str, node: str, remediation: str | None, *, status: Status = Status.FAIL) -> Finding:
    return Finding(
        policy=policy,
        node=node,
        cluster=CLUSTER,
        status=status,
        severity=Severity.CRITICAL,
        message=f"{policy} on {node}",
        remediation=remediation,
    )


def findings_file(*items: Finding) -> FindingsFile:
    return FindingsFile(generated_at=NOW, source="test", findings=list(items))


def options(**overrides: Any) -> PlanOptions:
    return PlanOptions(new_guid=lambda: FIXED_GUID, now=NOW, **overrides)


# --- the lab without WinRM: the same node state and action handlers, called directly -------------------


class LabTransport:
    """Sends each request straight to the lab's handler for that node (what the WinRM lab does, minus HTTP).

    ``requests`` records every payload per node, so tests can see exactly what would have travelled.
    """

    def __init__(self, state: Any) -> None:
        self.state = state
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def client(self, cluster: str, node: str) -> Any:
        target = self.state.node(node, cluster)
        transport = self

        class Client:
            def request(self, payload: dict[str, Any]) -> dict[str, Any]:
                """Encoded and decoded exactly as over WinRM (secret after the JSON, ``wait_s`` added)."""
                from scaleguard.apply.transport import ActionFailed, PartialChange, action_payload, agent_request
                from scaleguard.lab.dispatch import dispatch
                from scaleguard.lab.state import ActionError, PartialChangeError
                from scaleguard.lab.wsman.host import request_from_stdin

                transport.requests.append((node, dict(payload)))
                _command, stdin = action_payload(agent_request(payload, timeout_s=30))
                try:
                    return dispatch(target, request_from_stdin(stdin))
                except PartialChangeError as exc:
                    raise PartialChange(str(exc), exc.result) from exc
                except ActionError as exc:
                    raise ActionFailed(str(exc)) from exc

        return Client()

    def close(self) -> None:
        pass

    def actions(self) -> list[tuple[str, dict[str, Any]]]:
        """Every action that travelled, in order, a batch's actions one by one."""
        flat: list[tuple[str, dict[str, Any]]] = []
        for node, payload in self.requests:
            inner = payload.get("actions") if payload.get("op") == "batch" else [payload]
            flat += [(node, dict(action)) for action in inner or []]
        return flat


def lab_state(folder: Path) -> Any:
    from scaleguard.lab.from_evidence import load_state

    return load_state(folder)


def lab_snapshot(state: Any) -> Snapshot:
    """Collect every lab node through the agent document, exactly as the live collector converts it."""
    from scaleguard.collectors.agent.convert import node_from_agent
    from scaleguard.collectors.agent.schema import AgentDocument
    from scaleguard.lab.dispatch import dispatch
    from scaleguard.snapshot.model import ClusterSnapshot

    clusters = []
    for lab_cluster in state.clusters:
        nodes = [
            node_from_agent(
                n.name,
                AgentDocument.model_validate(dispatch(n, {"op": "collect"})),
                insecure=False,
                duration_ms=0.0,
            )
            for n in lab_cluster.nodes
        ]
        clusters.append(
            ClusterSnapshot(cluster=lab_cluster.name, collected_at=NOW, source="lab", mode="live", nodes=nodes)
        )
    return Snapshot(clusters=clusters)


def lab_findings(state: Any, folder: Path) -> list[Finding]:
    found, _ = evaluate(lab_snapshot(state), AuditOptions(out_dir=folder), NOW)
    return found


def verdicts(findings: list[Finding]) -> dict[tuple[str, str], str]:
    return {(f.policy, f.node): f.status.value for f in findings}


def node_state(node: Any) -> tuple[Any, ...]:
    """Everything a fix may change on a node (backups and the action log excluded)."""

    def store(certs: list[Any]) -> list[tuple[Any, ...]]:
        return sorted(
            (c.thumbprint, c.has_private_key, tuple((c.usable_key.readers if c.usable_key else None) or ()))
            for c in certs or []
        )

    return (
        node.master_config,
        node.worker_config,
        store(node.root),
        store(node.my),
        sorted((b.ip_port, b.cert_hash, b.app_id, b.store) for b in node.bindings or []),
        sorted((s.name, s.state, s.start_mode, s.account) for s in node.services or []),
    )


def cluster_state(state: Any) -> dict[str, tuple[Any, ...]]:
    return {n.name: node_state(n) for n in state.nodes()}


# --- a cluster served by the WinRM lab in this process, fixed through the CLI ---------------------------


class ServedCluster:
    def __init__(self, spec: dict[str, Any], tmp_path: Path, **lab_options: Any) -> None:
        from scaleguard.lab.serve import LabOptions, start_lab

        self.cluster = Cluster(spec, tmp_path / "evidence")
        self.inventory = tmp_path / "inventory.yaml"
        self.journal = tmp_path / "journal.sqlite"
        self.lab = start_lab(LabOptions(evidence=self.cluster.evidence, inventory_out=self.inventory, **lab_options))
        self.lab.write_inventory()

    def fix(self, *args: str) -> Any:
        from typer.testing import CliRunner

        from scaleguard.cli.main import app

        return CliRunner().invoke(
            app,
            ["fix", "--inventory", str(self.inventory), "--journal", str(self.journal), *args],
            catch_exceptions=False,
        )

    def failing(self) -> set[tuple[str, str]]:
        from scaleguard.apply.verify import reaudit

        _snapshot, found = reaudit(self.inventory)
        return {(f.policy, f.node) for f in found if f.status in (Status.FAIL, Status.ERROR)}

    def runs(self) -> int:
        from scaleguard.apply.journal import Journal

        with Journal(self.journal) as journal:
            return len(journal.runs())
