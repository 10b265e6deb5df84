"""normalize-config-thumbprint: a thumbprint SSIS can read, naming the certificate it already meant.

Copying a thumbprint from the certificate dialog brings spaces and an invisible U+200E; SSIS needs
exactly 40 hex digits (SO-M01/SO-W01). When the value still names one certificate once that noise is
dropped, it is rewritten as the 40 upper-case hex digits (only that value changes in the file) and the
service restarts. A value that names no thumbprint at all is not guessed at: manual. For SO-W01 a
malformed ``MasterEndpoint`` is fixed the way fix-worker-master-endpoint does it, in the same unit.
"""

from __future__ import annotations

from scaleguard.findings.model import Finding, Remediation
from scaleguard.remediators.base import PlanContext, Remediator, UnitDraft, group_by_node
from scaleguard.remediators.describe import display
from scaleguard.remediators.intent import ClusterIntent, NodeIntent, endpoint_well_formed
from scaleguard.remediators.model import StepRef
from scaleguard.remediators.steps import port_of, write_setting
from scaleguard.remediators.worker_config import choose_endpoint, point_workers
from scaleguard.rules.thumbprint import is_clean, normalize_thumbprint

FIELDS = {
    "master": ("SSLCertThumbprint",),
    "worker": ("MasterHttpsCertThumbprint", "WorkerHttpsCertThumbprint"),
}
ROLES_BY_POLICY = {"SO-M01": ("master",), "SO-W01": ("worker",)}


class NormalizeConfigThumbprint(Remediator):
    name = Remediation.NORMALIZE_CONFIG_THUMBPRINT
    phase = 40

    def plan(self, findings: list[Finding], ctx: PlanContext) -> None:
        for cluster, node, group in group_by_node(findings, ctx):
            if node is None:
                ctx.manual_all(group, cluster.name, "the node is not in the snapshot")
                continue
            draft = ctx.draft(self, cluster, node.name, f"normalize thumbprints in {node.name}'s settings")
            ctx.commit(draft, [f for f in group if self._finding(f, cluster, node, draft, ctx)])

    def _finding(
        self, finding: Finding, cluster: ClusterIntent, node: NodeIntent, draft: UnitDraft, ctx: PlanContext
    ) -> bool:
        """Plan one finding into ``draft``; True when the unit answers it (else it is manual or covered)."""
        roles = ROLES_BY_POLICY.get(finding.policy) or tuple(node.snap.roles())
        problems: list[str] = []
        changed_roles: list[str] = []
        providers: list[str] = []
        for role in roles:
            config = node.snap.master_config if role == "master" else node.snap.worker_config
            if config is None:
                problems.append(f"the node has no {role} settings file")
                continue
            if config.parse_error or (node.master if role == "master" else node.worker) is None:
                problems.append(f"the {role} settings file does not parse ({config.parse_error}); fix it by hand")
                continue
            for field_name in FIELDS[role]:
                setting = node.setting(role, field_name)
                if setting is None:
                    problems.append(f"{field_name} is missing; set it by hand")
                    continue
                if isinstance(setting.value, StepRef) or is_clean(setting.value):
                    if setting.provided_by:
                        providers.append(setting.provided_by)
                    continue
                normalized = normalize_thumbprint(setting.value)
                if normalized is None:
                    problems.append(
                        f"{field_name} {display(setting.value)} is not a thumbprint even without "
                        "spaces and invisible characters"
                    )
                    continue
                write_setting(draft, node, role, field_name, normalized)
                if role not in changed_roles:
                    changed_roles.append(role)
            if role == "master" and port_of(node) is None:
                problems.append("PortNumber is not a port number 1-65535; set it by hand")
            if role == "worker" and finding.policy in ("SO-W01",):
                endpoint = node.setting("worker", "MasterEndpoint")
                value = endpoint.value if endpoint and isinstance(endpoint.value, str) else None
                if endpoint is not None and not endpoint_well_formed(value):
                    chosen = choose_endpoint(cluster)
                    repointed = not isinstance(chosen, str) and point_workers(
                        draft, cluster, chosen, [node], [], ctx, restart=False
                    )
                    if not repointed:
                        problems.append(
                            f"MasterEndpoint {display(value)} is not an https URL and no safe replacement was found"
                        )
                    elif "worker" not in changed_roles:
                        changed_roles.append("worker")
        for role in changed_roles:
            draft.restart(node, role)
        if changed_roles:
            if problems:
                ctx.warnings.append(
                    f"{cluster.name}/{node.name} {finding.policy}: partly fixed; still to do by "
                    f"hand: {'; '.join(problems)}"
                )
            return True
        if problems:
            ctx.manual(finding, cluster.name, "; ".join(problems))
        else:
            note = "every thumbprint is already exactly 40 hex digits"
            ctx.covered([finding], cluster.name, next(iter(providers), None), note)
        return False
