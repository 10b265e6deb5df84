"""The snapshot: everything scaleguard knows about a cluster, and nothing it does not.

A snapshot is the artefact between *collect* and *evaluate*. Offline (evidence folder) and live (WinRM)
collection both produce it, so policies never know where a fact came from. Every fact can be unknown:
``None`` means "not collected" (the policy that needs it reports ``not_assessed``), which is different
from an empty list ("collected, and there is nothing"). Parse problems are kept as ``Diagnostic`` entries
next to the data they spoil instead of being raised, so one bad file never hides the rest of a node.

The JSON form is versioned by ``SCHEMA_VERSION``; readers refuse a major version they do not know.
Since 1.1 each cluster in ``snapshot.json`` carries its certificates' DER once, in ``certificates``
(thumbprint → base64), and the store entries leave ``der_b64`` null: the same Root CAs sit in every node's
store, so a 1,000-node fleet's snapshot is 3 MiB instead of 24. Reading restores every entry's
``der_b64``, so in memory nothing changed; 1.0 files (DER inline) read as before.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializationInfo, field_serializer, model_validator

from scaleguard.safefile import MIB, read_limited

SCHEMA_VERSION = "1.1"
_DER_TABLE = "der_by_thumbprint"
"""Serialization context key: the DER each thumbprint is written with once (see :meth:`Snapshot.write`)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class DiagnosticLevel(StrEnum):
    """How much a diagnostic spoils the evidence it is attached to."""

    INFO = "info"
    LOW = "low"
    WARNING = "warning"
    ERROR = "error"


class Diagnostic(_Model):
    """Something odd found while reading a node's evidence (never silently dropped)."""

    level: DiagnosticLevel
    source: str = Field(description="file or artefact the diagnostic is about, relative to the node")
    message: str


class CollectionState(StrEnum):
    """Whether a node could be collected at all (SO-C01)."""

    OK = "ok"
    UNREACHABLE = "unreachable"
    AUTH_REFUSED = "auth_refused"
    TIMED_OUT = "timed_out"
    NO_CONFIG = "no_config"
    FAILED = "failed"


class Collection(_Model):
    state: CollectionState = CollectionState.OK
    reason: str | None = None
    transport: Literal["evidence", "winrm"] = "evidence"
    insecure: bool = False
    unencrypted: bool = Field(
        default=False,
        description="WinRM traffic crossed a network readable (Basic or unsealed messages over plain http, "
        "allowed by the inventory's allow_unencrypted)",
    )
    duration_ms: float | None = None


class Certificate(_Model):
    """One X.509 certificate as found in a store (parsed with `cryptography`)."""

    thumbprint: str = Field(description="SHA-1 of the DER, 40 upper-case hex digits (Windows' thumbprint)")
    subject: str
    issuer: str
    common_names: list[str]
    san_dns: list[str] = []
    san_ip: list[str] = []
    serial: str
    not_before: datetime
    not_after: datetime
    key_algorithm: str = Field(description="RSA, EC, DSA, Ed25519, ...")
    key_bits: int | None = None
    signature_hash: str | None = Field(default=None, description="sha1, sha256, md5, ... (None if unknown)")
    self_signed: bool
    source: str = Field(description="where it came from: evidence file name or store path")
    der_b64: str | None = Field(default=None, description="the certificate itself, so a fix can copy it")
    has_private_key: bool | None = None
    key_readers: list[str] | None = Field(
        default=None, description="identities with read access to the private key (None = unknown)"
    )

    def names(self) -> list[str]:
        """Every host name or address this certificate vouches for (CNs, SAN DNS, SAN IP)."""
        return [*self.common_names, *self.san_dns, *self.san_ip]

    @field_serializer("der_b64")
    def _der_unless_in_table(self, value: str | None, info: SerializationInfo) -> str | None:
        """Null when :meth:`Snapshot.write` puts this very DER in the cluster's table; inline otherwise
        (every other dump, and the theoretical second DER with a thumbprint already taken)."""
        table = info.context.get(_DER_TABLE) if isinstance(info.context, dict) else None
        if table is not None and value is not None and table.get(self.thumbprint) == value:
            return None
        return value


def days_left(not_after: datetime, now: datetime) -> int:
    """Whole days until ``not_after``, rounded down (6 hours left is 0 days, 6 hours past is -1).

    The one definition every stage uses, so a policy verdict, the report and expiry.csv never disagree;
    rounding down makes a threshold trip early rather than late.
    """
    return math.floor((not_after - now).total_seconds() / 86400)


class CertificateStore(_Model):
    """LocalMachine\\<name> as collected; ``certificates`` is complete when ``collected`` is true."""

    name: Literal["Root", "My"]
    certificates: list[Certificate] = []

    def find(self, thumbprint: str | None) -> Certificate | None:
        if not thumbprint:
            return None
        wanted = thumbprint.upper()
        return next((c for c in self.certificates if c.thumbprint == wanted), None)


class SslBinding(_Model):
    """One HTTP.sys SSL binding (netsh http show sslcert / SslBindingInfo registry key)."""

    ip_port: str = Field(description="as HTTP.sys names it: 0.0.0.0:8391, [::]:8391, 10.0.2.8:8391, host:port")
    kind: Literal["ipport", "hostnameport", "ccs"] = "ipport"
    cert_hash: str | None = Field(default=None, description="40 upper-case hex digits")
    app_id: str | None = Field(default=None, description="{guid} as netsh prints it")
    cert_store: str | None = Field(default=None, description="None/(null) means MY")

    @property
    def port(self) -> int | None:
        tail = self.ip_port.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else None

    @property
    def host(self) -> str:
        return self.ip_port.rsplit(":", 1)[0].strip("[]")


class ConfigFile(_Model):
    """A Scale Out settings file: the raw values it names, before any judgement.

    ``settings`` holds every recognised setting exactly as written (after decoding), so a policy can tell
    a thumbprint with spaces from a missing one. ``parse_error`` is set when the file exists but could not
    be read as XML or JSON.
    """

    path: str
    encoding: str | None = None
    format: Literal["xml", "json", "unknown"] = "unknown"
    parse_error: str | None = None
    settings: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.settings.get(key)


class Service(_Model):
    name: str
    state: str | None = None
    start_mode: str | None = None
    account: str | None = None

    @property
    def running(self) -> bool:
        return (self.state or "").lower() == "running"

    @property
    def automatic(self) -> bool:
        return (self.start_mode or "").lower().startswith("auto")


class Schannel(_Model):
    client_auth_trust_mode: int | None = None
    send_trusted_issuer_list: int | None = None


class WorkerAgent(_Model):
    worker_agent_id: str
    machine_name: str | None = None
    display_name: str | None = None
    is_enabled: bool | None = None
    last_online_time: str | None = None


class SsisDb(_Model):
    """SSISDB facts read on a master (live only)."""

    master_properties: dict[str, str] = {}
    worker_agents: list[WorkerAgent] = []


class HostIdentity(_Model):
    computer_name: str
    fqdn: str | None = None
    addresses: list[str] | None = None


class NodeSnapshot(_Model):
    """Everything collected from one Windows node. ``None`` always means *unknown*."""

    name: str
    identity: HostIdentity
    collection: Collection = Collection()
    master_config: ConfigFile | None = None
    worker_config: ConfigFile | None = None
    root: CertificateStore | None = None
    my: CertificateStore | None = None
    bindings: list[SslBinding] | None = None
    services: list[Service] | None = None
    schannel: Schannel | None = None
    ssisdb: SsisDb | None = None
    sql_versions: list[str] | None = None
    diagnostics: list[Diagnostic] = []

    @property
    def is_master(self) -> bool:
        return self.master_config is not None

    @property
    def is_worker(self) -> bool:
        return self.worker_config is not None

    def roles(self) -> list[str]:
        return [r for r, present in (("master", self.is_master), ("worker", self.is_worker)) if present]

    def store(self, name: str) -> CertificateStore | None:
        return self.root if name.lower() == "root" else self.my if name.lower() == "my" else None


class ClusterSnapshot(_Model):
    """One cluster: the unit policies of scope ``cluster`` see, and the unit of an evidence folder."""

    schema_version: str = SCHEMA_VERSION
    cluster: str
    collected_at: datetime
    source: str
    mode: Literal["offline", "live"] = "offline"
    nodes: list[NodeSnapshot] = []
    certificates: dict[str, str] | None = Field(
        default=None,
        description="snapshot.json only: DER (base64) by thumbprint, once per cluster; None in memory",
    )

    @model_validator(mode="before")
    @classmethod
    def _restore_der(cls, data: Any) -> Any:
        """Put each certificate's DER back from the cluster's table (a 1.1 file) and drop the table.

        The file is hostile input: anything not shaped as expected is left as it is, for the fields'
        own validation to refuse."""
        if not isinstance(data, dict) or not data.get("certificates"):
            return data
        table = data["certificates"]
        if not isinstance(table, dict):
            return data
        for node in _items(data.get("nodes")):
            for store_name in ("root", "my"):
                store = node.get(store_name) if isinstance(node, dict) else getattr(node, store_name, None)
                certificates = store.get("certificates") if isinstance(store, dict) else getattr(
                    store, "certificates", None
                )
                for cert in _items(certificates):
                    if isinstance(cert, dict):
                        thumbprint = cert.get("thumbprint")
                        if cert.get("der_b64") is None and isinstance(thumbprint, str) and thumbprint in table:
                            cert["der_b64"] = table[thumbprint]
                    elif isinstance(cert, Certificate) and cert.der_b64 is None:
                        cert.der_b64 = table.get(cert.thumbprint)
        return {**data, "certificates": None}

    def node(self, name: str) -> NodeSnapshot | None:
        return next((n for n in self.nodes if n.name.lower() == name.lower()), None)

    @property
    def masters(self) -> list[NodeSnapshot]:
        return [n for n in self.nodes if n.is_master]

    @property
    def workers(self) -> list[NodeSnapshot]:
        return [n for n in self.nodes if n.is_worker]


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class Snapshot(_Model):
    """The whole ``snapshot.json``: one or more clusters."""

    schema_version: str = SCHEMA_VERSION
    generator: str = "scaleguard"
    clusters: list[ClusterSnapshot]

    def write(self, path: Path) -> None:
        path.write_bytes(self.to_json())

    def to_json(self) -> bytes:
        """The ``snapshot.json`` document (UTF-8): each cluster's DER once, in its ``certificates`` table."""
        first: dict[str, str] = {}  # thumbprint → the DER it is written with (the first one met)
        clusters = []
        for cluster in self.clusters:
            mine: dict[str, str] = {}
            for node in cluster.nodes:
                for store in (node.root, node.my):
                    for cert in store.certificates if store is not None else ():
                        if cert.der_b64 is not None:
                            mine[cert.thumbprint] = first.setdefault(cert.thumbprint, cert.der_b64)
            clusters.append(
                cluster.model_copy(update={"certificates": mine or None, "schema_version": SCHEMA_VERSION})
            )
        document = self.model_copy(update={"clusters": clusters, "schema_version": SCHEMA_VERSION})
        return document.__pydantic_serializer__.to_json(document, exclude_none=False, context={_DER_TABLE: first})

    @classmethod
    def read(cls, path: Path) -> Snapshot:
        snap = cls.model_validate_json(read_limited(path, 1024 * MIB, named=True))
        if snap.schema_version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"{path}: snapshot schema {snap.schema_version} is not supported")
        return snap
