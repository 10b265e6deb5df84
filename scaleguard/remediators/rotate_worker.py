"""rotate-worker-certificate: a new worker certificate, trusted everywhere before the worker uses it.

Microsoft's worker steps 1-6, reordered so nothing is ever untrusted: the certificate is created in the
worker's LocalMachine\\My (``CN=<computer name>;CN=<address>`` like MakeCert, plus SANs; its key stays on
the worker), put in the worker's own Root, put in the Root of **every** master node, its key is opened to
the worker service account, and only then does WorkerSettings.config switch to it and the worker
restart. The old certificate (and any other with the same subject that nothing references) is removed
last, once the service no longer holds it — by thumbprint, never by CN: the documented
``certmgr /del /n <CN>`` would also delete the new certificate, which usually has the same CN.
"""

from __future__ import annotations

from scaleguard.findings.model import Finding, Remediation
from scaleguard.remediators.actions import GrantKeyRead
from scaleguard.remediators.base import PlanContext, Remediator, group_by_node
from scaleguard.remediators.intent import CertFact, ClusterIntent, NodeIntent, Thumb, thumb_key
from scaleguard.remediators.steps import (
    ALWAYS_KEY_READERS,
    create_certificate,
    import_cert,
    remove_old_cert,
    service_account,
    write_setting,
)
from scaleguard.rules.account import worker_account_problem
from scaleguard.rules.host import valid_host


class RotateWorkerCertificate(Remediator):
    name = Remediation.ROTATE_WORKER_CERTIFICATE
    phase = 20

    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        for cluster, worker, group in group_by_node(findings, ctx):
            refusal = self._refusal(cluster, worker)
            if refusal is not None or worker is None:
                ctx.manual_all(group, cluster.name, refusal or "the node is not in the snapshot")
            else:
                self._plan_worker(cluster, worker, group, ctx)

    @staticmethod
    def _refusal(cluster: ClusterIntent, worker: NodeIntent | None) -> str | None:
        if worker is None or not worker.snap.is_worker:
            return "the node is not a worker in the snapshot"
        if worker.worker is None:
            return "WorkerSettings.config could not be parsed"
        if worker.setting("worker", "WorkerHttpsCertThumbprint") is None:
            return "WorkerSettings.config has no WorkerHttpsCertThumbprint setting to update"
        location = worker.setting("worker", "StoreLocation")
        store = worker.setting("worker", "StoreName")
        if location and isinstance(location.value, str) and location.value.strip().lower() not in ("", "localmachine"):
            return f"the worker certificate lives in {location.value!r}, not LocalMachine; rotate it by hand"
        if store and isinstance(store.value, str) and store.value.strip().lower() not in ("", "my"):
            return f"the worker certificate lives in store {store.value!r}, not My; rotate it by hand"
        service = worker.service("worker")
        if service is None:
            return "the worker service name is unknown"
        problem = worker_account_problem(service_account(service))
        if problem is not None:
            return f"the worker service account {service_account(service)!r} {problem}"
        if not worker_cert_names(worker):
            return "the worker's computer name is not a valid host name"
        return None

    def _plan_worker(
        self, cluster: ClusterIntent, worker: NodeIntent, findings: list[Finding], ctx: PlanContext
    ) -> None:
        options = ctx.options
        service = worker.service("worker")
        assert service is not None
        account = service_account(service)
        names = worker_cert_names(worker)
        old_setting = worker.setting("worker", "WorkerHttpsCertThumbprint")
        old = old_setting.thumb() if old_setting else None
        draft = ctx.draft(self, cluster, worker.name, f"rotate the worker certificate of {worker.name}")
        cert, create = create_certificate(
            draft,
            worker,
            "My",
            names,
            hash_name=options.worker_hash,
            key_bits=options.key_bits,
            valid_days=options.valid_days,
            friendly_name="SSIS Scale Out Worker",
        )
        trust = [import_cert(draft, worker, "Root", cert)]
        for master in cluster.masters:
            if master.name.lower() == worker.name.lower():
                continue
            trust.append(import_cert(draft, master, "Root", cert, depends_on=(create,)))
        grant = draft.step(worker, GrantKeyRead(store="My", thumbprint=cert.thumbprint, account=account))
        cert.readers = [*ALWAYS_KEY_READERS, account]
        write_setting(draft, worker, "worker", "WorkerHttpsCertThumbprint", cert.thumbprint, depends_on=(*trust, grant))
        stale_certs = stale_certificates(worker, old, keep=cert.thumbprint)
        # restart first: the running service must never lose the certificate it still holds in memory
        draft.restart(worker, "worker")
        for stale in stale_certs:
            remove_old_cert(draft, worker, stale)
        ctx.commit(draft, findings)


def worker_cert_names(worker: NodeIntent) -> list[str]:
    """``CN=<computer name>;CN=<address>`` as the documented MakeCert line, every address included."""
    identity = worker.snap.identity
    addresses = sorted(identity.addresses or [], key=lambda a: (":" in a, a))
    names = [n for n in [identity.computer_name, *addresses] if valid_host(n)]
    if not names or names[0] != identity.computer_name:
        return []
    return list(dict.fromkeys(names))


def referenced(worker: NodeIntent) -> set[str]:
    """Thumbprints something on the node still uses (never removed as stale)."""
    keys: set[str] = set()
    for role, setting in (
        ("master", "SSLCertThumbprint"),
        ("worker", "MasterHttpsCertThumbprint"),
        ("worker", "WorkerHttpsCertThumbprint"),
    ):
        fact = worker.setting(role, setting)
        thumb = fact.thumb() if fact else None
        if thumb is not None:
            keys.add(thumb_key(thumb))
    for binding in worker.bindings or []:
        if binding.cert_hash is not None:
            keys.add(thumb_key(binding.cert_hash))
    return keys


def stale_certificates(worker: NodeIntent, old: Thumb | None, *, keep: Thumb) -> list[CertFact]:
    """Certificates in My with the old worker certificate's subject that nothing references any more."""
    my = worker.my or {}
    old_cert = my.get(thumb_key(old)) if old is not None else None
    subjects = {old_cert.subject} if old_cert and old_cert.subject else set()
    in_use = referenced(worker) - ({thumb_key(old)} if old is not None else set())
    stale = []
    for key, cert in sorted(my.items()):
        if key == thumb_key(keep) or key in in_use or not isinstance(cert.thumbprint, str):
            continue
        if (old is not None and key == thumb_key(old)) or (cert.subject and cert.subject in subjects):
            stale.append(cert)
    return stale
