"""import-root-certificate: put a certificate that is already in use into a Root store that lacks it.

Four documented gaps, told apart by the policy that found them (a user's own policy gets all that apply
to the node's roles):

- the master certificate missing from the master's own Root (SO-M02): moved over from My when it sits
  there with its key (the key association is kept), otherwise there is nothing to import and the master
  certificate must be rotated;
- the master certificate missing from a worker's Root (SO-W03, worker step 5.1);
- the worker certificate missing from the worker's own Root (SO-W07, worker step 2);
- the worker certificate missing from the Root of a master node (SO-W08, worker step 5).

Only public parts travel (DER from the snapshot); the affected service restarts afterwards.
"""

from __future__ import annotations

import base64
from dataclasses import replace

from scaleguard.findings.model import Finding, Remediation
from scaleguard.remediators.actions import CopyCertificate, ca_reason
from scaleguard.remediators.base import PlanContext, Remediator, UnitDraft, group_by_node
from scaleguard.remediators.describe import show
from scaleguard.remediators.intent import CertFact, ClusterIntent, NodeIntent
from scaleguard.remediators.rotate_master import master_thumbs
from scaleguard.remediators.steps import add_cert, import_cert

ASPECTS_BY_POLICY = {
    "SO-M02": ("master-own",),
    "SO-W03": ("worker-trusts-master",),
    "SO-W07": ("worker-own-root",),
    "SO-W08": ("worker-in-masters",),
}


class ImportRootCertificate(Remediator):
    name = Remediation.IMPORT_ROOT_CERTIFICATE
    phase = 30

    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        for cluster, node, group in group_by_node(findings, ctx):
            if node is None:
                ctx.manual_all(group, cluster.name, "the node is not in the snapshot")
                continue
            draft = ctx.draft(self, cluster, node.name, f"import missing Root certificates on/for {node.name}")
            restart_roles: list[tuple[NodeIntent, str]] = []
            answered: list[Finding] = []
            for finding in group:
                problems, providers, restarts = self._finding(finding, cluster, node, draft)
                if problems:
                    ctx.manual(finding, cluster.name, "; ".join(problems))
                elif restarts:
                    answered.append(finding)
                    restart_roles += [r for r in restarts if r not in restart_roles]
                else:
                    note = "the certificate is (or will be) in that Root store already"
                    ctx.covered([finding], cluster.name, next(iter(providers), None), note)
            for target, role in restart_roles:
                draft.restart(target, role)
            ctx.commit(draft, answered)

    def _finding(
        self, finding: Finding, cluster: ClusterIntent, node: NodeIntent, draft: UnitDraft
    ) -> tuple[list[str], list[str], list[tuple[NodeIntent, str]]]:
        aspects = ASPECTS_BY_POLICY.get(finding.policy) or _all_aspects(node)
        problems: list[str] = []
        providers: list[str] = []
        restarts: list[tuple[NodeIntent, str]] = []
        for aspect in aspects:
            handler = {
                "master-own": _master_own,
                "worker-trusts-master": _worker_trusts_master,
                "worker-own-root": _worker_own_root,
                "worker-in-masters": _worker_in_masters,
            }[aspect]
            result = handler(cluster, node, draft)
            if isinstance(result, str):
                problems.append(result)
            else:
                changed, provider = result
                if provider:
                    providers.append(provider)
                restarts += [r for r in changed if r not in restarts]
        return problems, providers, restarts


_Result = str | tuple[list[tuple[NodeIntent, str]], str | None]


def _all_aspects(node: NodeIntent) -> tuple[str, ...]:
    aspects: tuple[str, ...] = ()
    if node.snap.is_master:
        aspects += ("master-own",)
    if node.snap.is_worker:
        aspects += ("worker-trusts-master", "worker-own-root", "worker-in-masters")
    return aspects


def _master_own(cluster: ClusterIntent, master: NodeIntent, draft: UnitDraft) -> _Result:
    if not master.snap.is_master:
        return "the node is not a master"
    thumb = cluster.master_thumb(master)
    if thumb is None:
        return "SSLCertThumbprint does not name a certificate (normalize or rotate the master certificate)"
    in_root = master.cert("Root", thumb)
    if in_root is not None:
        return [], in_root.provided_by
    in_my = master.cert("My", thumb)
    if in_my is None or in_my.has_key is not True or not isinstance(thumb, str):
        return "the master certificate is not on the master with its private key; rotate the master certificate instead"
    if not isinstance(in_my.der_b64, str):
        return "the master certificate's content was not collected; import it into Root by hand"
    refusal = ca_refusal(in_my.der_b64, thumb, "the master's LocalMachine\\Root")
    if refusal is not None:
        return refusal
    draft.step(master, CopyCertificate(from_store="My", to_store="Root", thumbprint=thumb, der_b64=in_my.der_b64))
    add_cert(master, "Root", replace(in_my, thumbprint=thumb, provided_by=draft.id))
    draft.depend(in_my.provided_by)
    return [(master, "master")], None


def master_cert_for(cluster: ClusterIntent, worker: NodeIntent) -> CertFact | str:
    """The certificate the worker's masters serve, or why it cannot be told."""
    thumbs = master_thumbs(cluster, worker)
    if not thumbs:
        return "the master's SSLCertThumbprint does not name a certificate"
    if len(thumbs) > 1:
        return "the master nodes are configured with different certificates: " + ", ".join(show(t) for t in thumbs)
    for master in cluster.masters_of(worker):
        cert = cluster.master_cert(master)
        if cert is not None and cert.der_b64 is not None:
            return cert
    return f"the master certificate {show(thumbs[0])} is not in the master's stores: nothing to import"


def _worker_trusts_master(cluster: ClusterIntent, worker: NodeIntent, draft: UnitDraft) -> _Result:
    if not worker.snap.is_worker:
        return "the node is not a worker"
    return _into_worker_root(draft, worker, master_cert_for(cluster, worker))


def worker_cert(worker: NodeIntent) -> CertFact | str:
    setting = worker.setting("worker", "WorkerHttpsCertThumbprint")
    thumb = setting.thumb() if setting else None
    if thumb is None:
        return "WorkerHttpsCertThumbprint does not name a certificate"
    cert = worker.cert("My", thumb)
    if cert is None or cert.der_b64 is None:
        return f"the worker certificate {show(thumb)} is not in the worker's LocalMachine\\My"
    return cert


def _worker_own_root(cluster: ClusterIntent, worker: NodeIntent, draft: UnitDraft) -> _Result:
    return _into_worker_root(draft, worker, worker_cert(worker))


def _into_worker_root(draft: UnitDraft, worker: NodeIntent, cert: CertFact | str) -> _Result:
    """``cert`` into the worker's Root unless it is there already (then: who put it there, if this plan);
    a text is why there is no certificate to import."""
    if isinstance(cert, str):
        return cert
    present = worker.cert("Root", cert.thumbprint)
    if present is not None:
        return [], present.provided_by
    refusal = ca_refusal(cert.der_b64, cert.thumbprint, f"{worker.name}'s LocalMachine\\Root")
    if refusal is not None:
        return refusal
    draft.depend(cert.provided_by)
    import_cert(draft, worker, "Root", cert)
    return [(worker, "worker")], None


def ca_refusal(der_b64: object, thumb: object, where: str) -> str | None:
    """Why ``der_b64`` must not go into ``where`` (it is a CA), or None; a created certificate is never one."""
    if not isinstance(der_b64, str) or not isinstance(thumb, str):
        return None
    try:
        reason = ca_reason(base64.b64decode(der_b64))
    except ValueError:
        return f"the certificate {thumb} as collected does not parse; check it and import it by hand"
    if reason is None:
        return None
    return (
        f"the certificate {thumb} is a CA ({reason}); scaleguard never puts a CA into {where} — "
        "issue the node an end-entity certificate (rotate it), or import this one by hand if it is meant to be trusted"
    )


def _worker_in_masters(cluster: ClusterIntent, worker: NodeIntent, draft: UnitDraft) -> _Result:
    cert = worker_cert(worker)
    if isinstance(cert, str):
        return cert
    if not cluster.masters:
        return "the cluster has no master node in the snapshot"
    changed = False
    provider = None
    for master in cluster.masters:
        present = master.cert("Root", cert.thumbprint)
        if present is not None:
            provider = provider or present.provided_by
            continue
        refusal = ca_refusal(cert.der_b64, cert.thumbprint, f"{master.name}'s LocalMachine\\Root")
        if refusal is not None:
            return refusal
        draft.depend(cert.provided_by)
        import_cert(draft, master, "Root", cert)
        changed = True
    return ([(worker, "worker")] if changed else []), provider
