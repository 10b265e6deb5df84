"""The cluster as it will be once the units planned so far have run (planning is done against this).

Remediators are planned one after another against this *intended* state, not against the snapshot, and
each updates it with what its steps change. That is what makes the plan deduplicate itself: after the
master rotation has planned "every worker pins the new certificate", the repin remediator finds nothing
left to do and reports its finding as *covered* by the rotation. Every fact remembers the unit that
provides it, so a later unit that relies on it (a repin relying on an import into Root) depends on that
unit and is skipped if it fails.

Thumbprints are upper-case 40-hex strings or :class:`StepRef` placeholders for certificates that only
exist once a step has created them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from scaleguard.remediators.actions import SERVICE_NAME
from scaleguard.remediators.model import StepRef
from scaleguard.rules.endpoint import parse_endpoint
from scaleguard.rules.thumbprint import normalize_thumbprint
from scaleguard.snapshot.model import Certificate, ClusterSnapshot, NodeSnapshot

Thumb = str | StepRef


def thumb_key(thumb: Thumb) -> str:
    return thumb if isinstance(thumb, str) else thumb.key()


@dataclass
class CertFact:
    thumbprint: Thumb
    der_b64: str | StepRef | None
    subject: str | None = None
    common_names: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    has_key: bool | None = None
    readers: list[str] | None = None
    provided_by: str | None = None

    @classmethod
    def from_snapshot(cls, cert: Certificate) -> CertFact:
        return cls(
            thumbprint=cert.thumbprint.upper(),
            der_b64=cert.der_b64,
            subject=cert.subject,
            common_names=list(cert.common_names),
            names=cert.names(),
            has_key=cert.has_private_key,
            readers=list(cert.key_readers) if cert.key_readers is not None else None,
        )


@dataclass
class SettingFact:
    value: str | StepRef | None
    provided_by: str | None = None

    def thumb(self) -> Thumb | None:
        """The thumbprint this setting names (forgiving copy-paste noise), or None."""
        if isinstance(self.value, StepRef):
            return self.value
        return normalize_thumbprint(self.value)


@dataclass
class BindingFact:
    ip_port: str
    cert_hash: Thumb | None
    app_id: str | None
    store: str | None
    kind: str = "ipport"
    provided_by: str | None = None

    @property
    def port(self) -> int | None:
        tail = self.ip_port.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else None


@dataclass
class ServiceFact:
    name: str
    state: str | None
    start_mode: str | None
    account: str | None
    provided_by: str | None = None

    @property
    def running(self) -> bool | None:
        return None if self.state is None else self.state.lower() == "running"

    @property
    def automatic(self) -> bool | None:
        return None if self.start_mode is None else self.start_mode.lower().startswith("auto")


@dataclass
class SchannelFact:
    """``HKLM\\...\\SecurityProviders\\SCHANNEL`` values; None means the value does not exist."""

    client_auth_trust_mode: int | None
    send_trusted_issuer_list: int | None
    provided_by: str | None = None

    @property
    def trusts_issued_roots(self) -> bool:
        """A documented SO-M11 mitigation is in place (a Root with CA-issued certificates then works)."""
        return self.client_auth_trust_mode == 2 or self.send_trusted_issuer_list == 0


_VERSION_IN_PATH = re.compile(r"\\(\d{3})\\DTS\\", re.IGNORECASE)


@dataclass
class NodeIntent:
    cluster: str
    snap: NodeSnapshot
    root: dict[str, CertFact] | None
    my: dict[str, CertFact] | None
    master: dict[str, SettingFact] | None
    worker: dict[str, SettingFact] | None
    bindings: list[BindingFact] | None
    services: dict[str, ServiceFact] | None
    schannel: SchannelFact | None = None
    restarts: dict[str, list[str]] = field(default_factory=dict)  # service name → units restarting it

    @classmethod
    def from_snapshot(cls, cluster: str, node: NodeSnapshot) -> NodeIntent:
        def store(certs: list[Certificate] | None) -> dict[str, CertFact] | None:
            if certs is None:
                return None
            return {c.thumbprint.upper(): CertFact.from_snapshot(c) for c in certs}

        def settings(config_settings: dict[str, str] | None) -> dict[str, SettingFact] | None:
            if config_settings is None:
                return None
            return {k: SettingFact(v) for k, v in config_settings.items()}

        return cls(
            cluster=cluster,
            snap=node,
            root=store(node.root.certificates if node.root else None),
            my=store(node.my.certificates if node.my else None),
            master=settings(
                node.master_config.settings if node.master_config and not node.master_config.parse_error else None
            ),
            worker=settings(
                node.worker_config.settings if node.worker_config and not node.worker_config.parse_error else None
            ),
            bindings=[
                BindingFact(b.ip_port, b.cert_hash.upper() if b.cert_hash else None, b.app_id, b.cert_store, b.kind)
                for b in node.bindings
            ]
            if node.bindings is not None
            else None,
            services={s.name.lower(): ServiceFact(s.name, s.state, s.start_mode, s.account) for s in node.services}
            if node.services is not None
            else None,
            schannel=SchannelFact(node.schannel.client_auth_trust_mode, node.schannel.send_trusted_issuer_list)
            if node.schannel is not None
            else None,
        )

    @property
    def name(self) -> str:
        return self.snap.name

    def store(self, name: str) -> dict[str, CertFact] | None:
        return self.root if name.lower() == "root" else self.my

    def cert(self, store: str, thumb: Thumb) -> CertFact | None:
        certs = self.store(store)
        return None if certs is None else certs.get(thumb_key(thumb))

    def setting(self, role: str, name: str) -> SettingFact | None:
        settings = self.master if role == "master" else self.worker
        if settings is None:
            return None
        return next((v for k, v in settings.items() if k.lower() == name.lower()), None)

    def set_setting(self, role: str, name: str, value: str | StepRef, unit: str) -> None:
        settings = self.master if role == "master" else self.worker
        assert settings is not None
        existing = next((k for k in settings if k.lower() == name.lower()), name)
        settings[existing] = SettingFact(value, unit)

    def config_path(self, role: str) -> str | None:
        config = self.snap.master_config if role == "master" else self.snap.worker_config
        return config.path if config else None

    def sql_version(self) -> str | None:
        for role in ("master", "worker"):
            path = self.config_path(role)
            found = _VERSION_IN_PATH.search(path or "")
            if found:
                return found.group(1)
        for version in self.snap.sql_versions or []:
            if re.fullmatch(r"\d{3}", version):
                return version
        return None

    def service(self, role: str) -> ServiceFact | None:
        """The Scale Out service of ``role`` as collected, or its documented name when not collected."""
        prefix = "ssisscaleoutmaster" if role == "master" else "ssisscaleoutworker"
        if self.services is not None:
            # a name outside the documented pattern (node data) is no Scale Out service a step may name
            found = sorted(
                (s for k, s in self.services.items() if k.startswith(prefix) and re.fullmatch(SERVICE_NAME, s.name)),
                key=lambda s: s.name,
            )
            if found:
                return found[-1]
        version = self.sql_version()
        if version is None:
            return None
        name = f"SSISScaleOut{'Master' if role == 'master' else 'Worker'}{version}"
        return ServiceFact(name, None, None, None)

    def service_name(self, role: str) -> str | None:
        """The service of ``role`` by the name the collection reported; None when only its documented
        name could be guessed (the step then takes the live node's name at apply time)."""
        service = self.service(role)
        if service is None or self.services is None or service.name.lower() not in self.services:
            return None
        return service.name

    def names(self) -> list[str]:
        """The node's own names: computer name, FQDN and addresses (what "names the node" means)."""
        identity = self.snap.identity
        return _unique([identity.computer_name, self.snap.name, identity.fqdn or "", *(identity.addresses or [])])


@dataclass
class ClusterIntent:
    name: str
    snap: ClusterSnapshot
    nodes: dict[str, NodeIntent]

    @classmethod
    def from_snapshot(cls, cluster: ClusterSnapshot) -> ClusterIntent:
        ordered = sorted(cluster.nodes, key=lambda n: n.name.lower())
        return cls(
            cluster.cluster,
            cluster,
            {n.name.lower(): NodeIntent.from_snapshot(cluster.cluster, n) for n in ordered},
        )

    def node(self, name: str) -> NodeIntent | None:
        return self.nodes.get(name.lower())

    @property
    def masters(self) -> list[NodeIntent]:
        return [n for n in self.nodes.values() if n.snap.is_master]

    @property
    def workers(self) -> list[NodeIntent]:
        return [n for n in self.nodes.values() if n.snap.is_worker]

    def master_thumb(self, master: NodeIntent) -> Thumb | None:
        setting = master.setting("master", "SSLCertThumbprint")
        return setting.thumb() if setting else None

    def master_cert(self, master: NodeIntent) -> CertFact | None:
        """The master certificate as the master holds it (Root first, as SSIS expects, then My)."""
        thumb = self.master_thumb(master)
        if thumb is None:
            return None
        return master.cert("Root", thumb) or master.cert("My", thumb)

    def masters_of(self, worker: NodeIntent) -> list[NodeIntent]:
        """The master nodes a worker talks to: the ones its endpoint names, else every master."""
        host = endpoint_host(worker)
        masters = self.masters
        if host:
            named = [m for m in masters if host.lower() in (n.lower() for n in self.master_names(m))]
            if named:
                return named
        return masters

    def master_names(self, master: NodeIntent) -> list[str]:
        """Names that identify the master: its own names plus every name its certificate carries."""
        cert = self.master_cert(master)
        return _unique([*master.names(), *(cert.names if cert else [])])


def endpoint_well_formed(value: str | None) -> bool:
    return value is not None and parse_endpoint(value).valid


def endpoint_host(worker: NodeIntent) -> str | None:
    setting = worker.setting("worker", "MasterEndpoint")
    value = setting.value if setting and isinstance(setting.value, str) else None
    return parse_endpoint(value).https_host if value is not None else None


def _unique(values: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for value in values:
        if value and value.lower() not in seen:
            seen[value.lower()] = value
    return list(seen.values())
