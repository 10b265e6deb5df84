"""findings + snapshot → plan: every failing finding planned, covered by another unit, or manual.

Remediators run in a fixed order (rotations first, because they subsume the smaller fixes they imply;
trust before anything that relies on it; starting services last), each against the intended state the
earlier ones left. Units are then placed by phase — a start-mode-only fix moves to the very front — and
steps are numbered in execution order, so ``s001`` runs first and a reviewer reads the plan top-down.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from scaleguard.findings.model import Finding, FindingsFile, Status
from scaleguard.remediators.base import PlanContext, PlanOptions, Remediator, UnitDraft
from scaleguard.remediators.binding import RepairMasterBinding
from scaleguard.remediators.intent import ClusterIntent
from scaleguard.remediators.key_access import GrantWorkerKeyAccess
from scaleguard.remediators.manual import ManualRemediator
from scaleguard.remediators.model import Name, Plan, PlanOptionsRecord, Step, StepRef, Unit
from scaleguard.remediators.normalize import NormalizeConfigThumbprint
from scaleguard.remediators.rotate_master import RotateMasterCertificate
from scaleguard.remediators.rotate_worker import RotateWorkerCertificate
from scaleguard.remediators.schannel import SetSchannelTrustMode
from scaleguard.remediators.services import StartService
from scaleguard.remediators.stale import RemoveStaleWorkerCertificates
from scaleguard.remediators.trust import ImportRootCertificate
from scaleguard.remediators.worker_config import FixWorkerMasterEndpoint, RepinWorkerMasterThumbprint
from scaleguard.snapshot.model import Snapshot

REMEDIATORS: tuple[Remediator, ...] = (
    RotateMasterCertificate(),
    RotateWorkerCertificate(),
    ImportRootCertificate(),
    NormalizeConfigThumbprint(),
    RepairMasterBinding(),
    SetSchannelTrustMode(),
    FixWorkerMasterEndpoint(),
    RepinWorkerMasterThumbprint(),
    GrantWorkerKeyAccess(),
    RemoveStaleWorkerCertificates(),
    StartService(),
    ManualRemediator(),
)
BY_NAME = {r.name: r for r in REMEDIATORS}
ACTIONABLE = (Status.FAIL, Status.ERROR)
_Model = TypeVar("_Model", bound=BaseModel)


class PlanRefused(Exception):
    """The plan exceeds a limit the user set (``--max-nodes``); the plan is attached for display."""

    def __init__(self, message: str, plan: Plan) -> None:
        super().__init__(message)
        self.plan = plan


class PlanInputInvalid(ValueError):
    """The findings or snapshot name a cluster or node that no plan step may carry; nothing is planned."""


_STEP_NAME: TypeAdapter[str] = TypeAdapter(Name)


def plan(findings: FindingsFile, snapshot: Snapshot, options: PlanOptions | None = None) -> Plan:
    """The ordered, deduplicated plan for every failing finding (pure: no I/O)."""
    options = options or PlanOptions()
    failing = [f for f in findings.findings if f.status in ACTIONABLE]
    _check_names(failing, snapshot)
    ctx = PlanContext(options=options, clusters={c.cluster: ClusterIntent.from_snapshot(c) for c in snapshot.clusters})
    by_remediation: dict[str, list[Finding]] = {}
    for finding in failing:
        name = finding.remediation if finding.remediation in BY_NAME else "manual"
        by_remediation.setdefault(name, []).append(finding)
    try:
        for remediator in sorted(REMEDIATORS, key=lambda r: r.phase):
            group = by_remediation.get(remediator.name)
            if group:
                remediator.plan(group, ctx)
    except ValidationError as exc:  # a collected value no step may carry: refuse the plan, never half-build it
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise PlanInputInvalid(
            f"cannot plan: a value collected from the nodes cannot be carried in a plan step ({exc.title}"
            f"{'.' + where if where else ''}: {error['msg']}; found {str(error.get('input'))[:120]!r})"
        ) from exc
    for finding in failing:
        cluster = ctx.cluster_of(finding)
        ctx.manual(finding, cluster.name if cluster else finding.cluster, "no remediator answered this finding")
    units, steps = _number([draft for _, draft in sorted(ctx.units, key=lambda pair: pair[0])])
    unit_ids = {old: new.id for old, new in units}
    generated_at = options.now or datetime.now(UTC)
    result = Plan(
        generated_at=generated_at,
        expires_at=generated_at + options.valid_for,
        source=options.source or findings.source,
        options=PlanOptionsRecord(
            master_hash=options.master_hash,
            key_bits=options.key_bits,
            valid_days=options.valid_days,
            max_nodes=options.max_nodes,
            master_pfx=options.master_pfx.path if options.master_pfx else None,
        ),
        units=[unit for _, unit in units],
        steps=steps,
        manual=list(ctx.manual_items),
        dispositions=[
            d.model_copy(update={"unit": unit_ids.get(d.unit, d.unit) if d.unit else None})
            for d in sorted(ctx.dispositions, key=lambda d: d.finding)
        ],
        warnings=list(ctx.warnings),
    )
    touched = result.nodes()
    if options.max_nodes is not None and len(touched) > options.max_nodes:
        raise PlanRefused(
            f"the plan touches {len(touched)} nodes ({', '.join(touched)}), more than --max-nodes {options.max_nodes}",
            result,
        )
    return result


def _check_names(failing: list[Finding], snapshot: Snapshot) -> None:
    """Refuse, before planning, names a step could not carry (a findings or snapshot file is hostile input),
    every one of them at once; the net around the remediators would name only the first a step met, and
    not a node no step touches."""
    names = {name for f in failing for name in (f.cluster, f.node)}
    names |= {name for c in snapshot.clusters for name in (c.cluster, *(n.name for n in c.nodes))}
    bad = []
    for name in sorted(names):
        try:
            _STEP_NAME.validate_python(name)
        except ValidationError:
            bad.append(name)
    if bad:
        shown = ", ".join(repr(name[:80]) for name in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise PlanInputInvalid(
            f"cannot plan: {len(bad)} cluster or node name(s) no plan step may carry (1 to 253 characters, "
            f"no control character, '/' or '\\'): {shown}"
        )


def _number(drafts: list[UnitDraft]) -> tuple[list[tuple[str, Unit]], list[Step]]:
    """Renumber units and steps in execution order and rewrite every reference to them."""
    unit_ids = {d.id: f"u{i:02d}" for i, d in enumerate(drafts, 1)}
    step_ids: dict[str, str] = {}
    for draft in drafts:
        for step in draft.steps:
            step_ids[step.id] = f"s{len(step_ids) + 1:03d}"
    units: list[tuple[str, Unit]] = []
    steps: list[Step] = []
    for draft in drafts:
        built = draft.build()
        depends_on = [unit_ids[u] for u in built.depends_on if u in unit_ids]
        renumbered = {"id": unit_ids[draft.id], "depends_on": depends_on, "steps": [step_ids[s] for s in built.steps]}
        units.append((draft.id, built.model_copy(update=renumbered)))
        for step in draft.steps:
            update = {
                "id": step_ids[step.id],
                "unit": unit_ids[draft.id],
                "params": _renumbered(step.params, step_ids),
                "depends_on": [step_ids[d] for d in step.depends_on],
                "expect": _renumbered(step.expect, step_ids) if step.expect is not None else None,
            }
            steps.append(step.model_copy(update=update))
    return units, steps


def _renumbered(model: _Model, step_ids: dict[str, str]) -> _Model:
    """``model`` with every field that is another step's certificate following the renumbering."""
    updates = {
        name: StepRef(from_step=step_ids[value.from_step], field=value.field)
        for name in type(model).model_fields
        if isinstance(value := getattr(model, name), StepRef)
    }
    return model.model_copy(update=updates) if updates else model
