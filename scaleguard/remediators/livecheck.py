"""A validated plan against the cluster as it is now: refused before the first change if it does not fit.

The schema says what *kind* of value a step may carry; only the live cluster can say whether a value is
the right one. Checked against a fresh collection, before anything is sent:

- every step's node was collected and its settings file / service resolve (:func:`resolve`);
- a key is granted only to the account the worker service logs on as now;
- ``MasterEndpoint`` names a master of the cluster (its own names, or names its certificate carries or
  the plan's new certificate will carry) on the master's ``PortNumber``;
- a thumbprint setting names a certificate the node holds (or the plan puts there); a worker pins only
  the master certificate (the masters' ``SSLCertThumbprint``, now or as the plan sets it);
- a certificate imported into a Root is one the cluster uses (a master's or a worker's configured
  certificate) or one the plan creates; a binding serves only the master certificate;
- a certificate is removed only when nothing on its node uses it, unless an earlier step of the plan
  moves that use to another certificate;
- a PFX with its key goes only to a master.

Pure: plan and snapshot in, ``step <id>: <reason>`` lines out.
"""

from __future__ import annotations

from scaleguard.remediators.actions import (
    CopyCertificate,
    CreateCertificate,
    GrantKeyRead,
    ImportCertificate,
    ImportPfx,
    RemoveCertificate,
    SetBinding,
    SetMasterEndpoint,
    WriteConfig,
)
from scaleguard.remediators.model import Plan, Step
from scaleguard.remediators.resolve import ResolveError, resolve
from scaleguard.rules.account import account_matches
from scaleguard.rules.thumbprint import normalize_thumbprint
from scaleguard.snapshot.model import Certificate, ClusterSnapshot, NodeSnapshot, Snapshot

SETTINGS = (
    ("master", "SSLCertThumbprint"),
    ("worker", "MasterHttpsCertThumbprint"),
    ("worker", "WorkerHttpsCertThumbprint"),
)


def live_problems(plan: Plan, snapshot: Snapshot) -> list[str]:
    problems: list[str] = []
    clusters = {c.cluster.lower(): c for c in snapshot.clusters}
    for step in plan.steps:
        cluster = clusters.get(step.cluster.lower())
        node = cluster.node(step.node) if cluster is not None else None
        if cluster is None or node is None:
            problems.append(f"step {step.id}: {step.cluster}/{step.node} is not in the fresh collection")
            continue
        try:
            resolve(step, node)
        except ResolveError as exc:
            problems.append(f"step {step.id}: {exc}")
        problems += [f"step {step.id}: {p}" for p in _step_problems(plan, step, cluster, node)]
    return problems


def _step_problems(plan: Plan, step: Step, cluster: ClusterSnapshot, node: NodeSnapshot) -> list[str]:  # noqa: PLR0911
    p = step.params
    if isinstance(p, GrantKeyRead):
        return _grant(p, node)
    if isinstance(p, SetMasterEndpoint):
        return _endpoint(plan, p, cluster)
    if isinstance(p, WriteConfig) and isinstance(p.value, str):
        return _setting(plan, step, p, cluster, node)
    if isinstance(p, ImportCertificate) and isinstance(p.thumbprint, str):
        used = _configured(cluster) | _plan_settings(plan, cluster.cluster)
        if p.thumbprint not in used:
            return [f"imports {p.thumbprint} into Root, a certificate nothing in {cluster.cluster} is configured with"]
        return []
    if isinstance(p, SetBinding) and isinstance(p.cert_hash, str):
        masters = _settings_of(cluster, plan, "SSLCertThumbprint", node=node.name)
        if p.cert_hash not in masters:
            return [f"binds {p.cert_hash}, which is not the master certificate of {node.name}"]
        return []
    if isinstance(p, RemoveCertificate):
        return _removal(plan, step, p, node)
    if isinstance(p, ImportPfx) and not node.is_master:
        return [f"imports a PFX with its key on {node.name}, which is not a master"]
    return []


def _grant(p: GrantKeyRead, node: NodeSnapshot) -> list[str]:
    services = [s for s in node.services or [] if s.name.lower().startswith("ssisscaleoutworker")]
    if not services:
        return ["grants a key to an account, but the node runs no Scale Out Worker service to compare it with"]
    accounts = [s.account or f"NT Service\\{s.name}" for s in services]
    if not any(account_matches(p.account, account) for account in accounts):
        return [f"grants the key to {p.account!r}, but the worker service logs on as {', '.join(accounts)}"]
    return []


def _endpoint(plan: Plan, p: SetMasterEndpoint, cluster: ClusterSnapshot) -> list[str]:
    names: set[str] = set()
    ports: set[int | None] = set()
    masters = {m.name.lower() for m in cluster.masters}
    for master in cluster.masters:
        names.update(n.lower() for n in _own_names(master))
        thumb = normalize_thumbprint(master.master_config.get("SSLCertThumbprint") if master.master_config else None)
        for cert in _certs(master):
            if thumb is not None and cert.thumbprint.upper() == thumb:
                names.update(n.lower() for n in cert.names())
        raw = master.master_config.get("PortNumber") if master.master_config else None
        ports.add(int(raw.strip()) if raw and raw.strip().isdigit() else None)
    for step in plan.steps:
        if isinstance(step.params, CreateCertificate) and step.node.lower() in masters:
            names.update(n.lower() for n in [*step.params.common_names, *step.params.san_dns, *step.params.san_ip])
    problems = []
    if p.host.lower() not in names:
        problems.append(f"points MasterEndpoint at {p.host}, which names no master of {cluster.cluster}")
    if ports != {p.port}:
        problems.append(f"points MasterEndpoint at port {p.port}, not the master's PortNumber")
    return problems


def _setting(plan: Plan, step: Step, p: WriteConfig, cluster: ClusterSnapshot, node: NodeSnapshot) -> list[str]:
    value = str(p.value)
    if p.setting == "MasterHttpsCertThumbprint":
        masters = _settings_of(cluster, plan, "SSLCertThumbprint")
        if value not in masters:
            return [f"pins {value}, which is not the master certificate of {cluster.cluster}"]
        return []
    held = {c.thumbprint.upper() for c in _certs(node)} | _put_by_plan(plan, step)
    if value not in held:
        return [f"sets {p.setting} to {value}, a certificate {node.name} does not hold"]
    return []


def _removal(plan: Plan, step: Step, p: RemoveCertificate, node: NodeSnapshot) -> list[str]:
    users = [name for name, thumb in _node_settings(node) if thumb == p.thumbprint]
    users += [f"the binding on {b.ip_port}" for b in node.bindings or [] if (b.cert_hash or "").upper() == p.thumbprint]
    moved = set()
    for earlier in plan.steps:
        if earlier.id == step.id:
            break
        params = earlier.params
        same_node = earlier.node.lower() == node.name.lower()
        if same_node and isinstance(params, WriteConfig) and params.value != p.thumbprint:
            moved.add(params.setting)
    unjustified = [u for u in users if u not in moved]
    if unjustified:
        return [f"removes {p.thumbprint}, which {node.name} still uses ({', '.join(unjustified)})"]
    return []


def _own_names(node: NodeSnapshot) -> list[str]:
    identity = node.identity
    return [n for n in [node.name, identity.computer_name, identity.fqdn or "", *(identity.addresses or [])] if n]


def _certs(node: NodeSnapshot) -> list[Certificate]:
    return [*(node.root.certificates if node.root else []), *(node.my.certificates if node.my else [])]


def _node_settings(node: NodeSnapshot) -> list[tuple[str, str]]:
    found = []
    for role, name in SETTINGS:
        config = node.master_config if role == "master" else node.worker_config
        thumb = normalize_thumbprint(config.get(name)) if config is not None else None
        if thumb is not None:
            found.append((name, thumb))
    return found


def _configured(cluster: ClusterSnapshot) -> set[str]:
    return {
        thumb for node in cluster.nodes for name, thumb in _node_settings(node) if name != "MasterHttpsCertThumbprint"
    }


def _settings_of(cluster: ClusterSnapshot, plan: Plan, setting: str, *, node: str | None = None) -> set[str]:
    values = {
        thumb
        for n in cluster.nodes
        if node is None or n.name.lower() == node.lower()
        for name, thumb in _node_settings(n)
        if name == setting
    }
    for step in plan.steps:
        if (
            isinstance(step.params, WriteConfig)
            and step.params.setting == setting
            and isinstance(step.params.value, str)
            and step.cluster.lower() == cluster.cluster.lower()
            and (node is None or step.node.lower() == node.lower())
        ):
            values.add(step.params.value)
    return values


def _plan_settings(plan: Plan, cluster: str) -> set[str]:
    return {
        step.params.value
        for step in plan.steps
        if isinstance(step.params, WriteConfig)
        and isinstance(step.params.value, str)
        and step.cluster.lower() == cluster.lower()
    }


def _put_by_plan(plan: Plan, before: Step) -> set[str]:
    """Literal thumbprints the plan puts on ``before``'s node in earlier steps."""
    put: set[str] = set()
    for step in plan.steps:
        if step.id == before.id:
            break
        if step.node.lower() != before.node.lower():
            continue
        if isinstance(step.params, ImportCertificate | ImportPfx | CopyCertificate) and isinstance(
            step.params.thumbprint, str
        ):
            put.add(step.params.thumbprint)
    return put
