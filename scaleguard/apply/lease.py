"""The cluster lease: one fix run per cluster at a time, visible to every machine that could start one.

Two operators fixing one cluster at once break each other (one run's rollback removes the certificate
the other just imported). A local lock file would only stop a second run on the same machine, so the
lease lives **on the cluster's master node(s)**, where every run must go anyway: the agent keeps it in
an administrators-only registry key (the lab in its node state) as data — run id, operator, host,
started, expires — and serialises acquisitions on the node.

A run takes the lease on every master of every cluster it may change, in a fixed order, before its first
change (and before the fresh read its drift checks use); a background thread renews it while the run
lasts; it is released at the end, also by ``--undo``, which may take over the lease of the very run it
undoes. A second run refuses at once and names the holder. A lease that is not renewed expires (its
run was killed): ``--break-lease`` removes an expired lease — never a live one — and takes it.
"""

from __future__ import annotations

import getpass
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scaleguard.apply.transport import ActionFailed, OutcomeUnknown, Transport
from scaleguard.collectors.agent.schema import AGENT_SCHEMA

DEFAULT_TTL_S = 300
_PLAIN = re.compile(r"[^A-Za-z0-9 ._@\\-]")


class LeaseHeld(Exception):
    """Another run holds the lease (or it cannot be taken): nothing was changed."""


def plain(text: str, fallback: str) -> str:
    """A name as the node accepts it (letters, digits, ``._@\\-`` and spaces, at most 128)."""
    cleaned = _PLAIN.sub("_", text)[:128].strip()
    return cleaned or fallback


def operator_name() -> str:
    try:
        return plain(getpass.getuser(), "unknown")
    except (KeyError, OSError):
        return "unknown"


def _holder(answer: dict[str, Any]) -> dict[str, Any]:
    holder = answer.get("holder")
    return holder if isinstance(holder, dict) else {}


def describe(holder: dict[str, Any]) -> str:
    state = "expired" if holder.get("expired") else "until"
    return (
        f"run {holder.get('run_id')} by {holder.get('operator')} on {holder.get('host')} "
        f"(since {holder.get('started')}, {state} {holder.get('expires')})"
    )


@dataclass
class ClusterLease:
    """The lease of one run on ``masters`` ((cluster, node) pairs), through its own ``transport``
    (renewals run in a thread of their own, so they never share a channel with the run's actions)."""

    transport: Transport
    masters: list[tuple[str, str]]
    run_id: str
    ttl_s: int = DEFAULT_TTL_S
    operator: str = field(default_factory=operator_name)
    host: str = field(default_factory=lambda: plain(socket.gethostname(), "unknown"))
    on_event: Callable[[str, str], None] | None = None
    held: list[tuple[str, str]] = field(default_factory=list)
    documents: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """Each master as read right after its lease was taken (with ``read_after``): the run's fresh read
    of that node, one round fewer before the first change."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def acquire(self, *, break_expired: bool = False, replaces: str | None = None, read_after: bool = False) -> None:
        """Take the lease on every master, or on none (raises :class:`LeaseHeld` naming the holder)."""
        for cluster, node in sorted(self.masters, key=lambda m: (m[0].lower(), m[1].lower())):
            try:
                answer = self._acquire_one(cluster, node, replaces, read_after)
                if answer.get("acquired") is not True:  # node data: anything but true is "not yours"
                    holder = _holder(answer)
                    if not (break_expired and holder.get("expired") is True):
                        raise LeaseHeld(f"{cluster} is being fixed: {node} holds the lease of {describe(holder)}")
                    self._request(cluster, node, {"op": "lease_break", "holder": holder.get("run_id")})
                    self._emit("lease", f"broke the expired lease of {describe(holder)} on {node}")
                    answer = self._acquire_one(cluster, node, replaces, read_after)
                    if answer.get("acquired") is not True:
                        raise LeaseHeld(f"{cluster}: {node} was leased again meanwhile, by {describe(_holder(answer))}")
            except (ActionFailed, OutcomeUnknown) as exc:
                self.release()
                raise LeaseHeld(f"{cluster}: the lease on {node} cannot be taken: {exc}") from exc
            except LeaseHeld:
                self.release()
                raise
            self.held.append((cluster, node))
            if isinstance(answer.get("collect"), dict):
                self.documents[(cluster.lower(), node.lower())] = answer["collect"]
        self._emit("lease", f"run {self.run_id} holds the lease on {', '.join(n for _c, n in self.held)}")

    def _acquire_one(self, cluster: str, node: str, replaces: str | None, read_after: bool) -> dict[str, Any]:
        request: dict[str, Any] = {
            "op": "lease_acquire",
            "run_id": self.run_id,
            "operator": self.operator,
            "host": self.host,
            "ttl_s": self.ttl_s,
        }
        if replaces:
            request["replaces"] = replaces
        if read_after:
            request["collect"] = {"op": "collect", "schema": AGENT_SCHEMA}
        return self._request(cluster, node, request)

    def _request(self, cluster: str, node: str, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return self.transport.client(cluster, node).request(request)

    def keep_renewed(self) -> None:
        """Renew every ``ttl_s / 3`` seconds until :meth:`release` (a daemon thread)."""
        if self._thread is not None or not self.held:
            return
        self._thread = threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(max(0.5, self.ttl_s / 3)):
            for cluster, node in list(self.held):
                try:
                    self._request(cluster, node, {"op": "lease_renew", "run_id": self.run_id, "ttl_s": self.ttl_s})
                except (ActionFailed, OutcomeUnknown) as exc:
                    self._emit("fail", f"renewing the lease on {node} failed: {exc}")

    def release(self) -> None:
        """Give the lease back wherever it is held (a failure is reported: it expires on its own)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for cluster, node in reversed(self.held):
            try:
                self._request(cluster, node, {"op": "lease_release", "run_id": self.run_id})
            except (ActionFailed, OutcomeUnknown) as exc:
                self._emit("fail", f"releasing the lease on {node} failed (it expires on its own): {exc}")
        if self.held:
            self._emit("lease", f"run {self.run_id} released the lease")
        self.held = []

    def _emit(self, kind: str, text: str) -> None:
        if self.on_event is not None:
            self.on_event(kind, text)
