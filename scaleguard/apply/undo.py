"""``scaleguard fix --undo RUN``: put back what a run left in place, newest action first on each node.

What a run left in place is every action it journaled as done (or started but never answered, when the
run was interrupted) that no rollback or earlier undo has already reverted. Each is reverted with the
same inverse rollback uses (restarts last, once per service), recorded as a run of kind ``undo`` whose
entries point at the actions they revert — so undoing the same run twice does nothing the second time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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
    except Exception as exc:  # noqa: BLE001 - a fault nobody foresaw fails this revert, never the rest
        error = f"the revert failed ({type(exc).__name__}: {exc})"
        journal.end(run_id, seq, "failed", error=error)
        return error
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
    concurrency: int = 8,
) -> UndoReport:
    """Revert what ``run_id`` left in place, up to ``concurrency`` nodes at once.

    Each node's actions are reverted newest first, one at a time. An action that a step on another node
    relied on (the plan's ``depends_on``: a worker pinned a certificate the master had just trusted) is
    reverted only once that step's revert is over, so use is undone before trust as trust came before
    use. Every such wait is on a newer action, so nothing waits in a circle. Restarts come last, once
    per service, in parallel too."""
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

    def revert(entry: Entry) -> list[tuple[Entry, dict[str, Any], str | None]]:
        plan = inverse(entry.request, entry.result if entry.status == "done" else None)
        if plan.note:
            said = f"{entry.step_id or entry.seq} {entry.node} {entry.action}: {plan.note}"
            (report.errors if plan.unsure else report.notes).append(said)
        deferred.extend((entry, request) for request in plan.deferred)
        return [(entry, request, _send(journal, transport, undo_id, entry, request)) for request in plan.requests]

    def restart(pair: tuple[Entry, dict[str, Any]]) -> list[tuple[Entry, dict[str, Any], str | None]]:
        entry, request = pair
        return [(entry, request, _send(journal, transport, undo_id, entry, request))]

    workers = max(1, concurrency)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="undo") as pool:
        for _entry, sent in _in_order(pool, todo, _waits(todo, journal.plan_json(run_id)), revert):
            _record(report, sent, emit)
        for sent in pool.map(restart, once_per_service(deferred, lambda e: (e.cluster, e.node))):
            _record(report, sent, emit)
    journal.finish_run(undo_id, "done" if report.ok else "failed")
    return report


def _waits(todo: list[Entry], plan_json: str | None) -> dict[int, set[int]]:
    """seq → the pending seqs that must be reverted first: those of steps that depended on its step."""
    try:
        steps = json.loads(plan_json or "{}").get("steps") or []
        needs = {str(s["id"]): {str(d) for d in s.get("depends_on") or []} for s in steps if isinstance(s, dict)}
    except (ValueError, AttributeError, KeyError, TypeError):
        needs = {}  # a journal without a readable plan: each node newest first is still kept
    seqs: dict[str, set[int]] = {}
    for entry in todo:
        if entry.step_id:
            seqs.setdefault(entry.step_id, set()).add(entry.seq)
    waits: dict[int, set[int]] = {}
    for step_id, needed in needs.items():
        for seq_after in seqs.get(step_id, ()):
            for before in needed:
                for seq in seqs.get(before, ()):
                    if seq < seq_after:
                        waits.setdefault(seq, set()).add(seq_after)
    return waits


_Sent = list[tuple[Entry, dict[str, Any], str | None]]


def _in_order(
    pool: ThreadPoolExecutor, todo: list[Entry], waits: dict[int, set[int]], revert: Callable[[Entry], _Sent]
) -> Iterator[tuple[Entry, _Sent]]:
    """Run ``revert`` on every entry: one at a time per node in the given order, nodes in parallel,
    each entry only after the entries it waits for."""
    chains: dict[tuple[str, str], list[Entry]] = {}
    for entry in todo:
        chains.setdefault((entry.cluster.lower(), entry.node.lower()), []).append(entry)
    done: set[int] = set()
    running: dict[Future[tuple[Entry, _Sent]], tuple[str, str]] = {}
    while chains or running:
        for node, chain in list(chains.items()):
            if node not in running.values() and waits.get(chain[0].seq, set()) <= done:
                running[pool.submit(lambda entry: (entry, revert(entry)), chain.pop(0))] = node
                if not chain:
                    del chains[node]
        if not running:  # cannot happen (every wait is on a newer entry); never hang if it did
            node, chain = next(iter(chains.items()))
            waits.pop(chain[0].seq, None)
            continue
        finished, _pending = wait(running, return_when=FIRST_COMPLETED)
        for future in finished:
            del running[future]
            entry, sent = future.result()
            done.add(entry.seq)
            yield entry, sent


def _send(journal: Journal, transport: Transport, undo_id: str, entry: Entry, request: dict[str, Any]) -> str | None:
    return send_revert(
        journal, transport, undo_id, phase="undo", cluster=entry.cluster, node=entry.node, request=request,
        step_id=entry.step_id, unit=entry.unit, inverts=(entry.run_id, entry.seq),
    )


def _record(report: UndoReport, sent: _Sent, emit: Callable[[str, str], None]) -> None:
    for entry, request, error in sent:
        label = f"{entry.step_id or entry.seq} {entry.node} {request.get('op')}"
        if error is not None:
            report.errors.append(f"{label}: {error}")
            emit("fail", f"{label}: {error}")
        else:
            report.reverted.append(label)
            emit("undo", label)
