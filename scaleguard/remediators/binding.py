"""repair-master-binding: HTTP.sys serves the configured master certificate from Root.

Master step 2 (and the troubleshooting page's HTTP.SYS fix): every SSL binding on the master's
``PortNumber`` is replaced by one with ``certhash=<SSLCertThumbprint> certstorename=Root``, keeping its
AppId (Microsoft: ``appid={original appid}``); a new AppId is made only when there is no binding at all.
The certificate must be in the master's Root with its key first — if it is not (and no earlier unit puts
it there), rebinding would break the master, so the finding becomes manual.
"""

from __future__ import annotations

from scaleguard.findings.model import Finding, Remediation
from scaleguard.remediators.base import PlanContext, Remediator, group_by_node
from scaleguard.remediators.describe import show
from scaleguard.remediators.intent import BindingFact
from scaleguard.remediators.steps import port_of, rebind


class RepairMasterBinding(Remediator):
    name = Remediation.REPAIR_MASTER_BINDING
    phase = 50

    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        for cluster, master, group in group_by_node(findings, ctx):
            if master is None or not master.snap.is_master or master.master is None:
                ctx.manual_all(group, cluster.name, "the node is not a master with a readable MasterSettings.config")
                continue
            thumb = cluster.master_thumb(master)
            port = port_of(master)
            refusal = None
            if thumb is None:
                refusal = "SSLCertThumbprint does not name a certificate"
            elif port is None:
                refusal = "PortNumber is not a usable port"
            elif master.bindings is None:
                refusal = "the master's SSL bindings were not collected"
            cert = master.cert("Root", thumb) if thumb is not None else None
            if refusal is None and (cert is None or cert.has_key is False):
                refusal = (
                    f"the configured certificate {show(thumb)} is not in the master's LocalMachine\\Root "
                    "with its key; import or rotate the master certificate first"
                )
            if refusal is not None:
                ctx.manual_all(group, cluster.name, refusal)
                continue
            assert thumb is not None and port is not None and master.bindings is not None and cert is not None
            on_port = [b for b in master.bindings if b.kind == "ipport" and b.port == port]
            wrong = [b for b in on_port if b.cert_hash != thumb or (b.store or "").lower() != "root"]
            if on_port and not wrong:
                provider = next((b.provided_by for b in on_port if b.provided_by), None)
                ctx.covered(group, cluster.name, provider, f"the binding on port {port} already serves {show(thumb)}")
                continue
            summary = f"bind {show(thumb)} from Root on port {port} of {master.name}"
            draft = ctx.draft(self, cluster, master.name, summary)
            draft.depend(cert.provided_by)
            setting = master.setting("master", "SSLCertThumbprint")
            draft.depend(setting.provided_by if setting else None)
            targets = wrong or [BindingFact(f"0.0.0.0:{port}", None, None, None)]
            for binding in targets:
                rebind(draft, master, binding, thumb, binding.app_id or ctx.options.new_guid())
            draft.restart(master, "master")
            ctx.commit(draft, group)
