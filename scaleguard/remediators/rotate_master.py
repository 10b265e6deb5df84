"""rotate-master-certificate: a new master certificate, introduced so no node ever trusts nothing.

Microsoft's order (master steps 1-5) is followed, with trust moved first: the certificate is created on
the master itself (its key never leaves the node), every worker trusts it, only then does HTTP.sys serve
it (same AppId, ``certstorename=Root``), the master config names it and the master restarts, and only
after that is each worker re-pinned and restarted. Until the binding switches, workers still reach the
old certificate they pin; from then on the new one is already trusted.

The certificate carries every name workers use to reach the master (each endpoint host that identifies
it), the master's computer name, FQDN and addresses, and every name the old certificate carried (HA DNS
names, aliases), as CNs (MakeCert's ``CN=a;CN=b``) and SANs. An HA/FCI pair shares one certificate, which
would mean exporting a key from one node to the other: that is only done with an enterprise PFX
(``--master-pfx``), otherwise the finding is manual.
"""

from __future__ import annotations

from dataclasses import replace

from scaleguard.findings.model import Finding, Remediation
from scaleguard.remediators.actions import FileRef, ImportPfx
from scaleguard.remediators.base import PlanContext, Remediator, UnitDraft
from scaleguard.remediators.intent import (
    BindingFact,
    CertFact,
    ClusterIntent,
    NodeIntent,
    Thumb,
    endpoint_host,
)
from scaleguard.remediators.model import StepRef
from scaleguard.remediators.steps import (
    ALWAYS_KEY_READERS,
    add_cert,
    create_certificate,
    import_cert,
    port_of,
    rebind,
    write_setting,
)
from scaleguard.rules.host import valid_host


class RotateMasterCertificate(Remediator):
    name = Remediation.ROTATE_MASTER_CERTIFICATE
    phase = 10

    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        by_cluster: dict[str, tuple[ClusterIntent, list[Finding]]] = {}
        for finding in sorted(findings, key=lambda f: (f.node.lower(), f.policy)):
            cluster = ctx.cluster_of(finding)
            if cluster is None:
                ctx.manual(finding, finding.cluster, "the finding's node is not in the snapshot")
                continue
            by_cluster.setdefault(cluster.name, (cluster, []))[1].append(finding)
        for cluster, group in by_cluster.values():
            self._plan_cluster(cluster, group, ctx)

    def _plan_cluster(self, cluster: ClusterIntent, findings: list[Finding], ctx: PlanContext) -> None:
        masters = cluster.masters
        refusal = self._refusal(cluster, masters, ctx)
        if refusal is not None:
            ctx.manual_all(findings, cluster.name, refusal)
            return
        names = master_cert_names(cluster, ctx)
        pfx = ctx.options.master_pfx
        if pfx is not None:
            missing = [n for n in endpoint_hosts(cluster) if n.lower() not in (x.lower() for x in pfx.names)]
            if missing:
                ctx.manual_all(
                    findings,
                    cluster.name,
                    f"the certificate in {pfx.path} does not carry {', '.join(missing)}, "
                    "which workers use to reach the master",
                )
                return
            if not pfx.self_signed:
                ctx.warnings.append(
                    f"{cluster.name}: the master certificate from {pfx.path} is not self-signed; a "
                    "non-self-signed certificate in the master's Root makes worker authentication fail "
                    "unless SCHANNEL "
                    "ClientAuthTrustMode=2 or SendTrustedIssuerList=0 is set (SO-M11)"
                )
        summary = f"rotate the master certificate of {cluster.name} ({', '.join(m.name for m in masters)})"
        draft = ctx.draft(self, cluster, masters[0].name, summary)
        new_cert, create_steps = self._create(draft, masters, names, ctx)
        trust_steps = self._trust_on_workers(draft, cluster, masters, new_cert, create_steps)
        restart_steps = []
        for master in masters:
            self._switch_master(draft, master, new_cert, trust_steps, ctx)
            step = draft.restart(master, "master")
            if step:
                restart_steps.append(step)
        for worker in cluster.workers:
            if worker.worker is None or worker.setting("worker", "MasterHttpsCertThumbprint") is None:
                ctx.warnings.append(
                    f"{cluster.name}/{worker.name}: WorkerSettings.config has no usable "
                    "MasterHttpsCertThumbprint; re-pin it by hand after the rotation"
                )
                continue
            write_setting(
                draft,
                worker,
                "worker",
                "MasterHttpsCertThumbprint",
                new_cert.thumbprint,
                depends_on=tuple(restart_steps),
            )
            draft.restart(worker, "worker")
        ctx.commit(draft, findings)

    def _refusal(self, cluster: ClusterIntent, masters: list[NodeIntent], ctx: PlanContext) -> str | None:
        if not masters:
            return "the cluster has no master node in the snapshot"
        if len(masters) > 1 and ctx.options.master_pfx is None:
            return (
                "an HA/FCI pair shares one master certificate, so its key would have to leave the node it "
                "was created on; give the certificate with --master-pfx instead"
            )
        for master in masters:
            if master.master is None:
                return f"{master.name}: MasterSettings.config could not be parsed"
            if master.setting("master", "SSLCertThumbprint") is None:
                return f"{master.name}: MasterSettings.config has no SSLCertThumbprint setting to update"
            if port_of(master) is None:
                return f"{master.name}: PortNumber is not a usable port, so the binding to rebind is unknown"
            if master.service("master") is None:
                return f"{master.name}: the master service name is unknown"
        if not master_cert_names(cluster, ctx):
            return "no valid host name for the new certificate"
        return None

    def _create(
        self, draft: UnitDraft, masters: list[NodeIntent], names: list[str], ctx: PlanContext
    ) -> tuple[CertFact, list[str]]:
        options = ctx.options
        pfx = options.master_pfx
        if pfx is not None:
            cert = CertFact(pfx.thumbprint, pfx.der_b64, pfx.subject, list(pfx.common_names), list(pfx.names))
            cert.has_key, cert.provided_by = True, draft.id
            steps = []
            for master in masters:
                params = ImportPfx(
                    store="Root", thumbprint=pfx.thumbprint, pfx=FileRef(local_file=pfx.path), password=pfx.password
                )
                steps.append(draft.step(master, params))
                add_cert(master, "Root", replace(cert, readers=list(ALWAYS_KEY_READERS)))
            return cert, steps
        cert, step = create_certificate(
            draft,
            masters[0],
            "Root",
            names,
            hash_name=options.master_hash,
            key_bits=options.key_bits,
            valid_days=options.valid_days,
            friendly_name="SSIS Scale Out Master",
        )
        return cert, [step]

    def _trust_on_workers(
        self,
        draft: UnitDraft,
        cluster: ClusterIntent,
        masters: list[NodeIntent],
        cert: CertFact,
        create_steps: list[str],
    ) -> list[str]:
        steps = []
        master_names = {m.name.lower() for m in masters}
        for worker in cluster.workers:
            if worker.name.lower() in master_names:
                continue  # the certificate was created (or imported) in this node's Root already
            steps.append(import_cert(draft, worker, "Root", cert, depends_on=tuple(create_steps)))
        return steps

    def _switch_master(
        self, draft: UnitDraft, master: NodeIntent, cert: CertFact, trust_steps: list[str], ctx: PlanContext
    ) -> None:
        port = port_of(master)
        assert port is not None
        on_port = [b for b in master.bindings or [] if b.kind == "ipport" and b.port == port]
        targets = on_port or [BindingFact(f"0.0.0.0:{port}", None, None, None)]
        for binding in targets:
            app_id = binding.app_id or ctx.options.new_guid()
            rebind(draft, master, binding, cert.thumbprint, app_id, depends_on=tuple(trust_steps))
        write_setting(draft, master, "master", "SSLCertThumbprint", cert.thumbprint)


def endpoint_hosts(cluster: ClusterIntent) -> list[str]:
    """Endpoint hosts (most used first) that identify a master: these must be in the new certificate."""
    counts: dict[str, tuple[int, str]] = {}
    identifying = {n.lower() for m in cluster.masters for n in cluster.master_names(m)}
    for worker in cluster.workers:
        host = endpoint_host(worker)
        if host and host.lower() in identifying:
            count, _ = counts.get(host.lower(), (0, host))
            counts[host.lower()] = (count + 1, host)
    return [host for _, host in sorted(counts.values(), key=lambda c: (-c[0], c[1].lower()))]


def master_cert_names(cluster: ClusterIntent, ctx: PlanContext) -> list[str]:
    """Every name the new certificate must carry, valid host names only (others are reported)."""
    candidates = list(endpoint_hosts(cluster))
    for master in cluster.masters:
        candidates += master.names()
        cert = cluster.master_cert(master)
        if cert is not None and not isinstance(cert.thumbprint, StepRef):
            candidates += cert.names
    names: dict[str, str] = {}
    for name in candidates:
        if not valid_host(name):
            warning = f"{cluster.name}: {name!r} is not a valid host name and is left out of the new certificate"
            if warning not in ctx.warnings:
                ctx.warnings.append(warning)
            continue
        names.setdefault(name.lower(), name)
    return list(names.values())


def master_thumbs(cluster: ClusterIntent, worker: NodeIntent) -> list[Thumb]:
    """The distinct certificates the masters of ``worker`` are configured with (one when consistent)."""
    thumbs: list[Thumb] = []
    for master in cluster.masters_of(worker):
        thumb = cluster.master_thumb(master)
        if thumb is not None and thumb not in thumbs:
            thumbs.append(thumb)
    return thumbs
