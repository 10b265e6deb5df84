"""The remediator for findings scaleguard will not fix by itself (see :mod:`scaleguard.remediators.manual_steps`)."""

from __future__ import annotations

from scaleguard.findings.model import Finding, Remediation
from scaleguard.remediators.base import PlanContext, Remediator


class ManualRemediator(Remediator):
    name = Remediation.MANUAL
    phase = 200

    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        for finding in findings:
            cluster = ctx.cluster_of(finding)
            remediation = finding.remediation or "manual"
            reason = (
                "the policy has no automatic remediation"
                if remediation == "manual"
                else f"scaleguard has no remediator named {remediation!r}"
            )
            ctx.manual(finding, cluster.name if cluster else finding.cluster, reason)
