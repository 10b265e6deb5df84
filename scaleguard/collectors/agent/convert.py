"""Agent document → :class:`NodeSnapshot`, through the very parsers the evidence reader uses.

Live and offline audits of the same state must produce the same findings, so nothing here interprets
raw material on its own: config bytes go through ``parse_config_with_notes``, certificate DER through
``load_certificates_with_notes``, a netsh fallback through ``parse_sslcert_with_notes``, service rows
through ``services_from_json``, identity and SCHANNEL through the ``host`` parsers. The diagnostics keep
the evidence reader's levels for the same situations. Only registry bindings have no offline twin; they
are normalised exactly as the netsh parser normalises its output (upper-case hash, ``None`` store for an
absent value).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from scaleguard.collectors.agent.schema import AgentBinding, AgentBindings, AgentCert, AgentConfig, AgentDocument
from scaleguard.collectors.parsers.certs import CertificateParseError, load_certificates_with_notes
from scaleguard.collectors.parsers.config import ConfigKind, parse_config_with_notes
from scaleguard.collectors.parsers.host import host_from_json, schannel_from_json
from scaleguard.collectors.parsers.netsh import MAX_BINDINGS, NetshParseError, parse_sslcert_with_notes
from scaleguard.collectors.parsers.services import services_from_json
from scaleguard.rules.thumbprint import normalize_thumbprint
from scaleguard.snapshot.model import (
    Certificate,
    CertificateStore,
    Collection,
    CollectionState,
    ConfigFile,
    Diagnostic,
    DiagnosticLevel,
    HostIdentity,
    NodeSnapshot,
    Schannel,
    Service,
    SsisDb,
    SslBinding,
    WorkerAgent,
)

UNREACHABLE_SSISDB_SOURCE = "ssisdb"


def node_from_agent(
    name: str, document: AgentDocument, *, insecure: bool, duration_ms: float
) -> NodeSnapshot:
    return _Builder(name).build(document, insecure=insecure, duration_ms=duration_ms)


class _Builder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.diagnostics: list[Diagnostic] = []

    def note(self, level: DiagnosticLevel, source: str, *messages: str) -> None:
        self.diagnostics.extend(Diagnostic(level=level, source=source, message=m) for m in messages)

    def build(self, doc: AgentDocument, *, insecure: bool, duration_ms: float) -> NodeSnapshot:
        for error in doc.errors:
            level = (
                DiagnosticLevel.INFO if error.source == UNREACHABLE_SSISDB_SOURCE else DiagnosticLevel.WARNING
            )
            self.note(level, error.source, error.message)
        installed = [s.version for s in doc.sql] if doc.sql is not None else None
        services = self.services(doc)
        master = self.config(doc.configs, "master", services)
        worker = self.config(doc.configs, "worker", services)
        root = self.store(doc, "Root")
        my = self.store(doc, "My")
        collection = Collection(
            state=CollectionState.OK, transport="winrm", insecure=insecure, duration_ms=round(duration_ms, 3)
        )
        if doc.configs is None:
            collection.state = CollectionState.FAILED
            why = "; ".join(e.message for e in doc.errors if e.source == "configs") or "no reason given"
            collection.reason = f"the agent could not look for the settings files ({why})"
        elif master is None and worker is None:
            collection.state = CollectionState.NO_CONFIG
            searched = (
                ", ".join(f"{s.binn}" for s in doc.sql or []) or "no SQL Server DTS\\Binn folder exists"
            )
            collection.reason = (
                f"neither MasterSettings.config nor WorkerSettings.config was found ({searched})"
            )
        return NodeSnapshot(
            name=self.name,
            identity=self.identity(doc),
            collection=collection,
            master_config=master,
            worker_config=worker,
            root=root,
            my=my,
            bindings=self.bindings(doc.bindings),
            services=services,
            schannel=self.schannel(doc),
            ssisdb=self.ssisdb(doc),
            sql_versions=installed,
            diagnostics=self.diagnostics,
        )

    # -- artefacts -------------------------------------------------------------------------------------

    def identity(self, doc: AgentDocument) -> HostIdentity:
        reported = doc.identity.computer_name.strip() or self.name
        raw = {"fqdn": doc.identity.fqdn, "addresses": doc.identity.addresses}
        identity, notes = host_from_json(raw, reported)
        self.note(DiagnosticLevel.LOW, "identity", *notes)
        if reported.lower() != self.name.lower():
            self.note(
                DiagnosticLevel.INFO,
                "identity",
                f"the host calls itself {reported!r}; the inventory names it {self.name!r}",
            )
        return identity

    def config(
        self, configs: list[AgentConfig] | None, role: ConfigKind, services: list[Service] | None
    ) -> ConfigFile | None:
        candidates = [c for c in configs or [] if c.role == role]
        if not candidates:
            return None
        chosen = self.pick_version(candidates, role, services)
        if chosen.content_b64 is None:
            reason = f"the file cannot be read ({chosen.read_error or 'no reason given'})"
            self.note(DiagnosticLevel.WARNING, chosen.path, reason)
            return ConfigFile(path=chosen.path, parse_error=reason)
        try:
            data = base64.b64decode(chosen.content_b64, validate=True)
        except (binascii.Error, ValueError):
            reason = "the agent sent content that is not base64"
            self.note(DiagnosticLevel.ERROR, chosen.path, reason)
            return ConfigFile(path=chosen.path, parse_error=reason)
        config, notes = parse_config_with_notes(data, chosen.path, kind=role)
        if config.parse_error:
            self.note(DiagnosticLevel.WARNING, chosen.path, config.parse_error)
        self.note(DiagnosticLevel.INFO, chosen.path, *notes)
        return config

    def pick_version(
        self, candidates: list[AgentConfig], role: ConfigKind, services: list[Service] | None
    ) -> AgentConfig:
        """Several SQL versions can leave a settings file behind; the one whose service exists is live."""
        if len(candidates) == 1:
            return candidates[0]
        prefix = f"ssisscaleout{role}"
        running = {s.name.lower() for s in services or []}
        chosen = next(
            (c for c in candidates if f"{prefix}{c.version}" in running),
            max(candidates, key=lambda c: c.version),
        )
        others = ", ".join(c.path for c in candidates if c is not chosen)
        self.note(DiagnosticLevel.INFO, chosen.path, f"used; also found (not used): {others}")
        return chosen

    def store(self, doc: AgentDocument, name: str) -> CertificateStore | None:
        rows = getattr(doc.stores, name) if doc.stores is not None else None
        if rows is None:
            self.note(
                DiagnosticLevel.WARNING, f"stores/{name}", f"LocalMachine\\{name} could not be read; unknown"
            )
            return None
        certificates: list[Certificate] = []
        seen: set[str] = set()
        for row in rows:
            for certificate in self.certificate(row, name):
                if certificate.thumbprint in seen:
                    continue
                seen.add(certificate.thumbprint)
                certificates.append(certificate)
        return CertificateStore(name="Root" if name == "Root" else "My", certificates=certificates)

    def certificate(self, row: AgentCert, store: str) -> Iterable[Certificate]:
        source = f"LocalMachine\\{store}\\{row.thumbprint}"
        try:
            der = base64.b64decode(row.der_b64, validate=True)
            certificates, notes = load_certificates_with_notes(der, source=source)
        except (binascii.Error, ValueError, CertificateParseError) as exc:
            self.note(DiagnosticLevel.LOW, source, f"ignored: {exc}")
            return []
        self.note(DiagnosticLevel.INFO, source, *notes)
        for certificate in certificates:
            certificate.has_private_key = row.has_private_key
            readers = row.key_readers if row.has_private_key else None
            certificate.key_readers = list(readers) if readers is not None else None
        return certificates

    def bindings(self, section: AgentBindings | None) -> list[SslBinding] | None:
        if section is None:
            self.note(DiagnosticLevel.WARNING, "bindings", "HTTP.sys bindings could not be read; unknown")
            return None
        if section.source == "registry" and section.entries is not None:
            if len(section.entries) > MAX_BINDINGS:
                self.note(DiagnosticLevel.WARNING, "bindings",
                          f"SslBindingInfo lists {len(section.entries)} bindings, more than {MAX_BINDINGS}: "
                          "too many to be a Scale Out node's; unknown")
                return None
            return [self.registry_binding(entry) for entry in section.entries]
        if section.netsh_b64 is None:
            self.note(DiagnosticLevel.WARNING, "bindings", "neither SslBindingInfo nor netsh output; unknown")
            return None
        source = "netsh http show sslcert"
        try:
            bindings, notes = parse_sslcert_with_notes(base64.b64decode(section.netsh_b64, validate=True))
        except (binascii.Error, NetshParseError, ValueError) as exc:
            self.note(DiagnosticLevel.WARNING, source, f"{exc}; HTTP.sys bindings unknown")
            return None
        self.note(DiagnosticLevel.INFO, source, *notes)
        return bindings

    def registry_binding(self, entry: AgentBinding) -> SslBinding:
        thumbprint = normalize_thumbprint(entry.cert_hash)
        if entry.cert_hash and thumbprint is None:
            self.note(
                DiagnosticLevel.INFO,
                f"SslBindingInfo\\{entry.ip_port}",
                f"SslCertHash {entry.cert_hash!r} is not 20 bytes",
            )
        stored = entry.store.strip() if entry.store and entry.store.strip() else None
        return SslBinding(
            ip_port=entry.ip_port, kind=entry.kind, cert_hash=thumbprint, app_id=entry.app_id, cert_store=stored
        )

    def services(self, doc: AgentDocument) -> list[Service] | None:
        if doc.services is None:
            return None
        services, notes = services_from_json([s.model_dump() for s in doc.services])
        self.note(DiagnosticLevel.LOW, "services", *notes)
        return services

    def schannel(self, doc: AgentDocument) -> Schannel | None:
        if doc.schannel is None:
            return None
        schannel, notes = schannel_from_json(doc.schannel.model_dump())
        self.note(DiagnosticLevel.LOW, "schannel", *notes)
        return schannel

    def ssisdb(self, doc: AgentDocument) -> SsisDb | None:
        if doc.ssisdb is None:
            return None
        return SsisDb(
            master_properties=dict(doc.ssisdb.master_properties),
            worker_agents=[
                WorkerAgent(
                    worker_agent_id=a.WorkerAgentId,
                    machine_name=a.MachineName,
                    display_name=a.DisplayName,
                    is_enabled=a.IsEnabled,
                    last_online_time=a.LastOnlineTime,
                )
                for a in doc.ssisdb.worker_agents
            ],
        )
