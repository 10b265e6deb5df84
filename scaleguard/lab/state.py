"""What a simulated Windows node *is*: the raw material its agent would read, held in memory.

The lab server (``scaleguard lab serve``) keeps one :class:`LabNode` per node folder of an evidence folder
and answers every agent request from it, so a fix applied through WinRM is seen by the next audit. The
state is deliberately *raw* (config file bytes, certificate DER, registry-shaped bindings): the lab must
never pre-judge what the parsers and policies are there to judge.

Requests reach a node as JSON with an ``"op"``; :data:`ACTIONS` maps each op to a handler
``(node, request) -> response document``. ``collect`` lives in :mod:`scaleguard.lab.collect_op`; the
fix engine's actions live in :mod:`scaleguard.lab.actions`. A handler runs under ``node.lock`` (the server
takes it), mutates the node in place and raises :class:`ActionError` for a failure the agent would report
(exit code 1 with the message on stderr).

Facts an evidence folder does not carry get *documented healthy defaults* (see :func:`node_from_evidence`):
services running and automatic under their virtual account, private keys present on My certificates and on
the master's configured certificate and readable by the service account, SCHANNEL values absent. SSISDB is
only simulated when the node folder holds a lab-only ``ssisdb.json`` (otherwise "not reachable"), so the
live audit of a folder matches its offline audit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scaleguard.rules.thumbprint import normalize_thumbprint

DEFAULT_SQL_VERSION = "150"
SQL_VERSIONS = ("140", "150", "160")
DEFAULT_APP_ID = "{a1f96506-93e0-4c91-9171-05a2f6739e13}"
CONFIG_DIR = "C:\\Program Files\\Microsoft SQL Server\\{version}\\DTS\\Binn"
MACHINE_KEYS_DIR = "C:\\ProgramData\\Microsoft\\Crypto\\RSA\\MachineKeys"
CNG_KEYS_DIR = "C:\\ProgramData\\Microsoft\\Crypto\\Keys"
# Who can read a machine key on a stock node, besides the service that uses it.
ALWAYS_KEY_READERS = ("NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators")

Role = Literal["master", "worker"]


class ActionError(Exception):
    """A request the simulated node refuses: reported like a PowerShell error (stderr, exit code 1)."""


@dataclass
class LabCert:
    """One certificate in a LocalMachine store, as the agent sees it."""

    der: bytes
    has_private_key: bool = False
    key_provider: Literal["capi", "cng"] | None = None
    key_readers: list[str] | None = None  # None: the key ACL could not be read

    @property
    def thumbprint(self) -> str:
        return hashlib.sha1(self.der, usedforsecurity=False).hexdigest().upper()

    @property
    def key_file(self) -> str | None:
        """Where Windows keeps the key (the ACL the agent reads); None without a private key."""
        if not self.has_private_key:
            return None
        folder = CNG_KEYS_DIR if self.key_provider == "cng" else MACHINE_KEYS_DIR
        return f"{folder}\\{self.thumbprint.lower()}_lab"


@dataclass
class LabBinding:
    """One ``SslBindingInfo`` registry key: ``store`` None means the value is absent (HTTP.sys uses MY)."""

    ip_port: str
    cert_hash: str | None
    app_id: str | None = DEFAULT_APP_ID
    store: str | None = "Root"
    kind: Literal["ipport", "hostnameport", "ccs"] = "ipport"


@dataclass
class LabService:
    name: str
    state: str = "Running"
    start_mode: str = "Auto"
    start_name: str | None = None


@dataclass
class LabSchannel:
    """``HKLM\\...\\SecurityProviders\\SCHANNEL`` values; None means the value does not exist."""

    client_auth_trust_mode: int | None = None
    send_trusted_issuer_list: int | None = None


@dataclass
class LabSsisDb:
    master_properties: dict[str, str] = field(default_factory=dict)
    worker_agents: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LabFaults:
    """Misbehaviour injected per node for tests (``lab serve --faults FILE``); all off by default.

    - ``down``: nothing listens on the node's port (host down).
    - ``hang``: ``"receive"`` — commands never finish (every Receive long-polls into an OperationTimeout
      fault); ``"http"`` — requests are read but never answered.
    - ``expired_shells``: the first N shells opened on the node expire right after their first Command, so
      the Receive meets fault 2150858843 (what IdleTimeout or a WinRM restart does on a real host).
    - ``quota_faults``: the first N Commands get the ERROR_WSMAN_QUOTA_MAX_OPERATIONS fault (0x803381A6),
      as the leaking operation counter of a long-lived shell does.
    - ``malformed_output``: the agent prints something that is not its JSON document.
    - ``password``: the node expects this password instead of the lab's (a wrong-password host).
    - ``tls_name``: on HTTPS the node presents a certificate for this name only (name mismatch).
    - ``fail_ops``: op name → how many of the next requests with that op fail before changing anything
      (the fix engine's rollback tests: ``{"set_binding": 1}`` makes the first binding change fail).
    """

    down: bool = False
    hang: Literal["receive", "http"] | None = None
    expired_shells: int = 0
    quota_faults: int = 0
    malformed_output: bool = False
    password: str | None = None
    tls_name: str | None = None
    fail_ops: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabFaults:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            listed = ", ".join(sorted(known))
            raise ValueError(f"unknown lab fault(s): {', '.join(unknown)} (known: {listed})")
        faults = cls(**data)
        if faults.hang not in (None, "receive", "http"):
            raise ValueError(f"hang must be 'receive' or 'http', not {faults.hang!r}")
        return faults


@dataclass
class LabNode:
    """One simulated Windows host. Mutate it only while holding ``lock``."""

    name: str
    cluster: str
    fqdn: str | None = None
    addresses: list[str] | None = None
    sql_version: str = DEFAULT_SQL_VERSION
    master_config: bytes | None = None
    worker_config: bytes | None = None
    root: list[LabCert] = field(default_factory=list)
    my: list[LabCert] = field(default_factory=list)
    bindings: list[LabBinding] | None = field(default_factory=list)  # None: SslBindingInfo unreadable
    netsh_text: bytes | None = None  # what `netsh http show sslcert` prints when the registry is unreadable
    services: list[LabService] | None = field(default_factory=list)
    schannel: LabSchannel | None = field(default_factory=LabSchannel)
    ssisdb: LabSsisDb | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # other files on the node (backups, .cer files)
    journal: list[dict[str, Any]] = field(default_factory=list)  # what actions did, for tests and humans
    lease: dict[str, Any] | None = None  # the cluster lease a fix run holds (masters only; see lab.actions)
    service_s: float = 0.0  # how long a service takes to stop and start again (lab serve --service-ms)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)  # (monotonic, service, stop|start)
    faults: LabFaults = field(default_factory=LabFaults)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def config_path(self, role: Role) -> str:
        file_name = "MasterSettings.config" if role == "master" else "WorkerSettings.config"
        return CONFIG_DIR.format(version=self.sql_version) + "\\" + file_name

    def config(self, role: Role) -> bytes | None:
        return self.master_config if role == "master" else self.worker_config

    def set_config(self, role: Role, content: bytes) -> None:
        if role == "master":
            self.master_config = content
        else:
            self.worker_config = content

    def store(self, name: str) -> list[LabCert]:
        if name.lower() == "root":
            return self.root
        if name.lower() == "my":
            return self.my
        raise ActionError(f"no certificate store LocalMachine\\{name} on {self.name}")

    def find_cert(self, store: str, thumbprint: str) -> LabCert | None:
        wanted = normalize_thumbprint(thumbprint)
        return next((c for c in self.store(store) if c.thumbprint == wanted), None) if wanted else None

    def service(self, name: str) -> LabService | None:
        return next((s for s in self.services or [] if s.name.lower() == name.lower()), None)

    def service_name(self, role: Role) -> str:
        return f"SSISScaleOut{'Master' if role == 'master' else 'Worker'}{self.sql_version}"

    def binding(self, ip_port: str) -> LabBinding | None:
        return next((b for b in self.bindings or [] if b.ip_port.lower() == ip_port.lower()), None)

    def roles(self) -> list[Role]:
        roles: list[Role] = []
        if self.master_config is not None:
            roles.append("master")
        if self.worker_config is not None:
            roles.append("worker")
        return roles


@dataclass
class LabCluster:
    name: str
    nodes: list[LabNode] = field(default_factory=list)


@dataclass
class LabState:
    clusters: list[LabCluster] = field(default_factory=list)

    def nodes(self) -> Iterator[LabNode]:
        for cluster in self.clusters:
            yield from cluster.nodes

    def node(self, name: str) -> LabNode | None:
        return next((n for n in self.nodes() if n.name.lower() == name.lower()), None)


ActionHandler = Callable[[LabNode, dict[str, Any]], dict[str, Any]]
ACTIONS: dict[str, ActionHandler] = {}
"""op name → handler. ``collect`` is registered by :mod:`scaleguard.lab.collect_op`."""


def action(op: str) -> Callable[[ActionHandler], ActionHandler]:
    """Register a handler for the request ``{"op": op, ...}`` (decorator)."""

    def register(handler: ActionHandler) -> ActionHandler:
        ACTIONS[op] = handler
        return handler

    return register


def load_actions() -> dict[str, ActionHandler]:
    """Import every module that registers ops (the fix engine's ``actions`` module is optional)."""
    import importlib

    importlib.import_module("scaleguard.lab.collect_op")
    try:
        importlib.import_module("scaleguard.lab.actions")
    except ModuleNotFoundError as exc:
        if exc.name != "scaleguard.lab.actions":
            raise
    return ACTIONS


def dispatch(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """Run one agent request against ``node`` (under its lock)."""
    op = request.get("op")
    handler = ACTIONS.get(op) if isinstance(op, str) else None
    if handler is None:
        raise ActionError(f"unknown op {op!r}")
    with node.lock:
        return handler(node, request)


# --- building the state from an evidence folder ---------------------------------------------------------

_NODE_MARKERS = ("certs", "sslcert.txt", "MasterSettings.config", "WorkerSettings.config", "host.json")


def is_node_folder(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in _NODE_MARKERS)


def cluster_folders(evidence: Path) -> list[Path]:
    """``evidence`` is one cluster folder (node folders inside) or a folder of cluster folders."""
    if not evidence.is_dir():
        raise FileNotFoundError(f"{evidence}: not a folder")
    children = sorted(p for p in evidence.iterdir() if p.is_dir())
    if any(is_node_folder(p) for p in children):
        return [evidence]
    clusters = [p for p in children if any(is_node_folder(c) for c in p.iterdir() if c.is_dir())]
    if not clusters:
        raise FileNotFoundError(f"{evidence}: no node folders (nor cluster folders holding them) found")
    return clusters


def load_state(evidence: Path, faults: dict[str, LabFaults] | None = None) -> LabState:
    """One :class:`LabNode` per node folder; ``faults`` maps node names to injected faults."""
    faults = {k.lower(): v for k, v in (faults or {}).items()}
    state = LabState()
    for folder in cluster_folders(evidence):
        cluster = LabCluster(name=folder.name)
        for node_dir in sorted(p for p in folder.iterdir() if is_node_folder(p)):
            node = node_from_evidence(node_dir, cluster=folder.name)
            node.faults = faults.pop(node.name.lower(), LabFaults())
            cluster.nodes.append(node)
        state.clusters.append(cluster)
    if faults:
        raise ValueError(f"faults name unknown node(s): {', '.join(sorted(faults))}")
    return state


def node_from_evidence(node_dir: Path, *, cluster: str) -> LabNode:
    """Raw state of one node folder plus the documented healthy defaults for what the folder lacks."""
    node = LabNode(name=node_dir.name, cluster=cluster)
    for role, file_name in (("master", "MasterSettings.config"), ("worker", "WorkerSettings.config")):
        path = node_dir / file_name
        if path.is_file():
            node.set_config(role, path.read_bytes())  # type: ignore[arg-type]
    services = _read_json_list(node_dir / "services.json")
    node.sql_version = _sql_version(services) or DEFAULT_SQL_VERSION
    node.root = [LabCert(der=_to_der(p.read_bytes())) for p in _cert_files(node_dir / "certs" / "Root")]
    node.my = [LabCert(der=_to_der(p.read_bytes())) for p in _cert_files(node_dir / "certs" / "My")]
    sslcert = node_dir / "sslcert.txt"
    if sslcert.is_file():
        from scaleguard.lab.netsh_text import bindings_from_netsh

        node.netsh_text = sslcert.read_bytes()
        node.bindings = bindings_from_netsh(node.netsh_text)
    else:
        node.bindings = None
    node.services = (
        [
            LabService(
                name=str(s.get("Name")),
                state=_text(s.get("State")) or "Running",
                start_mode=_text(s.get("StartMode")) or "Auto",
                start_name=_text(s.get("StartName")),
            )
            for s in services
            if s.get("Name")
        ]
        if services is not None
        else [
            LabService(name=node.service_name(role), start_name=f"NT Service\\{node.service_name(role)}")
            for role in node.roles()
        ]
    )
    _apply_keys(node, _read_json_list(node_dir / "keys.json"))
    host = _read_json(node_dir / "host.json")
    if isinstance(host, dict):
        node.fqdn = _text(host.get("fqdn"))
        addresses = host.get("addresses")
        node.addresses = [str(a) for a in addresses] if isinstance(addresses, list) else None
    schannel = _read_json(node_dir / "schannel.json")
    if isinstance(schannel, dict):
        node.schannel = LabSchannel(
            client_auth_trust_mode=_int(schannel.get("ClientAuthTrustMode")),
            send_trusted_issuer_list=_int(schannel.get("SendTrustedIssuerList")),
        )
    ssisdb = _read_json(node_dir / "ssisdb.json")
    if isinstance(ssisdb, dict):
        agents = ssisdb.get("worker_agents") or []
        node.ssisdb = LabSsisDb(
            master_properties={str(k): str(v) for k, v in (ssisdb.get("master_properties") or {}).items()},
            worker_agents=[dict(a) for a in agents if isinstance(a, dict)],
        )
    return node


def _cert_files(store_dir: Path) -> list[Path]:
    return sorted(p for p in store_dir.iterdir() if p.is_file()) if store_dir.is_dir() else []


def _to_der(data: bytes) -> bytes:
    """PEM/Base-64 exports become the DER a store holds; anything unreadable is kept as it is, so the
    live audit sees (and diagnoses) the same bad bytes the offline audit does."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        body = b"".join(line for line in text.splitlines() if line and not line.startswith(b"-----"))
        try:
            return base64.b64decode(body, validate=False)
        except (binascii.Error, ValueError):
            return data
    if text[:1] == b"M" and re.fullmatch(rb"[A-Za-z0-9+/=\s]+", text):
        try:
            return base64.b64decode(b"".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            return data
    return data


def _apply_keys(node: LabNode, keys: list[dict[str, Any]] | None) -> None:
    if keys is not None:
        by_store: dict[tuple[str, str], dict[str, Any]] = {}
        for row in keys:
            parent = str(row.get("PSParentPath") or "")
            store = "root" if parent.lower().endswith("\\root") else "my"
            by_store[(store, normalize_thumbprint(str(row.get("Thumbprint") or "")) or "")] = row
        for store_name, certs in (("root", node.root), ("my", node.my)):
            for cert in certs:
                entry = by_store.get((store_name, cert.thumbprint))
                if entry is None:
                    continue
                cert.has_private_key = bool(entry.get("HasPrivateKey"))
                readers = entry.get("KeyReaders")
                if cert.has_private_key:
                    cert.key_provider = "capi"
                    cert.key_readers = (
                        [str(r) for r in readers] if isinstance(readers, list)
                        else [str(readers)] if isinstance(readers, str)
                        else _default_readers(node)
                    )
        return
    master_thumbprint = _master_thumbprint(node.master_config)
    for cert in node.my:
        cert.has_private_key, cert.key_provider, cert.key_readers = True, "capi", _default_readers(node)
    for cert in node.root:
        if master_thumbprint and cert.thumbprint == master_thumbprint:
            cert.has_private_key, cert.key_provider, cert.key_readers = True, "capi", _default_readers(node)


def _default_readers(node: LabNode) -> list[str]:
    accounts = [s.start_name for s in node.services or [] if s.start_name]
    return [*ALWAYS_KEY_READERS, *accounts]


def _master_thumbprint(config: bytes | None) -> str | None:
    """The certificate a MasterSettings.config names, read by the project's own parser."""
    if config is None:
        return None
    from scaleguard.collectors.parsers.config import parse_config

    parsed = parse_config(config, "MasterSettings.config", kind="master")
    return normalize_thumbprint(parsed.get("SSLCertThumbprint"))


def _sql_version(services: list[dict[str, Any]] | None) -> str | None:
    for service in services or []:
        found = re.search(r"SSISScaleOut(?:Master|Worker)(\d{3})", str(service.get("Name") or ""))
        if found:
            return found.group(1)
    return None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "utf-16"):
        try:
            return json.loads(data.decode(encoding))
        except (UnicodeDecodeError, ValueError):
            continue
    return None


def _read_json_list(path: Path) -> list[dict[str, Any]] | None:
    data = _read_json(path)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return None
    return [row for row in data if isinstance(row, dict)]


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None
