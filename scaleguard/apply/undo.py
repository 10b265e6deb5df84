"""``scaleguard fix --undo RUN``: put back what a run left in place, newest action first.

What a run left in place is every action it journaled as done (or started but never answered, when the
run was interrupted) that no rollback or earlier undo has already reverted. Each is reverted with the
same inverse rollback uses (restarts last, once per service), recorded as a run of kind ``undo`` whose
entries point at the actions they revert — so undoing the same run twice does nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from scaleguard.apply.inverse import inverse
from scaleguard.apply.journal import Entry, Journal, Phase
from scaleguard.apply.transport import ActionFailed, OutcomeUnknown, Transport

_E = TypeVar("_E")


def send_revert(
    journal: Journal,
    transport: Transport,
    run_id: str,
    *,
    phase: Phase,
    cluster: str,
    node: str,
    request: dict[str, Any],
    step_id: str | None,
    unit: str | None,
    inverts: tuple[str, int],
) -> str | None:
    """Journal one inverse request, send it, journal the answer: what rollback and undo both do per
    request. Returns why it failed, or None when the node did it."""
    seq = journal.begin(
        run_id, phase=phase, cluster=cluster, node=node, request=request, step_id=step_id, unit=unit,
        inverts=inverts,
    )
    try:
        result = transport.client(cluster, node).request(request)
    except (ActionFailed, OutcomeUnknown) as exc:
        journal.end(run_id, seq, "failed", error=str(exc))
        return str(exc)
    journal.end(run_id, seq, "done", result=result)
    return None


def once_per_service(
    deferred: list[tuple[_E, dict[str, Any]]], where: Callable[[_E], tuple[str, str]]
) -> list[tuple[_E, dict[str, Any]]]:
    """The deferred restarts, each service (cluster, node, name) once: the first one asked for."""
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for entry, request in deferred:
        cluster, node = where(entry)
        key = (cluster.lower(), node.lower(), str(request.get("name")).lower())
        if key not in seen:
            seen.add(key)
            kept.append((entry, request))
    return kept


class UndoError(Exception):
    """The run cannot be undone (unknown id, or it is itself an undo)."""


@dataclass
class UndoReport:
    run_id: str
    undo_of: str
    reverted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def pending_entries(journal: Journal, run_id: str) -> list[Entry]:
    """Actions of ``run_id`` still in effect (or possibly in effect), newest first."""
    inverted = journal.inverted(run_id)
    entries = [
        e
        for e in journal.entries(run_id)
        if e.phase == "apply" and e.status in ("done", "unknown", "started") and e.seq not in inverted
    ]
    return sorted(entries, key=lambda e: e.seq, reverse=True)


def undo_run(
    run_id: str,
    transport: Transport,
    journal: Journal,
    *,
    on_event: Callable[[str, str], None] | None = None,
    undo_id: str | None = None,
) -> UndoReport:
    emit = on_event or (lambda _kind, _text: None)
    run = journal.run(run_id)
    if run is None:
        raise UndoError(f"no run {run_id!r} in {journal.path}")
    if run.kind != "apply":
        raise UndoError(f"{run_id} is an {run.kind} run; only apply runs can be undone")
    todo = pending_entries(journal, run_id)
    undo_id = journal.start_run(
        kind="undo", source=f"undo of {run_id}", plan_json=None, undo_of=run_id, run_id=undo_id
    )
    report = UndoReport(run_id=undo_id, undo_of=run_id)
    deferred: list[tuple[Entry, dict[str, Any]]] = []
    for entry in todo:
        plan = inverse(entry.request, entry.result if entry.status == "done" else None)
        if plan.note:
            report.notes.append(f"{entry.step_id or entry.seq} {entry.node} {entry.action}: {plan.note}")
        for request in plan.requests:
            _send(journal, transport, report, undo_id, entry, request, emit)
        deferred += [(entry, request) for request in plan.deferred]
    for entry, request in once_per_service(deferred, lambda e: (e.cluster, e.node)):
        _send(journal, transport, report, undo_id, entry, request, emit)
    journal.finish_run(undo_id, "done" if report.ok else "failed")
    return report


def _send(
    journal: Journal,
    transport: Transport,
    report: UndoReport,
    undo_id: str,
    entry: Entry,
    request: dict[str, Any],
    emit: Callable[[str, str], None],
) -> None:
    error = send_revert(
        journal, transport, undo_id, phase="undo", cluster=entry.cluster, node=entry.node, request=request,
        step_id=entry.step_id, unit=entry.unit, inverts=(entry.run_id, entry.seq),
    )
    label = f"{entry.step_id or entry.seq} {entry.node} {request.get('op')}"
    if error is not None:
        report.errors.append(f"{label}: {error}")
        emit("fail", f"{label}: {error}")
        return
    report.reverted.append(label)
    emit("undo", label)
