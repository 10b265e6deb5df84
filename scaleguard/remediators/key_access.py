"""grant-worker-key-access: the worker service account may read its certificate's private key.

Worker step 3 (and the troubleshooting fix for "Could not create SSL/TLS secure channel"):
``winhttpcertcfg -g -c LOCAL_MACHINE\\My -s <CN> -a <account>``, then restart the worker. The account is
the one the worker service logs on as (the virtual ``NT Service\\SSISScaleOutWorker<ver>`` when the
service list was not collected). A certificate without a private key cannot be granted: manual (rotate).
"""

from __future__ import annotations

from scaleguard.findings.model import Finding, Remediation
from scaleguard.remediators.actions import GrantKeyRead
from scaleguard.remediators.base import PlanContext, Remediator, group_by_node
from scaleguard.remediators.model import StepRef
from scaleguard.remediators.steps import service_account
from scaleguard.remediators.trust import worker_cert
from scaleguard.rules.account import account_matches, worker_account_problem


class GrantWorkerKeyAccess(Remediator):
    name = Remediation.GRANT_WORKER_KEY_ACCESS
    phase = 80

    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        for cluster, worker, group in group_by_node(findings, ctx):
            if worker is None or not worker.snap.is_worker or worker.worker is None:
                ctx.manual_all(group, cluster.name, "the node is not a worker with a readable WorkerSettings.config")
                continue
            cert = worker_cert(worker)
            service = worker.service("worker")
            refusal = cert if isinstance(cert, str) else None
            if refusal is None and service is None:
                refusal = "the worker service name is unknown"
            if refusal is None and not isinstance(cert, str) and cert.has_key is False:
                refusal = "the worker certificate has no private key; rotate the worker certificate"
            if refusal is not None or isinstance(cert, str) or service is None:
                ctx.manual_all(group, cluster.name, refusal or "")
                continue
            account = service_account(service)
            if cert.readers is not None and any(account_matches(r, account) for r in cert.readers):
                note = f"the new worker certificate's key is granted to {account}" if cert.provided_by else None
                ctx.covered(group, cluster.name, cert.provided_by, note or f"{account} can already read the key")
                continue
            draft = ctx.draft(self, cluster, worker.name, f"let {account} read the worker key on {worker.name}")
            draft.depend(cert.provided_by)
            problem = worker_account_problem(account)
            if problem is not None:
                ctx.manual_all(group, cluster.name, f"the worker service account {account!r} {problem}")
                continue
            draft.step(worker, GrantKeyRead(store="My", thumbprint=cert.thumbprint, account=account))
            if not isinstance(cert.thumbprint, StepRef):
                cert.readers = [*(cert.readers or []), account]
            draft.restart(worker, "worker")
            ctx.commit(draft, group)
