"""Build the lab's nodes from an evidence folder, through the project's own evidence reader.

There is one reader of evidence folders (:mod:`scaleguard.collectors.evidence`, with the parsers in
:mod:`scaleguard.collectors.parsers`). The lab does not parse evidence itself: it reads each node folder
with that reader and turns the resulting :class:`NodeSnapshot` back into the raw material the agent
reports (certificate DER, registry-shaped bindings, service rows, the settings files' bytes as the reader
read them). So a live audit of a folder over ``lab serve`` sees exactly what its offline audit sees, and a
quirk the reader understands (an openssl ``Bag Attributes`` preamble, ``Get-Service`` numbers) is
understood live too.

What the reader left unknown stays unknown: the agent reports it unreadable and actions needing it are
refused. The only facts the lab adds are those an evidence folder cannot carry (README, "lab defaults"):
the SQL Server version (from the service names, else 150), the key provider (CAPI) of a key the evidence
says exists, and SSISDB — from the lab-only ``ssisdb.json`` of a master, else a healthy default: the first
master's configured certificate thumbprint, and every worker of the cluster registered and enabled.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from scaleguard.collectors.agent.schema import AgentSsisDb
from scaleguard.collectors.evidence import (
    cluster_folders,
    is_node_folder,
    node_folders,
    read_node_with_settings_bytes,
)
from scaleguard.collectors.parsers.config import ConfigKind
from scaleguard.collectors.parsers.psjson import PowerShellJsonError, loads_powershell_json
from scaleguard.lab.state import (
    DEFAULT_SQL_VERSION,
    LabBinding,
    LabCert,
    LabCluster,
    LabFaults,
    LabKey,
    LabNode,
    LabSchannel,
    LabService,
    LabSsisDb,
    LabState,
)
from scaleguard.rules.thumbprint import normalize_thumbprint
from scaleguard.snapshot.model import CertificateStore, CollectionState, ConfigFile, NodeSnapshot

SSISDB_FILE = "ssisdb.json"
SSISDB_LIMIT = 1024 * 1024
_SERVICE_VERSION = re.compile(r"SSISScaleOut(?:Master|Worker)(\d{3})", re.IGNORECASE)
_AGENT_ID_NAMESPACE = uuid.UUID("5c0a1e5e-1ab0-4d1e-9a3b-5ca1e9a0d5b1")


def load_state(
    evidence: Path, faults: dict[str, LabFaults] | None = None, *, service_s: float = 0.0
) -> LabState:
    """One :class:`LabNode` per node folder of every cluster folder under ``evidence``.

    ``faults`` maps ``NODE`` or ``CLUSTER/NODE`` to injected faults; ``service_s`` is how long a service
    takes to start or stop. Raises ``ValueError`` for a folder the lab cannot serve faithfully.
    """
    state = LabState()
    if not evidence.is_dir():
        raise FileNotFoundError(f"{evidence}: not a folder")
    folders = cluster_folders(evidence) or [evidence]
    if folders == [evidence] and not any(is_node_folder(n) for n in node_folders(evidence)):
        raise FileNotFoundError(f"{evidence}: no node folders (nor cluster folders holding them) found")
    for folder in folders:
        cluster = LabCluster(name=folder.name)
        snapshots: list[NodeSnapshot] = []
        for node_dir in node_folders(folder):
            snapshot, settings = read_node_with_settings_bytes(node_dir)
            node = node_from_snapshot(snapshot, settings, cluster=folder.name, where=node_dir)
            node.service_s = service_s
            cluster.nodes.append(node)
            snapshots.append(snapshot)
        ssisdb = _ssisdb_file(folder, cluster.nodes) or healthy_ssisdb(folder.name, snapshots)
        for node in cluster.nodes:
            if "master" in node.roles():
                node.ssisdb = ssisdb
        state.clusters.append(cluster)
    _attach_faults(state, faults or {})
    return state


def node_from_snapshot(
    snapshot: NodeSnapshot, settings: dict[ConfigKind, bytes], *, cluster: str, where: Path | str = ""
) -> LabNode:
    """The raw material behind what the evidence reader made of one node folder."""
    if snapshot.collection.state is CollectionState.FAILED:
        raise ValueError(f"{where}: the evidence reader could not read this node folder "
                         f"({snapshot.collection.reason}); the lab cannot serve it")
    node = LabNode(name=snapshot.name, cluster=cluster)
    roles: tuple[tuple[ConfigKind, ConfigFile | None], ...] = (
        ("master", snapshot.master_config), ("worker", snapshot.worker_config)
    )
    for role, config in roles:
        if config is None:
            continue
        if role not in settings:
            raise ValueError(f"{where}: {config.path} could not be read ({config.parse_error}); the lab "
                             "serves only files the evidence reader could read")
        node.set_config(role, settings[role])
    node.fqdn, node.addresses = snapshot.identity.fqdn, snapshot.identity.addresses
    node.sql_version = _sql_version(s.name for s in snapshot.services or []) or DEFAULT_SQL_VERSION
    node.root = _store(node, snapshot.root)
    node.my = _store(node, snapshot.my)
    node.bindings = None if snapshot.bindings is None else [
        LabBinding(ip_port=b.ip_port, cert_hash=b.cert_hash, app_id=b.app_id, store=b.cert_store, kind=b.kind)
        for b in snapshot.bindings
    ]
    node.services = None if snapshot.services is None else [
        LabService(s.name, state=s.state, start_mode=s.start_mode, account=s.account)
        for s in snapshot.services
    ]
    node.schannel = None if snapshot.schannel is None else LabSchannel(
        client_auth_trust_mode=snapshot.schannel.client_auth_trust_mode,
        send_trusted_issuer_list=snapshot.schannel.send_trusted_issuer_list,
    )
    return node


def _store(node: LabNode, store: CertificateStore | None) -> list[LabCert] | None:
    """Store copies whose exports say the same about the key (present, same readers) share one key,
    as Windows keeps one key file behind them; an export that disagrees is another container."""
    if store is None:
        return None
    certs = []
    for certificate in store.certificates:
        if certificate.der_b64 is None:
            raise ValueError(f"{node.name}: {certificate.source} has no DER")
        cert = LabCert(der=base64.b64decode(certificate.der_b64), key_known=certificate.has_private_key is not None)
        if certificate.has_private_key:
            cert.key = _shared_key(node, cert.thumbprint, certificate.key_readers)
        certs.append(cert)
    return certs


def _shared_key(node: LabNode, thumbprint: str, readers: list[str] | None) -> LabKey:
    for key in node.key_containers.values():
        if key.name.startswith(thumbprint.lower()) and key.readers == readers:
            return key
    return node.new_key(thumbprint, "capi", list(readers) if readers is not None else None)


def _sql_version(service_names: Iterable[str]) -> str | None:
    return next((found.group(1) for name in service_names if (found := _SERVICE_VERSION.fullmatch(name))), None)


# --- SSISDB ---------------------------------------------------------------------------------------------


def _ssisdb_file(cluster_dir: Path, nodes: list[LabNode]) -> LabSsisDb | None:
    """The lab-only ``ssisdb.json`` of a master node folder (what SSISDB answers), checked like the
    agent's own SSISDB section; two masters' files must agree (one database serves them all)."""
    found: list[tuple[str, LabSsisDb]] = []
    for node in nodes:
        if "master" not in node.roles():
            continue
        path = cluster_dir / node.name / SSISDB_FILE
        if not path.is_file():
            continue
        if path.stat().st_size > SSISDB_LIMIT:
            raise ValueError(f"{path}: larger than {SSISDB_LIMIT} bytes")
        try:
            parsed = AgentSsisDb.model_validate(loads_powershell_json(path.read_bytes()))
        except (PowerShellJsonError, ValidationError) as exc:
            raise ValueError(f"{path}: not what SSISDB answers ({exc})") from exc
        found.append((node.name, LabSsisDb(
            master_properties=dict(parsed.master_properties),
            worker_agents=[a.model_dump() for a in parsed.worker_agents],
            source=f"{node.name}/{SSISDB_FILE}",
        )))
    if len({repr((s.master_properties, s.worker_agents)) for _, s in found}) > 1:
        names = ", ".join(name for name, _ in found)
        raise ValueError(f"{cluster_dir}: the {SSISDB_FILE} files of {names} differ; SSISDB is one database")
    return found[0][1] if found else None


def healthy_ssisdb(cluster: str, snapshots: list[NodeSnapshot]) -> LabSsisDb | None:
    """SSISDB as a healthy cluster has it: the first master's configured thumbprint (as the running master
    publishes it) and every worker registered and enabled. None when no master names a thumbprint: the
    lab does not invent one (SSISDB is then reported unreachable)."""
    thumbprint = next(
        (t for s in snapshots if s.master_config is not None
         and (t := normalize_thumbprint(s.master_config.get("SSLCertThumbprint"))) is not None),
        None,
    )
    if thumbprint is None:
        return None
    agents = [
        {
            "WorkerAgentId": str(uuid.uuid5(_AGENT_ID_NAMESPACE, f"{cluster}/{s.name}".lower())).upper(),
            "MachineName": s.name,
            "DisplayName": s.worker_config.get("DisplayName") or s.name,
            "IsEnabled": True,
            "LastOnlineTime": None,
        }
        for s in snapshots
        if s.worker_config is not None
    ]
    return LabSsisDb(master_properties={"SSLCERT_THUMBPRINT": thumbprint}, worker_agents=agents,
                     source="lab default")


# --- faults ---------------------------------------------------------------------------------------------


def _attach_faults(state: LabState, faults: dict[str, LabFaults]) -> None:
    """``NODE`` names a node in any cluster (refused when several have that name), ``CLUSTER/NODE`` one."""
    for key, fault in faults.items():
        cluster, _, name = key.rpartition("/")
        matches = state.named(name, cluster or None)
        if not matches:
            raise ValueError(f"faults name unknown node(s): {key}")
        if len(matches) > 1:
            raise ValueError(f"faults: {key} names a node in several clusters; write CLUSTER/{name}")
        matches[0].faults = fault
