"""set-schannel-trust-mode: a master whose Root holds CA-issued certificates still accepts its workers (SO-M11).

Troubleshoot Scale Out, HTTP 403 ("forbidden with client authentication scheme 'Anonymous'"): when the
master's LocalMachine\\Root holds certificates that are not self-signed and they cannot all be removed, set
``HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL`` ``ClientAuthTrustMode`` (REG_DWORD)
to 2. Of the documented fixes it is the one that keeps the Root store as it is: CA certificates in Root are
usually there on purpose, and removing them is a decision for a human, so scaleguard never does that.

The agent reports the value it replaced, or that there was none, so rollback and ``--undo`` put back
exactly that (deleting the value when it was absent). The master restarts to pick the change up. When a
unit planned earlier already restarts this master's service and touches nothing but this master (a
binding repair, say), this unit runs just before it and rides on that restart rather than restarting the
master twice: both live on one node, so a failure in either rolls both back. Otherwise it restarts the
master itself.
"""

from __future__ import annotations

from typing import Final

from scaleguard.findings.model import Finding, Remediation
from scaleguard.remediators.actions import SetSchannelValue
from scaleguard.remediators.base import PlanContext, Remediator, UnitDraft, group_by_node
from scaleguard.remediators.intent import NodeIntent, SchannelFact
from scaleguard.remediators.model import SchannelWas

VALUE_NAME: Final = "ClientAuthTrustMode"
EXCLUSIVE_CA_TRUST: Final = 2


def _shown(value: int | None) -> str:
    return "(absent)" if value is None else str(value)


class SetSchannelTrustMode(Remediator):
    name = Remediation.SET_SCHANNEL_TRUST_MODE
    # planned after every remediator that may restart a master, so their restarts are known here
    phase = 55

    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        for cluster, master, group in group_by_node(findings, ctx):
            refusal = None
            if master is None or not master.snap.is_master:
                refusal = "the node is not a master with a readable MasterSettings.config"
            elif master.schannel is None:
                refusal = "the master's SCHANNEL registry values were not collected"
            if refusal is not None or master is None or master.schannel is None:
                ctx.manual_all(group, cluster.name, refusal or "")
                continue
            current = master.schannel
            if current.trusts_issued_roots:
                ctx.covered(
                    group,
                    cluster.name,
                    current.provided_by,
                    f"SCHANNEL on {master.name} already has ClientAuthTrustMode "
                    f"{_shown(current.client_auth_trust_mode)}, SendTrustedIssuerList "
                    f"{_shown(current.send_trusted_issuer_list)}",
                )
                continue
            summary = f"set SCHANNEL {VALUE_NAME}={EXCLUSIVE_CA_TRUST} on {master.name}"
            draft = ctx.draft(self, cluster, master.name, summary)
            draft.step(
                master,
                SetSchannelValue(name=VALUE_NAME, value=EXCLUSIVE_CA_TRUST),
                expect=SchannelWas(name=VALUE_NAME, value=current.client_auth_trust_mode),
            )
            master.schannel = SchannelFact(EXCLUSIVE_CA_TRUST, current.send_trusted_issuer_list, draft.id)
            self._restart(draft, master, ctx)
            ctx.commit(draft, group)

    @staticmethod
    def _restart(draft: UnitDraft, master: NodeIntent, ctx: PlanContext) -> None:
        service = master.service("master")
        if service is None:
            ctx.warnings.append(
                f"{draft.cluster}/{master.name}: the master service name is unknown; restart the Scale Out "
                f"Master service by hand after {VALUE_NAME} is set"
            )
            return
        shared = shared_restart(ctx, master, service.name)
        if shared is None:
            draft.restart(master, "master")
            return
        draft.phase = next(phase for phase, d in ctx.units if d is shared) - 1
        shared.depend(draft.id)


def shared_restart(ctx: PlanContext, node: NodeIntent, service: str) -> UnitDraft | None:
    """The first unit (in execution order) that restarts ``service`` and touches no node but ``node``."""
    restarting = set(node.restarts.get(service, []))
    candidates = [
        (phase, index, draft)
        for index, (phase, draft) in enumerate(ctx.units)
        if draft.id in restarting and all(s.node.lower() == node.name.lower() for s in draft.steps)
    ]
    return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None
