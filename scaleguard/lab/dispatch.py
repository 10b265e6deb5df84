"""Which handler answers which agent request: one explicit table, read top to bottom.

A request reaches a lab node as JSON with an ``"op"``. ``collect`` is answered by
:mod:`scaleguard.lab.agent_collect` (what ``collect.ps1`` prints), ``batch`` here (several actions in one
round), every other op by :mod:`scaleguard.lab.actions` (what ``actions.ps1`` does). A handler runs under
``node.lock``, changes the node in place and raises :class:`ActionError` for a failure the agent would
report (exit code 1 with the message on stderr).
"""

from __future__ import annotations

import time
from typing import Any

from scaleguard.lab import actions, agent_collect
from scaleguard.lab.state import SECRET_KEY, ActionError, ActionHandler, LabNode, PartialChangeError

_ACTIONS: dict[str, ActionHandler] = {
    "read_file": actions.read_file,
    "write_config": actions.write_config,
    "set_config_setting": actions.set_config_setting,
    "restore_file": actions.restore_file,
    "create_certificate": actions.create_certificate,
    "import_certificate": actions.import_certificate,
    "import_pfx": actions.import_pfx,
    "copy_certificate": actions.copy_certificate,
    "remove_certificate": actions.remove_certificate,
    "restore_certificate": actions.restore_certificate,
    "grant_key_read": actions.grant_key_read,
    "revoke_key_read": actions.revoke_key_read,
    "set_binding": actions.set_binding,
    "delete_binding": actions.delete_binding,
    "set_service_start_mode": actions.set_service_start_mode,
    "start_service": actions.start_service,
    "stop_service": actions.stop_service,
    "restart_service": actions.restart_service,
    "set_schannel_value": actions.set_schannel_value,
    "delete_schannel_value": actions.delete_schannel_value,
}
_LEASE: dict[str, ActionHandler] = {  # not journaled: they only keep the lease
    "lease_acquire": actions.lease_acquire,
    "lease_renew": actions.lease_renew,
    "lease_release": actions.lease_release,
    "lease_break": actions.lease_break,
}
HANDLERS: dict[str, ActionHandler] = {
    "collect": agent_collect.collect,
    **{op: actions.lab_action(op, handler) for op, handler in _ACTIONS.items()},
    **{op: actions.lab_action(op, handler, journaled=False) for op, handler in _LEASE.items()},
}
BATCH_MAX = 64
NOT_BATCHED = ("batch", "collect", *_LEASE)


def batch(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """Consecutive actions of one node in one agent round, in order, stopping at the first failure.

    Every action is checked to be one the agent knows before any runs; each answer (or the error that
    stopped the batch) is reported in order, so the caller journals each action as if sent alone. An
    action that waits for a service delays the ones after it, as the agent runs them one by one. With a
    ``collect`` request the node is read after the actions and the agent document comes back too."""
    items = request.get("actions")
    if not isinstance(items, list) or not items or len(items) > BATCH_MAX:
        raise ActionError(f"'actions' must be a list of 1-{BATCH_MAX} requests")
    for item in items:
        op = item.get("op") if isinstance(item, dict) else None
        if not isinstance(op, str) or op in NOT_BATCHED or op not in HANDLERS:
            raise ActionError(f"a batch cannot hold {op!r}")
    read = request.get("collect")
    if read is not None and (not isinstance(read, dict) or read.get("op") != "collect"):
        raise ActionError("'collect' must be a collect request")
    results: list[dict[str, Any]] = []
    secret = request.get(SECRET_KEY)  # $ScaleguardSecret is one for the whole round; never from the JSON
    for listed in items:
        item = {k: v for k, v in listed.items() if k != SECRET_KEY}
        if isinstance(secret, str):
            item[SECRET_KEY] = secret
        try:
            results.append({"ok": True, "result": HANDLERS[item["op"]](node, item)})
        except PartialChangeError as exc:  # the agent's batch entry says so, with what was there before
            results.append({"ok": False, "error": str(exc), "partial": True, "result": exc.result})
            break
        except ActionError as exc:
            results.append({"ok": False, "error": str(exc)})
            break
    if read is None:
        return {"results": results}
    # a node's last round reads the node right after (one PowerShell run on Windows: apply/transport.py),
    # so only once its actions are over: a restart has the service running again (the lock stays held,
    # as the agent run is one program)
    _sleep_until(node.busy_until)
    return {"results": results, "collect": HANDLERS["collect"](node, read)}


HANDLERS["batch"] = batch


def dispatch(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """Run one agent request against ``node`` and answer when the agent would: a request that waits for
    a service returns once it got there (the wait is outside the node's lock, as on Windows)."""
    try:
        answer, ends_at = dispatch_timed(node, request)
    except ActionError as exc:
        _sleep_until(exc.ends_at)
        raise
    _sleep_until(ends_at)
    return answer


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def dispatch_timed(node: LabNode, request: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The answer, and the monotonic time the agent would give it: a request that waits for a service
    ends when the service gets there (0.0: no wait). A refusal carries its time in ``ends_at``."""
    op = request.get("op")
    handler = HANDLERS.get(op) if isinstance(op, str) else None
    if handler is None:
        raise ActionError(f"unknown op {op!r}")
    with node.lock:
        node.busy_until = 0.0
        try:
            return handler(node, request), node.busy_until
        except ActionError as exc:
            exc.ends_at = max(exc.ends_at, node.busy_until)
            raise
