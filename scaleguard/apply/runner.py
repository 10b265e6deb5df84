"""Run a plan: steps in plan order, each journaled before it is sent, failures rolled back per unit.

The rules (DESIGN §6), and how they are kept:

- Steps run in the plan's order, which already puts trust before use across nodes; a step whose
  cross-node prerequisites did not all succeed never runs (a worker is never re-pinned to a master
  certificate that failed to appear).
- A failed step stops *its node's* plan. Every unit with a step on that node — the failing one, ones
  already done there, ones still to come — is rolled back on every node it touched, newest step first,
  restarts last; so is every unit that depends on one of them. A unit is all or nothing.
- Units on other nodes carry on.
- Config files are edited here, not on the node: the current bytes are read, changed by
  :func:`edit_setting` (only the value; encoding, BOM, line endings kept), and written with the SHA-256
  of what was read, so a file changed meanwhile is refused; the node backs the file up first and says
  where.

An interruption (Ctrl-C) marks the run ``interrupted`` and re-raises: ``scaleguard fix --undo RUN``
replays the inverse of whatever it left in place.
"""

from __future__ import annotations

import base64
import getpass
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scaleguard.apply.inverse import inverse
from scaleguard.apply.journal import Journal
from scaleguard.apply.transport import ActionFailed, OutcomeUnknown, Transport
from scaleguard.apply.undo import once_per_service, send_revert
from scaleguard.remediators.configedit import ConfigEditError, edit_setting
from scaleguard.remediators.model import FileRef, Plan, SecretRef, Step, StepRef

StepStatus = Literal["done", "failed", "unknown", "skipped", "rolled_back", "rollback_failed"]
UnitStatus = Literal["pending", "done", "failed", "rolled_back", "rollback_failed", "skipped"]
"""failed: one of its steps failed (what it had done is rolled back); rolled_back: it was undone because
another unit on one of its nodes (or one it depends on) failed; skipped: it never started."""
Event = Callable[[str, str], None]


class SecretUnavailable(Exception):
    """A secret the plan refers to cannot be had (unset variable, no terminal to prompt on)."""


def resolve_secret(ref: SecretRef) -> str:
    if ref.secret_env:
        value = os.environ.get(ref.secret_env)
        if not value:
            raise SecretUnavailable(f"environment variable {ref.secret_env} is not set")
        return value
    if ref.secret_prompt:
        if not os.isatty(0):
            raise SecretUnavailable(f"no terminal to ask for {ref.secret_prompt}")
        return getpass.getpass(f"{ref.secret_prompt}: ")
    raise SecretUnavailable("the secret reference names no source")


@dataclass
class StepReport:
    step: str
    unit: str
    cluster: str
    node: str
    action: str
    status: StepStatus
    detail: str = ""
    result: dict[str, Any] | None = None


@dataclass
class ApplyReport:
    run_id: str
    steps: dict[str, StepReport] = field(default_factory=dict)
    units: dict[str, UnitStatus] = field(default_factory=dict)
    stopped_nodes: list[str] = field(default_factory=list)
    rollback_errors: list[str] = field(default_factory=list)

    @property
    def status(self) -> Literal["nothing", "done", "partial", "failed"]:
        if not self.units:
            return "nothing"
        states = set(self.units.values())
        if states == {"done"}:
            return "done"
        return "partial" if "done" in states else "failed"


@dataclass
class _Done:
    step: Step
    seq: int
    request: dict[str, Any]
    result: dict[str, Any] | None  # None: outcome unknown


def backup_name(run_id: str, step: Step, file_name: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in file_name)[:100]
    return f"{run_id}\\{step.id}-{safe}"


class Executor:
    def __init__(
        self,
        plan: Plan,
        transport: Transport,
        journal: Journal,
        *,
        source: str = "",
        secrets: Callable[[SecretRef], str] = resolve_secret,
        on_event: Event | None = None,
    ) -> None:
        self.plan = plan
        self.transport = transport
        self.journal = journal
        self.source = source
        self.secrets = secrets
        self.emit = on_event or (lambda _kind, _text: None)
        self.results: dict[str, dict[str, Any]] = {}
        self.done: list[_Done] = []
        self.stopped: set[tuple[str, str]] = set()
        self.report = ApplyReport(run_id="")

    def run(self) -> ApplyReport:
        run_id = self.journal.start_run(kind="apply", source=self.source, plan_json=self.plan.to_json())
        self.report = ApplyReport(run_id=run_id, units={u.id: "pending" for u in self.plan.units})
        try:
            for step in self.plan.steps:
                self._step(step)
        except KeyboardInterrupt:
            self.journal.finish_run(run_id, "interrupted")
            raise
        for unit_id, status in self.report.units.items():
            if status == "pending":
                self.report.units[unit_id] = "done"
        self.journal.finish_run(run_id, self.report.status)
        return self.report

    # --- one step ------------------------------------------------------------------------------------

    def _step(self, step: Step) -> None:
        run_id = self.report.run_id
        node_key = (step.cluster.lower(), step.node.lower())
        if self.report.units[step.unit] != "pending":
            self._skip(step, "its unit was rolled back")
            return
        blocked = [
            d
            for d in step.depends_on
            if self.report.steps.get(d, None) is None or self.report.steps[d].status != "done"
        ]
        if node_key in self.stopped or blocked:
            reason = (
                f"{step.node} stopped after a failure"
                if node_key in self.stopped
                else f"prerequisite step(s) {', '.join(blocked)} did not succeed"
            )
            self._fail(step, reason, None)
            return
        try:
            request, logged = self._request(step)
        except (KeyError, SecretUnavailable, OSError) as exc:
            self.emit("fail", f"{step.id} {step.node} {step.action}: cannot prepare the request: {exc}")
            self._fail(step, f"cannot prepare the request: {exc}", None)
            return
        seq = self.journal.begin(
            run_id,
            phase="apply",
            cluster=step.cluster,
            node=step.node,
            request=logged,
            step_id=step.id,
            unit=step.unit,
        )
        self.emit("run", f"{step.id} {step.node} {step.action}")
        try:
            result = self._execute(step, request)
        except ActionFailed as exc:
            self.journal.end(run_id, seq, "failed", error=str(exc))
            self._fail(step, str(exc), None)
        except OutcomeUnknown as exc:
            self.journal.end(run_id, seq, "unknown", error=str(exc))
            self._fail(step, str(exc), _Done(step, seq, logged, None))
        except KeyboardInterrupt:
            self.journal.end(run_id, seq, "unknown", error="interrupted")
            raise
        else:
            self.journal.end(run_id, seq, "done", result=result)
            self.results[step.id] = result
            self.done.append(_Done(step, seq, logged, result))
            self.report.steps[step.id] = self._step_report(step, "done", result=result)
            self.emit("done", f"{step.id} {step.node} {step.action}")

    def _request(self, step: Step) -> tuple[dict[str, Any], dict[str, Any]]:
        """(request sent to the node, request written to the journal: secrets replaced by references)."""
        request: dict[str, Any] = {"op": step.action}
        logged: dict[str, Any] = {"op": step.action}
        for key, value in step.params.items():
            if isinstance(value, StepRef):
                request[key] = logged[key] = self.results[value.from_step][value.field]
            elif isinstance(value, SecretRef):
                request[key] = self.secrets(value)
                logged[key] = {"secret": value.secret_env or value.secret_prompt}
            elif isinstance(value, FileRef):
                request[f"{key}_b64"] = base64.b64encode(Path(value.local_file).read_bytes()).decode("ascii")
                logged[f"{key}_b64"] = {"file": value.local_file}
            else:
                request[key] = logged[key] = value
        if step.action == "write_config":
            name = backup_name(self.report.run_id, step, str(request["path"]).replace("/", "\\").rsplit("\\", 1)[-1])
            request["backup_name"] = logged["backup_name"] = name
        if step.action == "remove_certificate":
            name = backup_name(self.report.run_id, step, f"{request['thumbprint']}.cer")
            request["backup_name"] = logged["backup_name"] = name
        return request, logged

    def _execute(self, step: Step, request: dict[str, Any]) -> dict[str, Any]:
        client = self.transport.client(step.cluster, step.node)
        if step.action != "write_config":
            return client.request(request)
        current = client.request({"op": "read_file", "path": request["path"]})
        content = base64.b64decode(str(current["content_b64"]))
        try:
            edited = edit_setting(content, str(request["setting"]), str(request["value"]))
        except ConfigEditError as exc:
            raise ActionFailed(f"{request['path']}: {exc}") from exc
        if not edited.changed:
            return {
                "path": request["path"],
                "changed": False,
                "before_sha256": current["sha256"],
                "after_sha256": current["sha256"],
            }
        request["expected_sha256"] = current["sha256"]
        full = {**request, "content_b64": base64.b64encode(edited.content).decode("ascii")}
        result = client.request(full)
        return {**result, "old_values": list(edited.old_values)}

    # --- failure and rollback ----------------------------------------------------------------------------

    def _fail(self, step: Step, reason: str, uncertain: _Done | None) -> None:
        node_key = (step.cluster.lower(), step.node.lower())
        self.stopped.add(node_key)
        if f"{step.cluster}/{step.node}" not in self.report.stopped_nodes:
            self.report.stopped_nodes.append(f"{step.cluster}/{step.node}")
        status: StepStatus = "unknown" if uncertain else "failed"
        self.report.steps[step.id] = self._step_report(step, status, detail=reason)
        self.emit("fail", f"{step.id} {step.node} {step.action}: {reason}")
        doomed = self._doomed(node_key, step.unit)
        entries = [d for d in self.done if d.step.unit in doomed]
        if uncertain is not None:
            entries.append(uncertain)
        failed = self._rollback(entries)
        for unit_id in doomed:
            if self.report.units[unit_id] in ("pending", "done"):
                touched = any(d.step.unit == unit_id for d in entries)
                self.report.units[unit_id] = (
                    "rollback_failed"
                    if unit_id in failed
                    else "failed"
                    if unit_id == step.unit
                    else "rolled_back"
                    if touched
                    else "skipped"
                )
        self.done = [d for d in self.done if d.step.unit not in doomed]

    def _doomed(self, node_key: tuple[str, str], unit_id: str) -> set[str]:
        """The failing unit, every unit with a step on the failing node, and everything depending on them."""
        doomed = {unit_id} | {s.unit for s in self.plan.steps if (s.cluster.lower(), s.node.lower()) == node_key}
        growing = True
        while growing:
            extra = {u.id for u in self.plan.units if u.id not in doomed and set(u.depends_on) & doomed}
            doomed |= extra
            growing = bool(extra)
        return {u for u in doomed if self.report.units.get(u) in ("pending", "done")}

    def _rollback(self, entries: list[_Done]) -> set[str]:
        """Undo ``entries`` newest first, deferred restarts last; returns units whose rollback failed."""
        failed_units: set[str] = set()
        deferred: list[tuple[_Done, dict[str, Any]]] = []
        for entry in sorted(entries, key=lambda d: d.seq, reverse=True):
            plan = inverse(entry.request, entry.result)
            ok = all(self._rollback_request(entry, request) for request in plan.requests)
            deferred += [(entry, request) for request in plan.deferred]
            self._mark_rolled_back(entry, ok, plan.note)
            if not ok:
                failed_units.add(entry.step.unit)
        for entry, request in once_per_service(deferred, lambda d: (d.step.cluster, d.step.node)):
            if not self._rollback_request(entry, request):
                failed_units.add(entry.step.unit)
                self._mark_rolled_back(entry, False, "")
        return failed_units

    def _rollback_request(self, entry: _Done, request: dict[str, Any]) -> bool:
        run_id = self.report.run_id
        step = entry.step
        error = send_revert(
            self.journal, self.transport, run_id, phase="rollback", cluster=step.cluster, node=step.node,
            request=request, step_id=step.id, unit=step.unit, inverts=(run_id, entry.seq),
        )
        if error is not None:
            message = f"rollback of {step.id} on {step.node} ({request.get('op')}) failed: {error}"
            self.report.rollback_errors.append(message)
            self.emit("fail", message)
            return False
        self.emit("undo", f"{step.id} {step.node} {request.get('op')}")
        return True

    def _mark_rolled_back(self, entry: _Done, ok: bool, note: str) -> None:
        current = self.report.steps.get(entry.step.id)
        if current is not None and current.status in ("failed", "unknown"):
            return
        status: StepStatus = "rolled_back" if ok else "rollback_failed"
        if current is not None and current.status == "rollback_failed":
            return
        self.report.steps[entry.step.id] = self._step_report(entry.step, status, detail=note, result=entry.result)

    def _skip(self, step: Step, reason: str) -> None:
        self.journal.skip(
            self.report.run_id,
            phase="apply",
            cluster=step.cluster,
            node=step.node,
            request={"op": step.action},
            step_id=step.id,
            unit=step.unit,
            reason=reason,
        )
        if step.id not in self.report.steps:
            self.report.steps[step.id] = self._step_report(step, "skipped", detail=reason)

    @staticmethod
    def _step_report(
        step: Step, status: StepStatus, *, detail: str = "", result: dict[str, Any] | None = None
    ) -> StepReport:
        return StepReport(step.id, step.unit, step.cluster, step.node, step.action, status, detail, result)


def apply_plan(plan: Plan, transport: Transport, journal: Journal, **kwargs: Any) -> ApplyReport:
    """Apply ``plan`` (see the module docstring for the ordering and rollback rules)."""
    return Executor(plan, transport, journal, **kwargs).run()
