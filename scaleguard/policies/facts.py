r"""The facts a policy's CEL sees: a lean, typed view of one cluster, built once per audit.

Why a view and not the snapshot: CEL needs every key present (a missing map key is a runtime error), so
unknown facts are explicit ``null`` here; policies compare normalised values (thumbprints as 40 upper-case
hex, host names lower-case) so each policy does not re-implement Windows' comparison rules; and CEL is
only fast on small values — converting a Python string into CEL costs about a microsecond, and every
member access (``a.b`` of ``a.b.c``) copies the map it returns. So the view carries what policies judge
(resolved certificates, the binding that serves the master port, thumbprint lists for membership tests),
keeps the node's roles and certificates as top-level variables and ``masters`` as a lean list. Judgement
stays in the policies: facts resolve and normalise, they never decide.

Unknown versus absent: ``null`` means *not collected* (the evidence file is missing); ``false`` or ``[]``
means *collected, and not there*. Tri-state facts (``bool?``) keep the two apart, e.g. ``master.in_root``
is null without ``certs/Root`` and false when Root lacks the certificate.

Variables of every evaluation: ``now``, ``thresholds``, ``cluster``, ``masters`` (every master node of the
cluster); for master and worker policies ``node`` (the node evaluated), its roles ``master`` and ``worker``
and their certificates ``master_cert`` and ``worker_cert`` (each null when the node lacks that role or the
certificate was not found); for ``for_each`` policies ``item``. Cluster-scope policies have the per-node
variables null.

Functions besides CEL's own: ``covers(names, host)`` — true when one of ``names`` (lower-case certificate
or host names) matches ``host`` as TLS does: equal ignoring case, or a ``*.`` wildcard matching one left-most
label; ``lower(s)`` — lower-case; ``join(list, sep)`` — one string, for messages.

Certificate facts (``master_cert``, ``worker_cert``, the elements of ``node.root``/``node.my``) have the
keys listed under ``master_cert``; ``node.bindings`` and ``node.services`` elements those under
``master.binding`` and ``master.service``.

The reference (every path, its type and meaning) is :mod:`scaleguard.policies.fact_schema`, which
tests hold to what this module builds; ``scaleguard policies facts`` prints it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scaleguard.rules.account import readers_for
from scaleguard.rules.endpoint import parse_endpoint
from scaleguard.rules.thumbprint import is_clean, normalize_thumbprint, thumbprint_problems
from scaleguard.snapshot.model import (
    Certificate,
    CertificateStore,
    ClusterSnapshot,
    CollectionState,
    ConfigFile,
    NodeSnapshot,
    Service,
    SslBinding,
    days_left,
)

Facts = dict[str, Any]

@dataclass
class NodeFacts:
    """The per-node variables: ``node`` and, when the node has the role, ``master`` / ``worker``."""

    node: Facts
    master: Facts | None
    worker: Facts | None
    master_cert: Facts | None
    worker_cert: Facts | None


@dataclass
class ClusterFacts:
    """The per-cluster variables (``cluster``, ``masters``) and every node's variables by node name."""

    cluster: Facts
    masters: list[Facts]
    nodes: Mapping[str, NodeFacts]


def build_cluster_facts(
    cluster: ClusterSnapshot, *, now: datetime, include_stores: bool = False
) -> ClusterFacts:
    """Every node's facts and the cluster's; ``include_stores`` adds the ``node.root``/``node.my`` lists."""
    now = _aware(now)
    index = _CertIndex(cluster, now)
    master_roots = {
        m.name: {c.thumbprint for c in m.root.certificates} if m.root is not None else None
        for m in cluster.masters
    }
    nodes = {n.name: _variables(n, index, include_stores, master_roots) for n in cluster.nodes}
    masters = [nodes[n.name].master for n in cluster.nodes if n.is_master]
    workers = [nodes[n.name].worker for n in cluster.nodes if n.worker_config is not None]
    ssisdb_node, ssisdb_thumbprint = _ssisdb_thumbprint(cluster)
    facts: Facts = {
        "name": cluster.cluster,
        "mode": cluster.mode,
        "live": cluster.mode == "live",
        "nodes": [_node_summary(n) for n in cluster.nodes],
        "master_count": len(masters),
        "worker_count": len(workers),
        "master_thumbprints": _distinct(m["thumbprint"] for m in masters if m),
        "master_service_running": _any_running([m for m in masters if m]),
        "master_endpoints": _endpoint_groups([w for w in workers if w]),
        "ssisdb_thumbprint": ssisdb_thumbprint,
        "ssisdb_node": ssisdb_node,
    }
    summaries = [_master_summary(m) for m in masters if m]
    return ClusterFacts(cluster=facts, masters=summaries, nodes=nodes)


def _variables(
    node: NodeSnapshot, index: _CertIndex, include_stores: bool, master_roots: dict[str, set[str] | None]
) -> NodeFacts:
    master = _master_facts(node, index) if node.master_config is not None else None
    worker = _worker_facts(node, index, master_roots) if node.worker_config is not None else None
    # The certificates are variables of their own: CEL copies a nested map on every access through it.
    master_cert = master.pop("cert") if master else None
    worker_cert = worker.pop("cert") if worker else None
    return NodeFacts(_node_facts(node, index, include_stores), master, worker, master_cert, worker_cert)


def _master_summary(master: Facts) -> Facts:
    """What another node's policies need of a master; small, because CEL copies it on every access."""
    service = master["service"]
    return {
        "name": master["name"],
        "thumbprint": master["thumbprint"],
        "port": master["port"],
        "endpoint_names": master["endpoint_names"],
        "identity_complete": master["identity_complete"],
        "service_running": service["running"] if service is not None else None,
    }


# ------------------------------------------------------------------------------------------- nodes


def _node_summary(node: NodeSnapshot) -> Facts:
    ok = node.collection.state is CollectionState.OK
    return {
        "name": node.name,
        "state": node.collection.state.value,
        "reason": node.collection.reason,
        "roles": node.roles(),
        "usable": ok and bool(node.roles()),
    }


def _node_facts(node: NodeSnapshot, index: _CertIndex, include_stores: bool) -> Facts:
    ident = node.identity
    return {
        "name": node.name,
        "computer_name": ident.computer_name,
        "fqdn": ident.fqdn,
        "addresses": list(ident.addresses) if ident.addresses is not None else None,
        "names": _own_names(node),
        "state": node.collection.state.value,
        "roles": node.roles(),
        "root_thumbprints": _thumbprints(node.root),
        "my_thumbprints": _thumbprints(node.my),
        "root": _store_facts(node, node.root, index) if include_stores else None,
        "my": _store_facts(node, node.my, index) if include_stores else None,
        "bindings": [_binding_facts(b) for b in node.bindings] if node.bindings is not None else None,
        "services": [_one_service(s) for s in node.services] if node.services is not None else None,
        "schannel": (
            {
                "client_auth_trust_mode": node.schannel.client_auth_trust_mode,
                "send_trusted_issuer_list": node.schannel.send_trusted_issuer_list,
            }
            if node.schannel is not None
            else None
        ),
        "ssisdb": _ssisdb_facts(node),
        "diagnostics": [
            {"level": d.level.value, "source": d.source, "message": d.message} for d in node.diagnostics
        ],
    }


def _store_facts(node: NodeSnapshot, store: CertificateStore | None, index: _CertIndex) -> list[Facts] | None:
    if store is None:
        return None
    return [index.facts(node.name, store.name, c) for c in store.certificates]


def _ssisdb_facts(node: NodeSnapshot) -> Facts | None:
    if node.ssisdb is None:
        return None
    props = {k.upper(): v for k, v in node.ssisdb.master_properties.items()}
    raw = props.get("SSLCERT_THUMBPRINT")
    return {
        "sslcert_thumbprint_raw": raw,
        "sslcert_thumbprint": normalize_thumbprint(raw),
        "master_address": props.get("MASTER_ADDRESS"),
        "master_service_port": props.get("MASTER_SERVICE_PORT"),
    }


# ------------------------------------------------------------------------------------------ master


def _master_facts(node: NodeSnapshot, index: _CertIndex) -> Facts:
    config = node.master_config
    assert config is not None
    port_raw = config.get("PortNumber")
    port, port_issue = _port(port_raw)
    thumb_raw = config.get("SSLCertThumbprint")
    thumb = normalize_thumbprint(thumb_raw)
    cert = index.resolve(thumb, node, (node.root, node.my))
    root_copy = node.root.find(thumb) if node.root is not None and thumb else None
    has_binding, binding = _master_binding(node, port)
    names = _own_names(node)
    return {
        "name": node.name,
        "config": _config_facts(config),
        "port_raw": port_raw,
        "port": port,
        "port_issue": port_issue,
        **_thumbprint_facts("thumbprint", thumb_raw),
        "cert": cert,
        "cert_found": _found(cert, thumb, (node.root, node.my)),
        "in_root": None if node.root is None or thumb is None else root_copy is not None,
        "key_present": _key_present(node.root, thumb),
        "has_binding": has_binding,
        "binding": _binding_facts(binding) if binding is not None else None,
        "service": _role_service(node.services, "ssisscaleoutmaster"),
        "names": names,
        "endpoint_names": _distinct([*names, *(cert["names"] if cert else [])]),
        "identity_complete": None not in (node.identity.fqdn, node.identity.addresses, cert),
        "not_self_signed_root": (
            [
                {"thumbprint": c.thumbprint, "subject": c.subject}
                for c in node.root.certificates
                if not c.self_signed
            ]
            if node.root is not None
            else None
        ),
    }


def _master_binding(node: NodeSnapshot, port: int | None) -> tuple[bool | None, SslBinding | None]:
    """The binding that serves ``port`` for every client: wildcard first, then an address of this node."""
    if node.bindings is None or port is None:
        return None, None
    on_port = [b for b in node.bindings if b.kind == "ipport" and b.port == port]
    own = {_canonical_ip(a) for a in (node.identity.addresses or [])}
    for wanted in ("0.0.0.0", "::"):
        match = next((b for b in on_port if _canonical_ip(b.host) == wanted), None)
        if match is not None:
            return True, match
    match = next((b for b in on_port if _canonical_ip(b.host) in own), None)
    if match is not None:
        return True, match
    if on_port and node.identity.addresses is None:
        return None, None  # an address is bound, but whose? host.json would tell
    return False, None


# ------------------------------------------------------------------------------------------ worker


def _worker_facts(node: NodeSnapshot, index: _CertIndex, master_roots: dict[str, set[str] | None]) -> Facts:
    config = node.worker_config
    assert config is not None
    endpoint_raw = config.get("MasterEndpoint")
    thumb_raw = config.get("WorkerHttpsCertThumbprint")
    thumb = normalize_thumbprint(thumb_raw)
    location = (config.get("StoreLocation") or "").strip() or "LocalMachine"
    name = (config.get("StoreName") or "").strip() or "My"
    store = node.store(name) if location.lower() == "localmachine" else None
    cert = index.resolve(thumb, node, (store, node.my, node.root))
    services = _role_service(node.services, "ssisscaleoutworker")
    return {
        "name": node.name,
        "config": _config_facts(config),
        "endpoint_raw": endpoint_raw,
        "endpoint": _endpoint(endpoint_raw),
        **_thumbprint_facts("master_thumbprint", config.get("MasterHttpsCertThumbprint")),
        **_thumbprint_facts("thumbprint", thumb_raw),
        "store_location": location,
        "store_name": name,
        "store_thumbprints": _thumbprints(store),
        "in_store": None if store is None or thumb is None else store.find(thumb) is not None,
        "in_root": None if node.root is None or thumb is None else node.root.find(thumb) is not None,
        "cert": cert,
        "cert_found": _found(cert, thumb, (store, node.my, node.root)),
        "key_present": _key_present(store, thumb),
        "key_readers": _key_readers(store, thumb),
        "service": services,
        "service_account_aliases": _account_aliases(services["account"] if services else None),
        "stale": _stale(node.my, cert),
        "in_master_roots": [
            {"name": name, "in_root": None if root is None or thumb is None else thumb in root}
            for name, root in master_roots.items()
        ],
    }


def _key_readers(store: CertificateStore | None, thumb: str | None) -> list[str] | None:
    if store is None or thumb is None:
        return None
    copy = store.find(thumb)
    if copy is None or copy.has_private_key is False:
        return []
    if copy.has_private_key is None or copy.key_readers is None:
        return None
    return _distinct(r.strip().lower() for r in copy.key_readers)


def _account_aliases(account: str | None) -> list[str] | None:
    return readers_for(account) if account is not None and account.strip() else None


def _stale(my: CertificateStore | None, cert: Facts | None) -> list[Facts] | None:
    if my is None or cert is None:
        return None
    return [
        {"thumbprint": c.thumbprint, "subject": c.subject, "not_after": _aware(c.not_after)}
        for c in my.certificates
        if _subject_key(c.subject) == cert["subject_key"] and c.thumbprint != cert["thumbprint"]
    ]


def _endpoint(raw: str | None) -> Facts | None:
    if raw is None:
        return None
    endpoint = parse_endpoint(raw)
    return {
        "scheme": endpoint.scheme,
        "host": endpoint.host,
        "port": endpoint.port,
        "path": endpoint.path,
        "valid": endpoint.valid,
        "issue": "; ".join(endpoint.issues) or None,
        "normalized": endpoint.normalized,
    }


# ------------------------------------------------------------------------------------------ shared


def _config_facts(config: ConfigFile) -> Facts:
    return {
        "path": config.path,
        "format": config.format,
        "parsed": config.parse_error is None,
        "parse_error": config.parse_error,
    }


def _thumbprint_facts(prefix: str, raw: str | None) -> Facts:
    exact = is_clean(raw)
    return {
        f"{prefix}_raw": raw,
        prefix: normalize_thumbprint(raw),
        f"{prefix}_exact": exact,
        f"{prefix}_issue": None if exact else "; ".join(thumbprint_problems(raw)),
    }


def _port(raw: str | None) -> tuple[int | None, str | None]:
    if raw is None:
        return None, "missing"
    text = raw.strip()
    if not text.isdigit() or not text.isascii():
        return None, f"{raw!r} is not a number"
    value = int(text)
    if not 1 <= value <= 65535:
        return None, f"{value} is outside 1-65535"
    return value, None


def _found(cert: Facts | None, thumb: str | None, stores: tuple[CertificateStore | None, ...]) -> bool | None:
    if cert is not None:
        return True
    if thumb is None or any(s is None for s in stores):
        return None
    return False


def _key_present(store: CertificateStore | None, thumb: str | None) -> bool | None:
    if store is None or thumb is None:
        return None
    copy = store.find(thumb)
    return False if copy is None else copy.has_private_key


def _role_service(services: list[Service] | None, prefix: str) -> Facts | None:
    if services is None:
        return None
    mine = [s for s in services if s.name.lower().startswith(prefix)]
    if not mine:
        return {
            "present": False,
            "name": None,
            "state": None,
            "start_mode": None,
            "running": False,
            "automatic": False,
            "account": None,
        }
    best = sorted(mine, key=lambda s: (not s.running, not s.automatic))[0]
    return _one_service(best)


def _one_service(service: Service) -> Facts:
    return {
        "present": True,
        "name": service.name,
        "state": service.state.lower() if service.state else None,
        "start_mode": service.start_mode.lower() if service.start_mode else None,
        "running": service.running,
        "automatic": service.automatic,
        "account": service.account,
    }


def _binding_facts(binding: SslBinding) -> Facts:
    return {
        "ip_port": binding.ip_port,
        "host": binding.host,
        "port": binding.port,
        "cert_hash": normalize_thumbprint(binding.cert_hash),
        "app_id": binding.app_id,
        "store": binding.cert_store,
        "store_is_root": (binding.cert_store or "").strip().lower() == "root",
    }


def _own_names(node: NodeSnapshot) -> list[str]:
    ident = node.identity
    return _distinct(
        n.strip().lower() for n in (node.name, ident.computer_name, ident.fqdn, *(ident.addresses or [])) if n
    )


def _thumbprints(store: CertificateStore | None) -> list[str] | None:
    return [c.thumbprint for c in store.certificates] if store is not None else None


def _any_running(masters: list[Facts]) -> bool | None:
    services = [m["service"] for m in masters]
    if any(s is not None and s["running"] for s in services):
        return True
    return False if all(s is not None for s in services) else None


def _endpoint_groups(workers: list[Facts]) -> list[Facts]:
    """The workers (their ``worker`` facts) by the master endpoint they name."""
    groups: dict[str, Facts] = {}
    for worker in workers:
        endpoint = worker["endpoint"]
        if endpoint is None or endpoint["normalized"] is None:
            continue
        group = groups.setdefault(
            endpoint["normalized"],
            {
                "endpoint": endpoint["normalized"],
                "host": endpoint["host"],
                "port": endpoint["port"],
                "workers": [],
            },
        )
        group["workers"].append(worker["name"])
    return list(groups.values())


def _ssisdb_thumbprint(cluster: ClusterSnapshot) -> tuple[str | None, str | None]:
    for node in cluster.masters:
        facts = _ssisdb_facts(node)
        if facts is not None and facts["sslcert_thumbprint_raw"] is not None:
            return node.name, facts["sslcert_thumbprint"] or facts["sslcert_thumbprint_raw"]
    return None, None


def _canonical_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip("[]").split("%", 1)[0]))
    except ValueError:
        return text.lower()


def _distinct(values: Any) -> list[Any]:
    seen: dict[Any, None] = {}
    for v in values:
        if v is not None:
            seen.setdefault(v, None)
    return list(seen)


def _subject_key(subject: str) -> str:
    return "".join(subject.lower().split())




def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class _CertIndex:
    """Certificates of the whole cluster by thumbprint: a copy anywhere tells what the certificate is.

    The cluster-wide map is built on the first lookup that needs it (a certificate missing from the
    stores its node names), which a healthy cluster may never make."""

    def __init__(self, cluster: ClusterSnapshot, now: datetime) -> None:
        self.now = now
        self.cluster = cluster
        self._where: dict[str, list[tuple[str, str, Certificate]]] | None = None
        self._facts: dict[tuple[str, str, str], Facts] = {}

    @property
    def where(self) -> dict[str, list[tuple[str, str, Certificate]]]:
        if self._where is None:
            where: dict[str, list[tuple[str, str, Certificate]]] = {}
            for node in self.cluster.nodes:
                for store in (node.root, node.my):
                    if store is None:
                        continue
                    for cert in store.certificates:
                        where.setdefault(cert.thumbprint, []).append((node.name, store.name, cert))
            self._where = where
        return self._where

    def resolve(
        self, thumb: str | None, node: NodeSnapshot, preferred: tuple[CertificateStore | None, ...]
    ) -> Facts | None:
        """The certificate facts for ``thumb``: from ``preferred`` stores of ``node`` first, else anywhere."""
        if thumb is None:
            return None
        for store in preferred:
            cert = store.find(thumb) if store is not None else None
            if cert is not None and store is not None:
                return self.facts(node.name, store.name, cert)
        copies = self.where.get(thumb)
        return self.facts(*copies[0]) if copies else None

    def facts(self, node: str, store: str, cert: Certificate) -> Facts:
        key = (node, store, cert.thumbprint)
        cached = self._facts.get(key)
        if cached is None:
            cached = self._facts[key] = certificate_facts(cert, f"{node}\\{store}", self.now)
        return cached


def certificate_facts(cert: Certificate, found_in: str, now: datetime) -> Facts:
    not_before, not_after = _aware(cert.not_before), _aware(cert.not_after)
    return {
        "thumbprint": cert.thumbprint,
        "subject": cert.subject,
        "subject_key": _subject_key(cert.subject),
        "issuer": cert.issuer,
        "common_names": list(cert.common_names),
        "san_dns": list(cert.san_dns),
        "san_ip": list(cert.san_ip),
        "names": _distinct(n.strip().lower() for n in cert.names()),
        "serial": cert.serial,
        "not_before": not_before,
        "not_after": not_after,
        "days_left": days_left(not_after, now),
        "expired": now > not_after,
        "not_yet_valid": now < not_before,
        "key_algorithm": cert.key_algorithm.upper(),
        "key_bits": cert.key_bits,
        "signature_hash": cert.signature_hash.lower() if cert.signature_hash else None,
        "self_signed": cert.self_signed,
        "has_private_key": cert.has_private_key,
        "found_in": found_in,
    }
