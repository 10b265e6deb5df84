"""Run a plan: nodes in parallel, each node's steps in order, every step journaled before it is sent.

The rules, and how they are kept:

- Units run concurrently across nodes, at most ``concurrency`` nodes at once; each node's steps run in
  plan order. A step starts only when its cross-node prerequisites (``depends_on``) and every step of
  the units its unit depends on have succeeded: the plan's order already puts trust before use, and
  these links are what that order rests on (a worker is never re-pinned to a master certificate that
  has not been trusted everywhere and bound on the master).
- Consecutive ready steps of one node go to the agent in one round (``batch``): it runs them in order,
  stops at the first failure and reports each, so each is journaled as if it had been sent alone.
- Drift: with a fresh collection (taken after the cluster lease), a unit whose findings all pass now is
  skipped as already done; a step whose target already holds is skipped; a step whose planned "before"
  no longer holds stops its unit as ``stale`` (see :mod:`scaleguard.remediators.drift`). A restart runs
  only when something else in its unit changed on that node.
- A failed step stops *its node's* plan. Every unit with a step on that node — the failing one, ones
  already done there, ones still to come — is rolled back on every node it touched, newest step first,
  restarts last; so is every unit that depends on one of them. A unit is all or nothing. Rounds already
  on their way finish first (a node never runs two rounds at once), then the rollback runs.
- Controls: ``canary`` workers go first and must come out fixed before any other worker is touched;
  ``max_unavailable`` bounds the worker services restarting at once; ``max_failures`` stops starting
  new units once that many failed.
- Config files are edited here, not on the node: the current bytes (read in an earlier round of the
  node, or by a ``read_file`` round) are changed by :func:`edit_setting` (only the value; encoding, BOM,
  line endings kept) and written with the SHA-256 of what was read, so a file changed meanwhile is
  refused; the node backs the file up first and says where.

An interruption (Ctrl-C) marks the run ``interrupted`` and re-raises: ``scaleguard fix --undo RUN``
replays the inverse of whatever it left in place.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scaleguard.apply.inverse import answer_problems, inverse
from scaleguard.apply.journal import Journal
from scaleguard.apply.transport import ActionFailed, OutcomeUnknown, PartialChange, Transport
from scaleguard.apply.undo import once_per_service, send_revert
from scaleguard.collectors.agent.schema import AGENT_SCHEMA
from scaleguard.findings.model import Finding
from scaleguard.remediators import drift
from scaleguard.remediators.actions import (
    AGENT_OP,
    CreateCertificate,
    FileRef,
    RestartService,
    SecretRef,
    StepRef,
    created_problems,
)
from scaleguard.remediators.configedit import ConfigEditError, edit_setting
from scaleguard.remediators.model import Plan, Step
from scaleguard.remediators.pfx import PFX_LIMIT
from scaleguard.remediators.resolve import ResolveError, resolve
from scaleguard.safefile import read_limited
from scaleguard.snapshot.model import NodeSnapshot, Snapshot

StepStatus = Literal[
    "done", "unchanged", "failed", "unknown", "skipped", "stale", "rolled_back", "rollback_failed"
]
"""unchanged: its target state already held (or, for a restart, nothing in its unit changed there)."""
UnitStatus = Literal["pending", "done", "unchanged", "failed", "stale", "rolled_back", "rollback_failed", "skipped"]
"""failed: one of its steps failed (what it had done is rolled back); stale: the node changed since the
plan was made (what it had done is rolled back); rolled_back: it was undone because another unit on one
of its nodes (or one it depends on) failed; unchanged: its findings already passed; skipped: it never
started."""
Event = Callable[[str, str], None]
CanaryCheck = Callable[[list[tuple[str, str]]], str | None]
"""Re-collect and re-evaluate these (cluster, node) canaries; None when they are fixed, else why not."""

BATCH_MAX = 64
OK_STEPS = ("done", "unchanged")
FAILED_UNITS = ("failed", "stale", "rollback_failed")


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


@dataclass(frozen=True)
class Limit:
    """``N`` or ``P%`` of a total (Ansible's ``max_fail_percentage``, Kubernetes' ``maxUnavailable``)."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> Limit:
        raw = text.strip()
        try:
            if raw.endswith("%"):
                percent = float(raw[:-1])
                if not 0 < percent <= 100:
                    raise ValueError
                return cls(percent=percent)
            count = int(raw)
            if count < 1:
                raise ValueError
            return cls(count=count)
        except ValueError:
            raise ValueError(f"{text!r} is not a count (1 or more) or a percentage (1%-100%)") from None

    def of(self, total: int) -> int:
        """The limit for ``total`` items: a percentage rounds down but is never below one."""
        if self.count is not None:
            return self.count
        return max(1, math.floor(total * (self.percent or 0) / 100))


@dataclass(frozen=True)
class Controls:
    concurrency: int = 8
    canary: int = 0
    max_unavailable: Limit | None = None
    max_failures: Limit | None = None


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
    halted: str | None = None
    changes: int = 0

    @property
    def status(self) -> Literal["nothing", "done", "partial", "failed"]:
        if not self.units:
            return "nothing"
        states = set(self.units.values())
        if states <= {"done", "unchanged"}:
            return "done"
        return "partial" if states & {"done", "unchanged"} else "failed"


@dataclass
class _Done:
    step: Step
    seq: int
    request: dict[str, Any]
    result: dict[str, Any] | None  # None: outcome unknown


@dataclass
class _Round:
    """One agent round on one node: its plan steps (with what was sent) and config reads riding along."""

    node: tuple[str, str]
    steps: list[tuple[Step, int, dict[str, Any], dict[str, Any]]]  # step, seq, request, logged
    reads: list[str]
    outage: bool
    read_after: bool = False


@dataclass
class _Failure:
    step: Step
    reason: str
    uncertain: list[_Done]
    stale: bool = False


def backup_name(run_id: str, step: Step, file_name: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in file_name)[:100]
    return f"{run_id}\\{step.id}-{safe}"


def _key(cluster: str, node: str) -> tuple[str, str]:
    return cluster.lower(), node.lower()


def _outage(step: Step) -> bool:
    return isinstance(step.params, RestartService) and step.params.role == "worker"


def _op(step: Step) -> str:
    """The agent operation carrying out ``step`` (a ``MasterEndpoint`` change is a settings-file edit)."""
    return AGENT_OP[step.action]


def _file_content(outcome: Any) -> bytes | None:
    """The bytes of a ``read_file`` answer; None when it failed or is not base64 (node data)."""
    if not (isinstance(outcome, dict) and outcome.get("ok") is True and isinstance(outcome.get("result"), dict)):
        return None
    try:
        return base64.b64decode(str(outcome["result"].get("content_b64", "")), validate=True)
    except ValueError:  # binascii.Error for bad base64; a plain ValueError for a non-ASCII str
        return None


def _distrust(step: Step, result: dict[str, Any]) -> str | None:
    """Why a done step's answer cannot be relied on (node data), or None."""
    problems = answer_problems(_op(step), result)
    if isinstance(step.params, CreateCertificate):
        problems += created_problems(result, step.params.store)
    return f"the node's answer cannot be used: {problems[0]}" if problems else None


def step_changed(result: dict[str, Any] | None) -> bool:
    """Whether a done step changed the node (an unknown answer counts as changed): a restart is due only then."""
    return result is None or bool(result.get("changed", True))


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
        current: Snapshot | None = None,
        findings: list[Finding] | None = None,
        controls: Controls | None = None,
        canary_check: CanaryCheck | None = None,
        run_id: str | None = None,
        plan_sha256: str | None = None,
        read_after: bool = False,
    ) -> None:
        self.plan = plan
        self.transport = transport
        self.journal = journal
        self.source = source
        self.secrets = secrets
        self.emit = on_event or (lambda _kind, _text: None)
        self.controls = controls or Controls()
        self.canary_check = canary_check
        self.current = current
        self.findings = findings
        self.run_id = run_id
        self.plan_sha256 = plan_sha256
        self.fields: dict[str, dict[str, Any]] = {}
        self.unresolved: dict[str, str] = {}
        self.read_after = read_after
        self.documents: dict[tuple[str, str], dict[str, Any]] = {}
        """The agent document each node's last round read right after its changes (``read_after``); a
        node that got any request later (a rollback) has none."""
        self.touched: set[tuple[str, str]] = set()
        self.results: dict[str, dict[str, Any]] = {}
        self.done: list[_Done] = []
        self.stopped: set[tuple[str, str]] = set()
        self.report = ApplyReport(run_id="")
        self.status: dict[str, str] = {}
        self.files: dict[tuple[tuple[str, str], str], bytes] = {}
        self._nodes: dict[tuple[str, str], list[Step]] = {}
        self._pos: dict[tuple[str, str], int] = {}
        self._busy: set[tuple[str, str]] = set()
        self._waiting: dict[tuple[str, str], str] = {}
        self._started_units: set[str] = set()
        self._failures: list[_Failure] = []
        self._outages = 0
        self._snap: dict[tuple[str, str], NodeSnapshot] = {}
        self._canaries: list[tuple[str, str]] = []
        self._gate_open = True
        self._workers: set[tuple[str, str]] = set()
        self._worker_total = 0
        self._progress_at = 0.0
        self._started_at = 0.0

    # --- the run -------------------------------------------------------------------------------------

    def run(self) -> ApplyReport:
        run_id = self.journal.start_run(
            kind="apply",
            source=self.source,
            plan_json=self.plan.to_json(),
            run_id=self.run_id,
            plan_sha256=self.plan_sha256,
        )
        self.report = ApplyReport(run_id=run_id, units={u.id: "pending" for u in self.plan.units})
        self._prepare()
        pool = ThreadPoolExecutor(max_workers=max(1, self.controls.concurrency), thread_name_prefix="apply")
        inflight: dict[Future[dict[str, Any]], _Round] = {}
        try:
            self._loop(pool, inflight)
        except KeyboardInterrupt:
            for item in inflight.values():
                for _step, seq, _request, _logged in item.steps:
                    self.journal.end(run_id, seq, "unknown", error="interrupted")
            pool.shutdown(wait=False, cancel_futures=True)
            self.journal.finish_run(run_id, "interrupted")
            raise
        pool.shutdown(wait=True)
        for unit_id, status in self.report.units.items():
            if status == "pending":
                self.report.units[unit_id] = "done"
        self._progress(force=True)
        self.journal.finish_run(run_id, self.report.status)
        return self.report

    def _prepare(self) -> None:
        for step in self.plan.steps:
            self._nodes.setdefault(_key(step.cluster, step.node), []).append(step)
            self.status[step.id] = "pending"
        self._pos = dict.fromkeys(self._nodes, 0)
        if self.current is not None:
            for cluster in self.current.clusters:
                for node in cluster.nodes:
                    self._snap[_key(cluster.cluster, node.name)] = node
        for step in self.plan.steps:
            # values only the live node knows (settings-file path, versioned service name) come from the
            # fresh read; a step they cannot be found for fails before anything is sent for it
            try:
                resolved = resolve(step, self._snap.get(_key(step.cluster, step.node)))
            except ResolveError as exc:
                self.unresolved[step.id] = str(exc)
                resolved = step
            self.fields[step.id] = resolved.params.agent_fields()
        for key, steps in self._nodes.items():
            snap = self._snap.get(key)
            is_worker = (
                snap.worker_config is not None and snap.master_config is None
                if snap is not None
                else not any(getattr(s.params, "role", "") == "master" for s in steps)
            )
            if is_worker:
                self._workers.add(key)
        snapshot_workers = [n for n in self._snap.values() if n.worker_config is not None and n.master_config is None]
        self._worker_total = len(snapshot_workers) or len(self._workers)
        if self.controls.canary > 0:
            self._canaries = [k for k in self._nodes if k in self._workers][: self.controls.canary]
            self._gate_open = not self._canaries
        if self.findings is not None:
            for unit in self.plan.units:
                if drift.unit_holds(unit, self.findings):
                    self._unchanged_unit(unit.id)
        self._started_at = time.monotonic()

    def _loop(self, pool: ThreadPoolExecutor, inflight: dict[Future[dict[str, Any]], _Round]) -> None:
        while True:
            if not self._failures:
                for item in self._dispatch():
                    inflight[pool.submit(self._send, item)] = item
            if inflight:
                finished, _ = wait(list(inflight), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    self._complete(inflight.pop(future), future)
                continue
            if self._failures:
                failures, self._failures = self._failures, []
                for failure in failures:
                    self._fail(failure)
                continue
            if not self._gate_open:
                self._canary_gate()
                continue
            if any(self._pos[k] < len(steps) for k, steps in self._nodes.items() if k not in self.stopped):
                # nothing in flight and nothing dispatchable, yet steps remain: only a bug gets here
                for key, steps in self._nodes.items():
                    for step in steps[self._pos[key] :]:
                        if self.report.units[step.unit] == "pending":
                            self._failures.append(_Failure(step, "its prerequisites can never be met", []))
                        self._pos[key] = len(steps)
                if self._failures:
                    continue
            return

    # --- choosing what runs next ------------------------------------------------------------------------

    def _dispatch(self) -> list[_Round]:
        rounds = []
        for key in self._nodes:
            if key in self._busy or key in self.stopped or len(self._busy) >= self.controls.concurrency:
                continue
            waiting_on, steps = self._waiting.get(key), self._nodes[key]
            if (
                waiting_on is not None
                and self.status.get(waiting_on) in ("pending", "running")
                and self._pos[key] < len(steps)
                and self.report.units[steps[self._pos[key]].unit] == "pending"
            ):
                continue  # its next step still waits for that one: no need to look again
            item = self._next_round(key)
            if item is not None:
                rounds.append(item)
                self._busy.add(key)
                if item.outage:
                    self._outages += 1
        return rounds

    def _next_round(self, key: tuple[str, str]) -> _Round | None:
        steps, outage = self._nodes[key], False
        batch: list[tuple[Step, dict[str, Any], dict[str, Any]]] = []
        reads: list[str] = []
        while self._pos[key] < len(steps) and len(batch) < BATCH_MAX - 4:
            step = steps[self._pos[key]]
            if self.report.units[step.unit] != "pending":
                if self.status[step.id] == "pending":
                    started = step.unit in self._started_units
                    self._skip(step, "its unit was rolled back" if started else "its unit did not start")
                self._pos[key] += 1
                continue
            if step.unit not in self._started_units and self._stop_starting():
                self.report.units[step.unit] = "skipped"
                continue
            if not self._gate_open and key in self._workers and key not in self._canaries:
                break
            waiting, broken = self._prerequisites(step)
            if broken:
                if not batch:
                    reason = f"prerequisite step(s) {', '.join(broken)} did not succeed"
                    self._failures.append(_Failure(step, reason, []))
                break
            if waiting or self._refers_to(step, batch):
                break
            if step.id in self.unresolved:
                if not batch:
                    self._failures.append(_Failure(step, f"cannot prepare the request: {self.unresolved[step.id]}", []))
                break
            verdict = self._drift(step, batch)
            if verdict.verdict == "done":
                self._unchanged(step, verdict.reason)
                self._pos[key] += 1
                continue
            if verdict.verdict == "stale":
                if not batch:
                    self._failures.append(_Failure(step, verdict.reason, [], stale=True))
                break
            if _outage(step) and not outage:
                limit = self.controls.max_unavailable
                if limit is not None and self._outages >= limit.of(self._worker_total or 1):
                    break
                outage = True
            if _op(step) == "write_config" and (key, str(self.fields[step.id].get("path"))) not in self.files:
                if not batch:
                    reads.append(str(self.fields[step.id].get("path")))
                break
            try:
                request, logged = self._request(step)
                edit = self._edit(key, step, request, logged) if _op(step) == "write_config" else (request, logged)
            except (KeyError, SecretUnavailable, OSError, ActionFailed) as exc:
                if not batch:
                    self._failures.append(_Failure(step, f"cannot prepare the request: {exc}", []))
                break
            self._pos[key] += 1
            if edit is None:
                self._unchanged(step, f"{self.fields[step.id].get('setting')} already has that value")
                continue
            batch.append((step, *edit))
            self._started_units.add(step.unit)
        if not batch and not reads:
            return None
        reads += self._prefetch(key, batch)
        self.touched.add(key)
        last = self.read_after and bool(batch) and self._pos[key] == len(steps)
        entries = []
        for step, request, logged in batch:
            seq = self.journal.begin(
                self.report.run_id, phase="apply", cluster=step.cluster, node=step.node, request=logged,
                step_id=step.id, unit=step.unit,
            )
            self.status[step.id] = "running"
            self.emit("run", f"{step.id} {step.node} {step.action}")
            entries.append((step, seq, request, logged))
        return _Round(node=key, steps=entries, reads=reads, outage=outage, read_after=last)

    def _stop_starting(self) -> bool:
        limit = self.controls.max_failures
        if self.report.halted is not None:
            return True
        if limit is None:
            return False
        failed = sum(1 for s in self.report.units.values() if s in FAILED_UNITS)
        if failed >= limit.of(len(self.plan.units)):
            self.report.halted = f"--max-failures reached ({failed} unit(s) failed): no further unit was started"
            self.emit("fail", self.report.halted)
            return True
        return False

    def _prerequisites(self, step: Step) -> tuple[bool, list[str]]:
        """(still waiting, prerequisites that will never succeed); remembers one it waits for."""
        needed = list(step.depends_on)
        for unit_id in self.plan.unit(step.unit).depends_on:
            needed += self.plan.unit(unit_id).steps
        pending = next((d for d in needed if self.status.get(d) in ("pending", "running")), None)
        key = _key(step.cluster, step.node)
        if pending is not None:
            self._waiting[key] = pending
        else:
            self._waiting.pop(key, None)
        broken = [d for d in needed if self.status.get(d) not in ("pending", "running", *OK_STEPS)]
        return pending is not None, broken

    def _refers_to(self, step: Step, batch: list[tuple[Step, Any, Any]]) -> bool:
        """A step needing a value that a step of this very round will return waits for the next round."""
        pending = {s.id for s, _r, _l in batch}
        return any(isinstance(v, StepRef) and v.from_step in pending for v in self.fields[step.id].values())

    def _resolve(self, ref: StepRef) -> str | None:
        result = self.results.get(ref.from_step)
        value = result.get(ref.field) if result else None
        return str(value) if value is not None else None

    def _drift(self, step: Step, batch: list[tuple[Step, Any, Any]]) -> drift.Drift:
        if step.action == "restart_service":
            same = [s for s in self.plan.steps if s.unit == step.unit and s.node == step.node and s.id != step.id]
            if same and not any(
                (self.status[s.id] == "done" and step_changed(self.results.get(s.id))) or s in [b[0] for b in batch]
                for s in same
            ):
                return drift.Drift("done", "nothing else in its unit changed on this node")
        if self.current is None:
            return drift.TODO
        params: dict[str, Any] = {}
        for name, value in self.fields[step.id].items():
            if isinstance(value, StepRef):
                resolved = self._resolve(value)
                if resolved is None:
                    return drift.Drift("stale", f"it needs {value.key()}, which this run did not produce")
                params[name] = resolved
            else:
                params[name] = value
        return drift.check(step, params, self._snap.get(_key(step.cluster, step.node)), self._resolve)

    def _prefetch(self, key: tuple[str, str], batch: list[tuple[Step, Any, Any]]) -> list[str]:
        """Config files later steps of this node will edit, read in this round so they need no round of
        their own (the write still carries the SHA-256 of these bytes: a change in between is refused)."""
        later = self._nodes[key][self._pos[key] :]
        paths = [str(self.fields[s.id].get("path")) for s in later if _op(s) == "write_config"]
        return [p for p in dict.fromkeys(paths) if (key, p) not in self.files][:4]

    def _request(self, step: Step) -> tuple[dict[str, Any], dict[str, Any]]:
        """(request sent to the node, request written to the journal: secrets replaced by references)."""
        request: dict[str, Any] = {"op": _op(step)}
        logged: dict[str, Any] = {"op": _op(step)}
        for key, value in self.fields[step.id].items():
            if isinstance(value, StepRef):
                request[key] = logged[key] = self.results[value.from_step][value.field]
            elif isinstance(value, SecretRef):
                request[key] = self.secrets(value)
                logged[key] = {"secret": value.secret_env or value.secret_prompt}
            elif isinstance(value, FileRef):
                content = read_limited(Path(value.local_file), PFX_LIMIT, named=True)
                request[f"{key}_b64"] = base64.b64encode(content).decode("ascii")
                logged[f"{key}_b64"] = {"file": value.local_file}
            else:
                request[key] = logged[key] = value
        if _op(step) == "write_config":
            name = backup_name(self.report.run_id, step, str(request["path"]).replace("/", "\\").rsplit("\\", 1)[-1])
            request["backup_name"] = logged["backup_name"] = name
        if step.action == "remove_certificate":
            name = backup_name(self.report.run_id, step, f"{request['thumbprint']}.cer")
            request["backup_name"] = logged["backup_name"] = name
        if step.action == "import_certificate" and self.current is not None:
            logged["absent_before"] = True  # the drift check saw it missing: an unknown outcome removes it
        return request, logged

    def _edit(
        self, key: tuple[str, str], step: Step, request: dict[str, Any], logged: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The write request for ``step`` from the bytes this run last saw (None: nothing to change).

        The edited bytes become what the next edit of the same file in this round starts from: if this
        write fails, the round stops there and the node's plan with it."""
        path = str(request["path"])
        content = self.files[(key, path)]
        try:
            edited = edit_setting(content, str(request["setting"]), str(request["value"]))
        except ConfigEditError as exc:
            raise ActionFailed(f"{path}: {exc}") from exc
        if not edited.changed:
            return None
        sha = hashlib.sha256(content).hexdigest()
        self.files[(key, path)] = edited.content
        request = {
            **request,
            "expected_sha256": sha,
            "content_b64": base64.b64encode(edited.content).decode("ascii"),
        }
        logged = {**logged, "expected_sha256": sha, "old_values": list(edited.old_values)}
        return request, logged

    # --- one round on the wire (pool threads: no shared state touched) ----------------------------------

    def _send(self, item: _Round) -> dict[str, Any]:
        try:
            return self._round_trip(item)
        except (ActionFailed, OutcomeUnknown):
            raise
        except Exception as exc:  # noqa: BLE001 - a fault nobody foresaw: the round may have changed the node
            raise OutcomeUnknown(f"{item.node[1]}: the round failed ({type(exc).__name__}: {exc})") from exc

    def _round_trip(self, item: _Round) -> dict[str, Any]:
        client = self.transport.client(*self._names(item.node))
        requests = [r for _s, _q, r, _l in item.steps] + [{"op": "read_file", "path": p} for p in item.reads]
        if len(requests) == 1 and not item.read_after:
            try:
                return {"results": [{"ok": True, "result": client.request(requests[0])}]}
            except ActionFailed as exc:
                return {"results": [{"ok": False, "error": str(exc)}]}
            except PartialChange as exc:  # exit code 3: what was there before comes with it
                return {"results": [{"ok": False, "error": str(exc), "partial": True, "result": exc.result}]}
        batch: dict[str, Any] = {"op": "batch", "actions": requests}
        if item.read_after:
            batch["collect"] = {"op": "collect", "schema": AGENT_SCHEMA}
        answer = client.request(batch)
        if not isinstance(answer.get("results"), list) or len(answer["results"]) > len(requests):
            raise OutcomeUnknown(f"{item.node[1]}: the agent's batch answer is malformed")
        return answer

    def _names(self, key: tuple[str, str]) -> tuple[str, str]:
        step = self._nodes[key][0]
        return step.cluster, step.node

    # --- what came back ------------------------------------------------------------------------------------

    def _complete(self, item: _Round, future: Future[dict[str, Any]]) -> None:
        self._busy.discard(item.node)
        if item.outage:
            self._outages -= 1
        run_id = self.report.run_id
        try:
            answer = future.result()
        except KeyboardInterrupt:
            for _step, seq, _request, _logged in item.steps:
                self.journal.end(run_id, seq, "unknown", error="interrupted")
            item.steps = []
            raise
        except (OutcomeUnknown, ActionFailed) as exc:
            unknown = isinstance(exc, OutcomeUnknown)
            uncertain = []
            for step, seq, _request, logged in item.steps:
                self.journal.end(run_id, seq, "unknown" if unknown else "failed", error=str(exc))
                self.status[step.id] = "unknown" if unknown else "failed"
                if unknown:
                    uncertain.append(_Done(step, seq, logged, None))
            if item.steps:
                self._failures.append(_Failure(item.steps[0][0], str(exc), uncertain))
            else:
                self._failures.append(_Failure(self._next_write(item.node), f"cannot read the file: {exc}", []))
            return
        results = list(answer.get("results") or [])
        if isinstance(answer.get("collect"), dict):
            self.documents[item.node] = answer["collect"]
        stopped = False  # the agent stops a batch at its first failure and reports nothing after it
        for index, (step, seq, request, logged) in enumerate(item.steps):
            outcome = results[index] if index < len(results) and isinstance(results[index], dict) else None
            if outcome is None and stopped:
                self.journal.end(run_id, seq, "skipped", error="not run: an earlier action of its round failed")
                self.status[step.id] = "skipped"
                continue
            if outcome is None:  # not the agent's answer: this step may have run
                error = "the answer says nothing of this step though nothing before it failed"
                self.journal.end(run_id, seq, "unknown", error=error)
                self.status[step.id] = "unknown"
                self._failures.append(_Failure(step, error, [_Done(step, seq, logged, None)]))
                stopped = True
                continue
            ok = outcome.get("ok")
            stopped = stopped or ok is not True
            if ok is not True:
                error = str(outcome.get("error") or "the action failed")
                if ok is not False:  # node data that says neither: it may have changed the node
                    error = f"the answer says neither done nor failed (ok: {str(ok)[:40]!r})"
                if ok is not False or outcome.get("partial") not in (None, False):
                    # changed and neither finished nor undone: outcome unknown, rolled back from what the
                    # agent found before (or blindly, as any unknown outcome, when it could not say)
                    before = outcome.get("result") if ok is False else None
                    self.journal.end(run_id, seq, "unknown", error=error)
                    self.status[step.id] = "unknown"
                    done = _Done(step, seq, logged, dict(before) if isinstance(before, dict) else None)
                    self._failures.append(_Failure(step, error, [done]))
                    continue
                self.journal.end(run_id, seq, "failed", error=error)
                self.status[step.id] = "failed"
                self._failures.append(_Failure(step, error, []))
                continue
            result = outcome.get("result")
            result = dict(result) if isinstance(result, dict) else {}
            distrust = _distrust(step, result)
            if distrust is not None:  # it did something, but what it says it did cannot be used
                self.journal.end(run_id, seq, "unknown", error=distrust)
                self.status[step.id] = "unknown"
                self._failures.append(_Failure(step, distrust, [_Done(step, seq, logged, None)]))
                continue
            if _op(step) == "write_config":
                result["old_values"] = logged.get("old_values", [])
                self.files[(item.node, str(request["path"]))] = base64.b64decode(str(request["content_b64"]))
            self.journal.end(run_id, seq, "done", result=result)
            self.results[step.id] = result
            self.status[step.id] = "done"
            self.report.changes += 1
            self.done.append(_Done(step, seq, logged, result))
            self.report.steps[step.id] = self._step_report(step, "done", result=result)
            self.emit("done", f"{step.id} {step.node} {step.action}")
            if self.report.units[step.unit] != "pending":  # rolled back while this round was on its way
                self._failures.append(_Failure(step, "", [], stale=False))
        for offset, path in enumerate(item.reads):
            outcome = results[len(item.steps) + offset] if len(item.steps) + offset < len(results) else None
            content = _file_content(outcome)
            if content is not None:
                self.files[(item.node, path)] = content
            elif not item.steps:
                error = str(outcome.get("error") or "no content") if isinstance(outcome, dict) else "no answer"
                self._failures.append(_Failure(self._next_write(item.node), f"cannot read {path}: {error}", []))
        self._settle_units()

    def _next_write(self, key: tuple[str, str]) -> Step:
        return next(s for s in self._nodes[key][self._pos[key] :] if _op(s) == "write_config")

    def _settle_units(self) -> None:
        for unit in self.plan.units:
            if self.report.units[unit.id] == "pending" and all(self.status[s] in OK_STEPS for s in unit.steps):
                self.report.units[unit.id] = "done"
        self._progress()

    def _progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._progress_at < 1.0:
            return
        self._progress_at = now
        units = self.report.units.values()
        done = sum(1 for s in units if s in ("done", "unchanged"))
        failed = sum(1 for s in units if s in (*FAILED_UNITS, "rolled_back"))
        left = sum(1 for s in units if s == "pending")
        elapsed = now - self._started_at
        finished = len(self.report.units) - left
        eta = f"{elapsed / finished * left:.0f} s" if finished and left else "-" if left else "0 s"
        self.emit("progress", f"{done} unit(s) done, {failed} failed, {left} left, ETA {eta}")

    # --- the canary gate ---------------------------------------------------------------------------------------

    def _canary_gate(self) -> None:
        canary_units = {s.unit for s in self.plan.steps if _key(s.cluster, s.node) in self._canaries}
        bad = [u for u in canary_units if self.report.units[u] not in ("pending", "done", "unchanged")]
        names = [self._names(k) for k in self._canaries]
        reason = (
            f"unit(s) {', '.join(sorted(bad))} on the canaries did not succeed"
            if bad
            else self.canary_check(names) if self.canary_check is not None else None
        )
        if reason is None:
            self.emit("done", f"canaries {', '.join(n for _c, n in names)} fixed; going on with the other workers")
            self._gate_open = True
            return
        self.report.halted = f"canary check failed: {reason}; the canaries were rolled back, nothing else was touched"
        self.emit("fail", self.report.halted)
        doomed = self._dependents(canary_units)
        self._rollback_units(doomed, None)
        for unit_id, status in self.report.units.items():
            if status == "pending":
                self.report.units[unit_id] = "skipped"
        self._gate_open = True

    # --- failure and rollback ----------------------------------------------------------------------------

    def _fail(self, failure: _Failure) -> None:
        step = failure.step
        if not failure.reason:  # a late result of a unit already rolled back: undo it now
            self._rollback_units({step.unit}, None)
            return
        node_key = _key(step.cluster, step.node)
        status: StepStatus = "stale" if failure.stale else "unknown" if failure.uncertain else "failed"
        self.report.steps[step.id] = self._step_report(step, status, detail=failure.reason)
        self.status[step.id] = status
        self.emit("fail", f"{step.id} {step.node} {step.action}: {status}: {failure.reason}")
        if failure.stale:
            doomed = self._dependents({step.unit})
        else:
            self.stopped.add(node_key)
            if f"{step.cluster}/{step.node}" not in self.report.stopped_nodes:
                self.report.stopped_nodes.append(f"{step.cluster}/{step.node}")
            doomed = self._dependents(
                {step.unit} | {s.unit for s in self.plan.steps if _key(s.cluster, s.node) == node_key}
            )
        self._rollback_units(doomed, failure)

    def _dependents(self, units: set[str]) -> set[str]:
        doomed = set(units)
        growing = True
        while growing:
            extra = {u.id for u in self.plan.units if u.id not in doomed and set(u.depends_on) & doomed}
            doomed |= extra
            growing = bool(extra)
        return doomed

    def _rollback_units(self, doomed: set[str], failure: _Failure | None) -> None:
        entries = [d for d in self.done if d.step.unit in doomed]
        if failure is not None:
            entries += failure.uncertain
        failed = self._rollback(entries)
        for unit_id in doomed:
            if self.report.units.get(unit_id) not in ("pending", "done"):
                continue
            touched = any(d.step.unit == unit_id for d in entries)
            own = failure is not None and unit_id == failure.step.unit
            self.report.units[unit_id] = (
                "rollback_failed"
                if unit_id in failed
                else ("stale" if failure is not None and failure.stale else "failed")
                if own
                else "rolled_back"
                if touched
                else "skipped"
            )
        self.done = [d for d in self.done if d.step.unit not in doomed]
        self._progress()

    def _rollback(self, entries: list[_Done]) -> set[str]:
        """Undo ``entries`` newest first, deferred restarts last; returns units whose rollback failed."""
        failed_units: set[str] = set()
        deferred: list[tuple[_Done, dict[str, Any]]] = []
        for entry in sorted(entries, key=lambda d: d.seq, reverse=True):
            plan = inverse(entry.request, entry.result)
            ok = all(self._rollback_request(entry, request) for request in plan.requests) and not plan.unsure
            if plan.unsure:
                self.report.rollback_errors.append(f"rollback of {entry.step.id} on {entry.step.node}: {plan.note}")
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
        self.touched.add(_key(step.cluster, step.node))
        self.documents.pop(_key(step.cluster, step.node), None)
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
        if current is not None and current.status in ("failed", "unknown", "stale", "rollback_failed"):
            return
        status: StepStatus = "rolled_back" if ok else "rollback_failed"
        self.status[entry.step.id] = status
        self.report.steps[entry.step.id] = self._step_report(entry.step, status, detail=note, result=entry.result)

    # --- steps that do not run -------------------------------------------------------------------------------

    def _unchanged_unit(self, unit_id: str) -> None:
        self.report.units[unit_id] = "unchanged"
        for step in self.plan.steps:
            if step.unit == unit_id:
                self._unchanged(step, "every finding its unit fixes already passes")

    def _unchanged(self, step: Step, reason: str) -> None:
        self.journal.skip(self.report.run_id, step, f"already done: {reason}")
        self.status[step.id] = "unchanged"
        self.report.steps[step.id] = self._step_report(step, "unchanged", detail=reason)
        self.emit("skip", f"{step.id} {step.node} {step.action}: already done ({reason})")

    def _skip(self, step: Step, reason: str) -> None:
        self.journal.skip(self.report.run_id, step, reason)
        self.status[step.id] = "skipped"
        if step.id not in self.report.steps:
            self.report.steps[step.id] = self._step_report(step, "skipped", detail=reason)

    @staticmethod
    def _step_report(
        step: Step, status: StepStatus, *, detail: str = "", result: dict[str, Any] | None = None
    ) -> StepReport:
        return StepReport(step.id, step.unit, step.cluster, step.node, step.action, status, detail, result)

