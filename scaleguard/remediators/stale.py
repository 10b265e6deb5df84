"""remove-stale-worker-certificates: old worker certificates left in LocalMachine\\My (SO-W13).

Microsoft's ``certmgr /del /c /s /r localmachine My /n <CN>`` deletes by CN, which would also delete the
worker's *current* certificate when it has the same CN (the usual case). So only certificates with the
current one's subject that nothing references (config, binding) are removed, each by thumbprint; the key
is kept and the certificate backed up on the node, so the removal can be undone. No restart is needed:
the service does not use them.
"""

from __future__ import annotations

from scaleguard.findings.model import Finding, Remediation
from scaleguard.remediators.base import PlanContext, Remediator, group_by_node
from scaleguard.remediators.model import StepRef
from scaleguard.remediators.rotate_worker import referenced
from scaleguard.remediators.steps import remove_old_cert
from scaleguard.remediators.trust import worker_cert


class RemoveStaleWorkerCertificates(Remediator):
    name = Remediation.REMOVE_STALE_WORKER_CERTIFICATES
    phase = 90

    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        for cluster, worker, group in group_by_node(findings, ctx):
            if worker is None or worker.worker is None or worker.my is None:
                ctx.manual_all(group, cluster.name, "the worker's settings or LocalMachine\\My were not collected")
                continue
            cert = worker_cert(worker)
            if isinstance(cert, str):
                ctx.manual_all(group, cluster.name, cert)
                continue
            if isinstance(cert.thumbprint, StepRef):
                note = "the worker certificate rotation removes the old certificates"
                ctx.covered(group, cluster.name, cert.provided_by, note)
                continue
            in_use = referenced(worker)
            stale = [
                c
                for key, c in sorted(worker.my.items())
                if isinstance(c.thumbprint, str) and key not in in_use and c.subject == cert.subject
            ]
            if not stale:
                ctx.covered(group, cluster.name, None, "no unreferenced certificate shares the worker's subject")
                continue
            draft = ctx.draft(self, cluster, worker.name, f"remove old worker certificates on {worker.name}")
            for old in stale:
                remove_old_cert(draft, worker, old)
            ctx.commit(draft, group)
