"""The two worker-side settings that point at the master: its thumbprint pin and its endpoint.

repin-worker-master-thumbprint (master step 5.1-5.3): the worker trusts the master certificate first
(imported into its Root when missing), then ``MasterHttpsCertThumbprint`` names it, then the worker
restarts. The pin is the master's *intended* ``SSLCertThumbprint``, so a master fixed in the same plan is
pinned as it will be, and the repin depends on that fix.

fix-worker-master-endpoint (troubleshooting: "fix MasterEndpoint or reissue the master cert"): the
endpoint becomes ``https://<host>:<PortNumber>`` with a host that both names the master and is carried by
its certificate — the host most other workers already use, else the master's FQDN, computer name or
address when the certificate carries it. A name only the certificate knows is used only when workers
already reach the master by it (it resolves); without such a host the master certificate must be rotated.
"""

from __future__ import annotations

from scaleguard.findings.model import Finding, Remediation
from scaleguard.remediators.actions import SetMasterEndpoint, SettingWas
from scaleguard.remediators.base import PlanContext, Remediator, UnitDraft, group_by_node
from scaleguard.remediators.describe import show
from scaleguard.remediators.intent import ClusterIntent, NodeIntent, endpoint_host
from scaleguard.remediators.model import StepRef
from scaleguard.remediators.rotate_master import master_thumbs
from scaleguard.remediators.steps import import_cert, port_of, write_setting
from scaleguard.remediators.trust import master_cert_for
from scaleguard.rules.endpoint import parse_endpoint
from scaleguard.rules.host import valid_host
from scaleguard.rules.thumbprint import is_clean


class RepinWorkerMasterThumbprint(Remediator):
    name = Remediation.REPIN_WORKER_MASTER_THUMBPRINT
    phase = 70

    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        for cluster, worker, group in group_by_node(findings, ctx):
            self._plan_worker(cluster, worker, group, ctx)

    def _plan_worker(
        self, cluster: ClusterIntent, worker: NodeIntent | None, group: list[Finding], ctx: PlanContext
    ) -> None:
        if worker is None or not worker.snap.is_worker or worker.worker is None:
            ctx.manual_all(group, cluster.name, "the node is not a worker with a readable WorkerSettings.config")
            return
        pin = worker.setting("worker", "MasterHttpsCertThumbprint")
        thumbs = master_thumbs(cluster, worker)
        refusal = None
        if pin is None:
            refusal = "WorkerSettings.config has no MasterHttpsCertThumbprint setting to update"
        elif len(thumbs) != 1:
            refusal = (
                "the master's SSLCertThumbprint does not name a certificate"
                if not thumbs
                else "the master nodes are configured with different certificates"
            )
        if refusal is not None or pin is None:
            ctx.manual_all(group, cluster.name, refusal or "")
            return
        target = thumbs[0]
        if pin.thumb() == target and (isinstance(pin.value, StepRef) or is_clean(pin.value)):
            ctx.covered(group, cluster.name, pin.provided_by, f"the worker already pins {show(target)}")
            return
        cert = master_cert_for(cluster, worker)
        trusted = worker.cert("Root", target)
        if trusted is None and isinstance(cert, str):
            ctx.manual_all(group, cluster.name, cert)
            return
        draft = ctx.draft(self, cluster, worker.name, f"pin {show(target)} on {worker.name}")
        for master in cluster.masters_of(worker):
            setting = master.setting("master", "SSLCertThumbprint")
            draft.depend(setting.provided_by if setting else None)
        if trusted is None:
            assert not isinstance(cert, str)
            draft.depend(cert.provided_by)
            import_cert(draft, worker, "Root", cert)
        else:
            draft.depend(trusted.provided_by)
        write_setting(draft, worker, "worker", "MasterHttpsCertThumbprint", target)
        draft.restart(worker, "worker")
        ctx.commit(draft, group)


class FixWorkerMasterEndpoint(Remediator):
    name = Remediation.FIX_WORKER_MASTER_ENDPOINT
    phase = 60

    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        for cluster, node, group in group_by_node(findings, ctx):
            chosen = choose_endpoint(cluster)
            if isinstance(chosen, str):
                ctx.manual_all(group, cluster.name, chosen)
                continue
            url = f"https://{_host(chosen[0])}:{chosen[1]}"
            target = node.name if node is not None else cluster.name
            draft = ctx.draft(self, cluster, target, f"point {target} at {url}")
            workers = [node] if node is not None and node.snap.is_worker else cluster.workers
            if not point_workers(draft, cluster, chosen, workers, group, ctx):
                ctx.covered(group, cluster.name, None, f"MasterEndpoint already names {url}")
            ctx.commit(draft, group)


def point_workers(
    draft: UnitDraft,
    cluster: ClusterIntent,
    endpoint: tuple[str, int],
    workers: list[NodeIntent],
    findings: list[Finding],
    ctx: PlanContext,
    *,
    restart: bool = True,
) -> bool:
    """Point every worker in ``workers`` at ``endpoint`` (from :func:`choose_endpoint`); whether any changed."""
    host, port = endpoint
    for master in cluster.masters:
        for setting_name in ("PortNumber", "SSLCertThumbprint"):
            setting = master.setting("master", setting_name)
            draft.depend(setting.provided_by if setting else None)
    changed = False
    for worker in workers:
        if worker.worker is None or worker.setting("worker", "MasterEndpoint") is None:
            for finding in findings:
                if finding.node.lower() == worker.name.lower():
                    ctx.manual(finding, cluster.name, "WorkerSettings.config has no MasterEndpoint setting to update")
            continue
        current = worker.setting("worker", "MasterEndpoint")
        value = current.value if current and isinstance(current.value, str) else ""
        new_value = endpoint_url(value, host, port)
        if value == new_value:
            continue
        draft.step(
            worker,
            SetMasterEndpoint(host=host, port=port, trailing_slash=new_value.endswith("/")),
            expect=SettingWas(role="worker", setting="MasterEndpoint", value=current.value if current else None),
        )
        worker.set_setting("worker", "MasterEndpoint", new_value, draft.id)
        if restart:
            draft.restart(worker, "worker")
        changed = True
    return changed


def choose_endpoint(cluster: ClusterIntent) -> tuple[str, int] | str:
    """(host, port) every worker should use, or why none can be chosen safely."""
    masters = cluster.masters
    if not masters:
        return "the cluster has no master node in the snapshot"
    ports = {port_of(m) for m in masters}
    if len(ports) != 1 or None in ports:
        return "the master's PortNumber is unusable or differs between master nodes"
    port = ports.pop()
    assert port is not None
    covered: dict[str, str] = {}
    for master in masters:
        cert = cluster.master_cert(master)
        if cert is None:
            return "the master certificate is not on the master, so no endpoint host can be verified"
        covered.update({n.lower(): n for n in cert.names})
    own = {n.lower() for m in masters for n in m.names()}
    used: dict[str, int] = {}
    for worker in cluster.workers:
        host = endpoint_host(worker)
        if host and host.lower() in covered and valid_host(host):
            used[host.lower()] = used.get(host.lower(), 0) + 1
    if used:
        # a name the certificate carries and workers already reach the master by (an HA DNS name, an alias)
        best = sorted(used.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        return covered[best], port
    master = masters[0]
    identity = master.snap.identity
    preference = [identity.fqdn or "", identity.computer_name, master.name, *(identity.addresses or [])]
    for name in preference:
        # only a name that is the master's own *and* on its certificate is known to both resolve and verify
        if name and name.lower() in covered and name.lower() in own and valid_host(name):
            return covered[name.lower()], port
    return (
        "the master certificate carries none of the master's own names and no worker reaches it by "
        "another name it carries; rotate the master certificate (it will carry every name workers use)"
    )


def endpoint_url(current: str, host: str, port: int) -> str:
    """``https://host:port``, keeping a trailing ``/`` the current value had (whether SSIS wants one is
    unconfirmed, so the operator's choice stands); any other path is dropped (SO-W01 refuses paths)."""
    parsed = parse_endpoint(current)
    keep_slash = parsed.https_host is not None and parsed.path == "/"
    return f"https://{_host(host)}:{port}{'/' if keep_slash else ''}"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
