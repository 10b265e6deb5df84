"""Which steps go into which runbook wave, and what each carries as data (pure).

A value one node's step needs may come from another node (the thumbprint of the certificate a worker
makes, imported into the master's Root). A runbook cannot ask for it, so runbooks come in waves: a wave
holds, for each node, the longest run of its next steps (plan order, as ``--apply`` runs a node) whose
prerequisites — ``depends_on``, the steps whose values it uses, the steps of the units its unit depends
on — are done already or come earlier in the same script. Results come back, and the next wave carries
the values they returned, as data.

A step that failed or was stale stops its node (as ``--apply`` stops a node's plan at a failure), and
every step that needs one of the stopped steps, on any node, is skipped with it.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from scaleguard.apply.runbook_script import (
    REF_FIELDS,
    Check,
    CheckAbsent,
    CheckBinding,
    CheckCreated,
    Checked,
    CheckKeyReadable,
    CheckNone,
    CheckPresent,
    CheckRestart,
    CheckRunning,
    CheckSchannel,
    CheckSetting,
    CheckStartMode,
    RefField,
    Refused,
    RunbookRef,
    RunbookStep,
)
from scaleguard.apply.runner import backup_name, step_changed
from scaleguard.remediators.actions import (
    AGENT_OP,
    CopyCertificate,
    CreateCertificate,
    GrantKeyRead,
    ImportCertificate,
    RemoveCertificate,
    RestartService,
    SetBinding,
    SetMasterEndpoint,
    SetSchannelValue,
    SetServiceStartMode,
    StartService,
    StepRef,
    WriteConfig,
)
from scaleguard.remediators.model import BindingWas, Plan, SchannelWas, SettingWas, StartModeWas, Step
from scaleguard.rules.thumbprint import comparable

Status = Literal["pending", "done", "applied", "stale", "failed", "skipped"]
OK = ("done", "applied")
NOT_IN_RUNBOOKS = {
    "import_pfx": "it needs the PFX file and its password, which a runbook never carries; apply it with --apply",
}
SERVICE_WAIT_S = 120


class RunbookRefused(Refused):
    """The plan cannot be run as runbooks; ``reasons`` holds one line per step."""


class Known(Checked):
    """What is known of one step after the results imported so far (``runbook.json`` keeps it)."""

    status: Status
    reason: str = ""
    result: dict[str, Any] | None = None
    wave: int = 0


def refusals(plan: Plan) -> list[str]:
    """Why ``plan`` cannot be run as runbooks (empty: it can)."""
    reasons = [f"step {s.id}: {NOT_IN_RUNBOOKS[s.action]}" for s in plan.steps if s.action in NOT_IN_RUNBOOKS]
    names: dict[str, str] = {}
    for step in plan.steps:
        if names.setdefault(step.node.lower(), step.cluster) != step.cluster:
            reasons.append(f"step {step.id}: node {step.node} is in two clusters; one runbook folder per cluster")
        if not all(ch.isalnum() or ch in "._-" for ch in step.node) or len(step.node) > 64:
            reasons.append(f"step {step.id}: node name {step.node!r} cannot name a file")
    return reasons


def prerequisites(plan: Plan, step: Step) -> list[str]:
    """Every step that must have succeeded before ``step`` runs."""
    needed = list(step.depends_on)
    needed += [ref.from_step for ref in _refs(step)]
    for unit_id in plan.unit(step.unit).depends_on:
        needed += plan.unit(unit_id).steps
    return list(dict.fromkeys(needed))


def _refs(step: Step) -> list[StepRef]:
    values = [getattr(step.params, name) for name in type(step.params).model_fields]
    values += [getattr(step.expect, name, None) for name in ("value", "cert_hash")]
    return [v for v in values if isinstance(v, StepRef)]


def stop_failed(plan: Plan, known: dict[str, Known]) -> list[str]:
    """Mark skipped every pending step behind a failed, stale or skipped one (its node's later steps, and
    whatever needs it); returns the ids newly skipped."""
    skipped: list[str] = []
    changed = True
    while changed:
        changed = False
        stopped_nodes = {
            (s.cluster.lower(), s.node.lower())
            for s in plan.steps
            if known[s.id].status in ("failed", "stale", "skipped")
        }
        for step in plan.steps:
            if known[step.id].status != "pending":
                continue
            blocking = [d for d in prerequisites(plan, step) if known[d].status in ("failed", "stale", "skipped")]
            if (step.cluster.lower(), step.node.lower()) in stopped_nodes:
                reason = f"{step.node} stopped at an earlier step that did not succeed"
            elif blocking:
                reason = f"prerequisite step(s) {', '.join(blocking)} did not succeed"
            else:
                continue
            known[step.id] = Known(status="skipped", reason=reason)
            skipped.append(step.id)
            changed = True
    return skipped


def next_wave(plan: Plan, known: dict[str, Known]) -> dict[tuple[str, str], list[Step]]:
    """(cluster, node) → the steps of that node's script in the next wave (only nodes with any)."""
    wave: dict[tuple[str, str], list[Step]] = {}
    by_node: dict[tuple[str, str], list[Step]] = {}
    for step in plan.steps:
        by_node.setdefault((step.cluster, step.node), []).append(step)
    for key, steps in by_node.items():
        chosen: list[Step] = []
        for step in steps:
            if known[step.id].status in OK:
                continue
            if known[step.id].status != "pending":
                break
            ready = {s.id for s in chosen}
            if not all(known[d].status in OK or d in ready for d in prerequisites(plan, step)):
                break
            chosen.append(step)
        if chosen:
            wave[key] = chosen
    return wave


def marker(plan_sha256: str, step: Step, friendly_name: str) -> str:
    """The friendly name a created certificate gets: the plan's, then plan and step (found again on a rerun)."""
    return f"{friendly_name} {plan_sha256[:16]} {step.id}"


def runbook_step(
    plan: Plan, step: Step, *, plan_sha256: str, run_id: str, known: dict[str, Known], script: list[Step]
) -> RunbookStep:
    """The data one step travels as: the agent request (references replaced by the values they name) and
    the check the driver makes before it."""
    fields: dict[str, Any] = {}
    refs: dict[RefField, RunbookRef] = {}
    in_script = {s.id for s in script}
    for name, value in step.params.agent_fields().items():
        if isinstance(value, StepRef) and value.from_step in in_script and name in REF_FIELDS:
            refs[cast(RefField, name)] = RunbookRef(from_step=value.from_step, field=value.field)  # filled on the node
            fields[name] = None
        else:
            fields[name] = _value(value, known)
    params = step.params
    request: dict[str, Any] = {"op": AGENT_OP[step.action]}
    service_role = None
    check: Check = CheckNone()
    if isinstance(params, CreateCertificate):
        friendly = marker(plan_sha256, step, params.friendly_name)
        request |= {**fields, "friendly_name": friendly}
        check = CheckCreated(store=params.store, friendly_name=friendly)
    elif isinstance(params, ImportCertificate):
        request |= fields
        check = CheckPresent(store=params.store, thumbprint=fields["thumbprint"])
    elif isinstance(params, CopyCertificate):
        request |= fields
        check = CheckPresent(store=params.to_store, thumbprint=params.thumbprint)
    elif isinstance(params, RemoveCertificate):
        request |= {**fields, "backup_name": backup_name(run_id, step, f"{params.thumbprint}.cer")}
        check = CheckAbsent(store=params.store, thumbprint=params.thumbprint)
    elif isinstance(params, GrantKeyRead):
        request |= fields
        check = CheckKeyReadable(store=params.store, thumbprint=fields["thumbprint"], account=params.account)
    elif isinstance(params, WriteConfig | SetMasterEndpoint):
        role = params.config if isinstance(params, WriteConfig) else "worker"
        setting = params.setting if isinstance(params, WriteConfig) else "MasterEndpoint"
        value = fields["value"]
        file_name = "MasterSettings.config" if role == "master" else "WorkerSettings.config"
        request = {
            "op": "set_config_setting", "role": role, "setting": setting, "value": value,
            "backup_name": backup_name(run_id, step, file_name),
        }
        known_before, before = _expected(step.expect.value if isinstance(step.expect, SettingWas) else None, known)
        check = CheckSetting(
            role=role, setting=setting, value=value,
            expected_known=isinstance(step.expect, SettingWas) and known_before, expected=before,
        )
    elif isinstance(params, SetBinding):
        request |= fields
        was = step.expect.cert_hash if isinstance(step.expect, BindingWas) else None
        known_before, before = _expected(was, known)
        check = CheckBinding(
            ip_port=params.ip_port, cert_hash=fields["cert_hash"] and comparable(str(fields["cert_hash"])),
            cert_store=params.cert_store,
            app_id=params.app_id, expected_known=isinstance(step.expect, BindingWas) and known_before,
            expected_hash=comparable(before) if before else None,
        )
    elif isinstance(params, SetSchannelValue):
        request |= fields
        check = CheckSchannel(
            name=params.name, value=params.value, expected_known=isinstance(step.expect, SchannelWas),
            expected=step.expect.value if isinstance(step.expect, SchannelWas) else None,
        )
    elif isinstance(params, SetServiceStartMode | StartService | RestartService):
        request |= {k: v for k, v in fields.items() if v is not None}
        service_role = params.role if params.name is None else None
        if isinstance(params, SetServiceStartMode):
            check = CheckStartMode(
                mode=params.mode, expected=step.expect.mode if isinstance(step.expect, StartModeWas) else None
            )
        else:
            request["wait_s"] = SERVICE_WAIT_S
            restart = isinstance(params, RestartService)
            check = _restart_check(plan, step, known, script, plan_sha256) if restart else CheckRunning()
    else:  # pragma: no cover - every action either has a branch or is refused by refusals()
        raise RunbookRefused([f"step {step.id}: {step.action} cannot be run as a runbook"])
    return RunbookStep(
        id=step.id, unit=step.unit, action=step.action, request=request, check=check, service_role=service_role,
        refs=refs,
    )


def _restart_check(
    plan: Plan, step: Step, known: dict[str, Known], script: list[Step], plan_sha256: str
) -> CheckRestart:
    """Restart when a step of its unit on this node changed something: earlier in this script (the driver
    looks at those outcomes), or in an earlier wave (then only once: the node keeps a mark)."""
    same = [s for s in plan.steps if s.unit == step.unit and s.node == step.node and s.id != step.id]
    earlier = {s.id for s in script[: script.index(step)]}
    changed = any(known[s.id].status == "applied" and step_changed(known[s.id].result) for s in same)
    return CheckRestart(
        after=[s.id for s in same if s.id in earlier], unit_changed=changed or not same,
        mark=f"{plan_sha256[:16]}-{step.id}",
    )


def _value(value: Any, known: dict[str, Known]) -> Any:
    if isinstance(value, StepRef):
        result = known[value.from_step].result or {}
        found = result.get(value.field)
        if not isinstance(found, str):
            raise RunbookRefused([f"{value.key()} is not known (its result did not say)"])
        return found
    return value


def _expected(value: str | StepRef | None, known: dict[str, Known]) -> tuple[bool, str | None]:
    if isinstance(value, StepRef):
        result = known[value.from_step].result or {}
        found = result.get(value.field)
        return isinstance(found, str), found if isinstance(found, str) else None
    return True, value
