"""Loading a reviewed ``plan.json``: everything is checked before any node is contacted.

A plan file is hostile input — it may have been edited after review. :func:`load_plan` answers either a
plan whose every step is the typed model of its action and which holds together as a plan, or every
reason it is refused, one ``step <id>: <reason>`` line each:

- each step's parameters against its action's model (:mod:`scaleguard.remediators.actions`);
- ids unique, units and steps agreeing, dependencies and references pointing at earlier steps, a
  reference naming a certificate an earlier ``create_certificate`` of the same unit makes;
- no settings-file path in a step (it is taken from the live node at apply time);
- a certificate is removed only by the two remediations that retire old worker certificates, and never
  one the plan itself points something at;
- a local file (a PFX) is sent only by the master rotation, and only the ``--master-pfx`` it was planned
  with;
- the plan has not expired.

The SHA-256 of the exact bytes is returned with the plan, so the review, the journal and the operator
all name the same file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from scaleguard.findings.model import Remediation
from scaleguard.remediators.actions import (
    CreateCertificate,
    ImportPfx,
    RemoveCertificate,
    SetBinding,
    SetMasterEndpoint,
    WriteConfig,
    step_refs,
)
from scaleguard.remediators.model import PLAN_SCHEMA, Plan, Step

MAX_PLAN_BYTES = 64 * 1024 * 1024
"""A plan for thousands of nodes is a few MiB; a plan.json beyond this is not read at all."""
REMOVING_REMEDIATIONS = (Remediation.ROTATE_WORKER_CERTIFICATE, Remediation.REMOVE_STALE_WORKER_CERTIFICATES)


class PlanInvalid(ValueError):
    """The plan is refused; ``errors`` holds one line per reason."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class LoadedPlan:
    plan: Plan
    sha256: str


def plan_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_plan(data: bytes, *, now: datetime | None = None) -> LoadedPlan:
    """The validated plan of ``data`` (the exact bytes of plan.json), or :class:`PlanInvalid`."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PlanInvalid([f"plan: not JSON ({exc})"]) from exc
    if not isinstance(raw, dict):
        raise PlanInvalid(["plan: not a JSON object"])
    if raw.get("schema") != PLAN_SCHEMA:
        raise PlanInvalid([f"plan: schema {raw.get('schema')!r} is not {PLAN_SCHEMA!r}"])
    errors = _step_errors(raw.get("steps"))
    plan: Plan | None = None
    try:
        plan = Plan.model_validate_json(data)
    except ValidationError as exc:
        errors += [
            f"plan: {_where(e['loc'])}{e['msg']}" for e in exc.errors() if not e["loc"] or e["loc"][0] != "steps"
        ]
        if not errors:
            errors = [f"plan: {_where(e['loc'])}{e['msg']}" for e in exc.errors()]
    if plan is not None:
        errors += plan_problems(plan)
        moment = now or datetime.now(UTC)
        if plan.expires_at <= moment:
            errors.append(
                f"plan: expired at {plan.expires_at.isoformat(timespec='seconds')}; plan again (--plan-valid-for)"
            )
    if errors or plan is None:
        raise PlanInvalid(list(dict.fromkeys(errors)) or ["plan: does not validate"])
    return LoadedPlan(plan, plan_sha256(data))


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) + ": " if loc else ""


def _step_errors(steps: Any) -> list[str]:
    if not isinstance(steps, list):
        return []
    errors = []
    for index, raw in enumerate(steps):
        step_id = str(raw["id"]) if isinstance(raw, dict) and isinstance(raw.get("id"), str) else f"#{index + 1}"
        try:
            Step.model_validate_json(json.dumps(raw))
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(
                    p for p in error["loc"] if not isinstance(p, str) or (p[:1].islower() and "-" not in p)
                )
                if loc and loc[0] not in Step.model_fields:
                    loc = ("params", *loc)
                errors.append(f"step {step_id[:20]}: {_where(loc)}{error['msg']}")
    return errors


def plan_problems(plan: Plan) -> list[str]:
    """Why the plan does not hold together (empty when it does); each line names the step or unit."""
    problems: list[str] = []
    units = {u.id: u for u in plan.units}
    if len(units) != len(plan.units):
        problems.append("plan: unit ids are not unique")
    seen: dict[str, Step] = {}
    created: dict[str, tuple[str, str]] = {}  # step id → (unit, node) of a create_certificate
    pinned: set[str] = set()
    for step in plan.steps:
        where = f"step {step.id}"
        if step.id in seen:
            problems.append(f"{where}: the id is used twice")
        unit = units.get(step.unit)
        if unit is None:
            problems.append(f"{where}: unit {step.unit} is not in the plan")
        elif step.id not in unit.steps or unit.cluster != step.cluster:
            problems.append(f"{where}: unit {step.unit} does not list it (or is of another cluster)")
        problems += [f"{where}: depends on {d}, which is not an earlier step" for d in step.depends_on if d not in seen]
        for ref in step_refs(step.params):
            origin = created.get(ref.from_step)
            if origin is None or origin[0] != step.unit:
                problems.append(
                    f"{where}: {ref.key()} is not a certificate an earlier step of unit {step.unit} creates"
                )
        params = step.params
        if isinstance(params, WriteConfig | SetMasterEndpoint) and params.path is not None:
            problems.append(f"{where}: a plan carries no settings-file path (it is read from the live node)")
        if isinstance(params, WriteConfig) and isinstance(params.value, str):
            pinned.add(params.value)
        if isinstance(params, SetBinding) and isinstance(params.cert_hash, str):
            pinned.add(params.cert_hash)
        if isinstance(params, CreateCertificate):
            created[step.id] = (step.unit, step.node.lower())
        seen[step.id] = step
    for step in plan.steps:
        if isinstance(step.params, RemoveCertificate):
            problems += [f"step {step.id}: {p}" for p in _removal_problems(plan, step, step.params, pinned)]
        if isinstance(step.params, ImportPfx):
            problems += [f"step {step.id}: {p}" for p in _pfx_problems(plan, step, step.params)]
    listed = {s for u in plan.units for s in u.steps}
    problems += [f"unit {u.id}: lists {s}, which is not a step of it" for u in plan.units for s in u.steps
                 if s not in seen or seen[s].unit != u.id]
    problems += [f"step {s.id}: in no unit" for s in plan.steps if s.id not in listed]
    return problems


def _pfx_problems(plan: Plan, step: Step, params: ImportPfx) -> list[str]:
    """A local file travels only as the --master-pfx a master rotation was planned with."""
    unit = next((u for u in plan.units if u.id == step.unit), None)
    problems = []
    if unit is None or unit.remediation != Remediation.ROTATE_MASTER_CERTIFICATE:
        problems.append("imports a PFX, which only the rotation of the master certificate does")
    if params.pfx.local_file != plan.options.master_pfx:
        problems.append(f"sends {params.pfx.local_file!r}, which is not the plan's --master-pfx")
    return problems


def _removal_problems(plan: Plan, step: Step, params: RemoveCertificate, pinned: set[str]) -> list[str]:
    unit = next((u for u in plan.units if u.id == step.unit), None)
    problems = []
    if unit is None or unit.remediation not in REMOVING_REMEDIATIONS or unit.target.lower() != step.node.lower():
        problems.append(
            f"removes certificate {params.thumbprint}, which only the retiring of old worker certificates on "
            "its own worker does"
        )
    if params.thumbprint in pinned:
        problems.append(f"removes certificate {params.thumbprint}, which the plan itself configures")
    return problems
