"""start-service: the Scale Out service starts automatically and runs (SO-M09, SO-W11).

``Set-Service -StartupType Automatic`` when it is not automatic, ``sc start`` when it is not running. A
unit that only fixes the start mode goes *first* in the plan: it is harmless, and a service left
Disabled would make every later restart in the plan fail. Starting a stopped service goes *last*, after
the configuration and trust fixes it may need in order to start at all. Restarts planned by other units
leave a stopped service stopped (an HA passive master must stay passive), so starting is only ever done
here, where a finding asked for it.
"""

from __future__ import annotations

from scaleguard.findings.model import Finding, Remediation
from scaleguard.remediators.actions import SetServiceStartMode
from scaleguard.remediators.actions import StartService as StartServiceStep
from scaleguard.remediators.base import PlanContext, Remediator, group_by_node, role_of
from scaleguard.remediators.model import StartModeWas

ROLES_BY_POLICY = {"SO-M09": ("master",), "SO-W11": ("worker",)}
MODE_ONLY_PHASE = -10


class StartService(Remediator):
    name = Remediation.START_SERVICE
    phase = 100

    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        for cluster, node, group in group_by_node(findings, ctx):
            if node is None:
                ctx.manual_all(group, cluster.name, "the node is not in the snapshot")
                continue
            roles: list[str] = []
            for finding in group:
                roles += [r for r in ROLES_BY_POLICY.get(finding.policy) or node.snap.roles() if r not in roles]
            services = [node.service(role) for role in roles]
            if not roles or any(s is None for s in services):
                ctx.manual_all(group, cluster.name, "the Scale Out service name is unknown")
                continue
            draft = ctx.draft(self, cluster, node.name, f"start the Scale Out service on {node.name}")
            starts = False
            for role_name, service in zip(roles, services, strict=True):
                assert service is not None
                role = role_of(role_name)
                name = node.service_name(role)
                if service.automatic is not True:
                    draft.step(
                        node,
                        SetServiceStartMode(role=role, name=name, mode="Automatic"),
                        expect=StartModeWas(name=service.name, mode=service.start_mode),
                    )
                    service.start_mode = "Auto"
                if service.running is not True:
                    draft.step(node, StartServiceStep(role=role, name=name))
                    service.state = "Running"
                    starts = True
            if not starts:
                draft.phase = MODE_ONLY_PHASE
            if not draft.steps:
                ctx.covered(group, cluster.name, None, "the service already runs and starts automatically")
            ctx.commit(draft, group)
