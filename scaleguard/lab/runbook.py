"""A runbook run on a lab node: what ``runbook_driver.ps1`` does, in Python, against the node's state.

The lab runs no PowerShell. It accepts a script only when everything but its data line is byte for byte
what ``fix --emit-runbook`` writes for the shipped agent (:func:`parse_runbook`), and then does what the
driver does with that data: for each step, fill in values earlier steps returned, look at the node
(target already there → ``done``; the plan's "before" no longer there → ``stale``, and the node stops),
apply what is left through the same handlers every agent request reaches (faults, journal and service
timing included), and answer the one JSON document the driver prints, with its exit code. Every check
mirrors a function of the driver, and refuses where that function would fail: never kinder than Windows.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from scaleguard.apply.runbook_script import RESULT_SCHEMA, RunbookData, RunbookStep
from scaleguard.lab import actions
from scaleguard.lab.dispatch import dispatch
from scaleguard.lab.state import ActionError, LabNode, PartialChangeError, Role
from scaleguard.rules.account import account_matches

Verdict = tuple[str, str, dict[str, Any] | None]
TODO: Verdict = ("todo", "", None)
_BLANK = {"reason": None, "result": None, "error": None, "partial": False}  # a step entry's other fields
_SERVICE = {
    "master": re.compile(r"SSISScaleOutMaster1[4-9]0", re.I),
    "worker": re.compile(r"SSISScaleOutWorker1[4-9]0", re.I),
}


class RunbookRefused(ActionError):
    """The runbook could not start on this node (the driver's exit code 2)."""


class _Waits(ActionError):
    """A value a step needs comes from a step that, with -CheckOnly, did not run (``$RunbookWaits``)."""


def run_runbook(node: LabNode, data: RunbookData, *, check_only: bool = False) -> tuple[dict[str, Any], int]:
    """(the driver's JSON document, its exit code: 0 all done or applied, 1 a step stale or failed).

    ``check_only`` is the script's ``-CheckOnly`` switch (the WinRM path cannot pass it: the bootstrap's
    argument goes to the runbook's ignored remaining arguments, as on Windows)."""
    wanted, name = data.node.upper(), node.name.upper()
    if _is_address(wanted) or (wanted != name and not wanted.startswith(name + ".")):
        # Test-ThisNode: %COMPUTERNAME% and Dns.GetHostName() are names, never an address
        raise RunbookRefused(f"this runbook is for {data.node}, not {node.name.upper()}")
    outcomes: dict[str, dict[str, Any]] = {}
    reported: list[dict[str, Any]] = []
    stopped: str | None = None
    for step in data.steps:
        if stopped is not None:
            reported.append({"id": step.id, "status": "skipped", **_BLANK, "reason": stopped})
            continue
        entry = _run_step(node, step, outcomes, check_only)
        entry.update(reason=_limit(entry["reason"], 2000), error=_limit(entry["error"], 4000))
        outcomes[step.id] = entry
        reported.append(entry)
        if entry["status"] in ("stale", "failed"):
            stopped = f"not run: {step.id} before it is {entry['status']}"
    document = {
        "format": RESULT_SCHEMA, "plan_sha256": data.plan_sha256, "run_id": data.run_id, "cluster": data.cluster,
        "node": data.node, "wave": data.wave, "computer": node.name.upper(), "check_only": check_only,
        "steps": reported,
    }
    return document, 0 if stopped is None else 1


def _run_step(
    node: LabNode, step: RunbookStep, outcomes: dict[str, dict[str, Any]], check_only: bool
) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": step.id, "status": "failed", **_BLANK}
    try:
        request: dict[str, Any] = dict(step.request)
        check = step.check.model_dump()
        if step.service_role is not None:
            request["name"] = _service_name(node, step.service_role)
        for field, ref in step.refs.items():
            value = _ref_value(ref.from_step, ref.field, outcomes)
            request[field] = value
            if field in check:
                check[field] = value
        verdict, reason, found = _verdict(node, check, request, outcomes)
        if verdict in ("done", "stale"):
            return {**entry, "status": verdict, "reason": reason, "result": found}
        if check_only:
            return {**entry, "status": "pending", "reason": "would be applied"}
        entry["result"] = dispatch(node, request)
        entry["status"] = "applied"
        if check["kind"] == "restart":
            with node.lock:
                node.runbook_marks.add(str(check["mark"]))  # Set-RestartMark
    except _Waits as exc:
        entry.update(status="pending", reason=str(exc))
    except PartialChangeError as exc:
        entry.update(error=str(exc), partial=True, result=exc.result)
    except ActionError as exc:
        entry["error"] = str(exc)
    return entry


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _limit(text: str | None, most: int) -> str | None:
    """``Limit-RunbookText``: a reason or error quoting node text stays within what the import accepts."""
    return text if text is None or len(text) <= most else text[:most] + " [cut]"


def _ref_value(from_step: str, field: str, outcomes: dict[str, dict[str, Any]]) -> str:
    """``Get-RefValue``."""
    if outcomes.get(from_step, {}).get("status") == "pending":
        raise _Waits(f"it needs the {field} of {from_step}, which is made when the runbook runs")
    result = outcomes.get(from_step, {}).get("result")
    if not isinstance(result, dict) or field not in result:
        raise ActionError(f"it needs the {field} of {from_step}, which this runbook did not produce")
    return str(result[field])


def _service_name(node: LabNode, role: str) -> str:
    """``Find-ServiceName``: the one Scale Out service of that role (unknown services are refused)."""
    if node.services is None:
        raise ActionError(f"the lab does not know the services of {node.name} (not in the evidence)")
    names = [s.name for s in node.services if _SERVICE[role].fullmatch(s.name)]
    if len(names) != 1:
        raise ActionError(f"this node has {len(names)} Scale Out {role} services; the plan must name one")
    return names[0]


def _changed(outcome: dict[str, Any]) -> bool:
    """``Test-Changed``."""
    if outcome.get("status") == "pending":
        return True
    if outcome.get("status") != "applied":
        return False
    result = outcome.get("result")
    return bool(result.get("changed", True)) if isinstance(result, dict) else True


def _created(node: LabNode, check: dict[str, Any], request: dict[str, Any], outcomes: Any) -> Verdict:
    store = actions.store_name(check)
    found = [c for c in node.store(store) if c.friendly_name == check["friendly_name"] and c.key is not None]
    if not found:
        return TODO
    if len(found) > 1:
        return "stale", f"LocalMachine\\{store} holds {len(found)} certificates named '{check['friendly_name']}'", None
    made = actions.cert_document(found[0], store)
    return "done", f"this step made {made['thumbprint']} in LocalMachine\\{store} before", made


def _present(node: LabNode, check: dict[str, Any], request: dict[str, Any], outcomes: Any) -> Verdict:
    store, thumb = actions.store_name(check), actions.thumbprint_field(check)
    if node.find_cert(store, thumb) is not None:
        return "done", f"LocalMachine\\{store} already holds {thumb}", None
    return TODO


def _absent(node: LabNode, check: dict[str, Any], request: dict[str, Any], outcomes: Any) -> Verdict:
    store, thumb = actions.store_name(check), actions.thumbprint_field(check)
    if node.find_cert(store, thumb) is None:
        return "done", f"LocalMachine\\{store} no longer holds {thumb}", None
    return TODO


def _key_readable(node: LabNode, check: dict[str, Any], request: dict[str, Any], outcomes: Any) -> Verdict:
    """``Test-KeyReadable``: a key the lab cannot open or whose ACL it does not know is left to the action."""
    try:
        cert = node.find_cert(actions.store_name(check), actions.thumbprint_field(check))
    except ActionError:
        return TODO
    key = cert.usable_key if cert is not None and cert.key_known else None
    account = str(check.get("account") or "")
    if key is None or key.readers is None or any(account_matches(d, account) for d in key.denied):
        return TODO
    if any(account_matches(r, account) for r in key.readers):
        return "done", f"{account} can already read the key", None
    return TODO


def _setting(node: LabNode, check: dict[str, Any], request: dict[str, Any], outcomes: Any) -> Verdict:
    role: Role = "master" if check["role"] == "master" else "worker"
    try:
        _path, _data, raw = actions.config_setting(node, role, str(check["setting"]))
    except ActionError as exc:
        return "stale", f"the {role} settings file could not be read: {exc}", None
    current, value = raw.strip(), check.get("value")
    if current == value:
        return "done", f"{check['setting']} is already '{value}'", None
    expected = str(check.get("expected") or "")
    if check.get("expected_known") and current != expected.strip():
        return "stale", f"{check['setting']} was '{expected}' when planned, now '{current}'", None
    return TODO


def _binding(node: LabNode, check: dict[str, Any], request: dict[str, Any], outcomes: Any) -> Verdict:
    ip_port, wanted = str(check["ip_port"]), actions.thumbprint_field(check, "cert_hash")
    store = str(check.get("cert_store") or "MY")
    if node.bindings is None:
        raise ActionError(f"the lab does not know the bindings of {node.name} (not in the evidence)")
    now = node.binding(ip_port)
    now_hash = (now.cert_hash or "") if now is not None else ""
    if (
        now is not None
        and now_hash == wanted
        and (now.store or "MY").lower() == store.lower()
        and (now.app_id or "").lower() == str(check["app_id"]).lower()
    ):
        return "done", f"{ip_port} already serves {wanted} from {store}", None
    was = str(check.get("expected_hash") or "")
    if check.get("expected_known") and was != now_hash and now_hash != wanted:
        return "stale", f"{ip_port} served '{was}' when planned, now '{now_hash}'", None
    return TODO


def _schannel(node: LabNode, check: dict[str, Any], request: dict[str, Any], outcomes: Any) -> Verdict:
    if node.schannel is None:
        return TODO  # Get-SchannelValue cannot read the key: the action itself then says why
    name = str(check["name"])
    current = getattr(node.schannel, actions.SCHANNEL_VALUES[name])
    if current == check["value"]:
        return "done", f"{name} is already {current}", None
    if check.get("expected_known") and current != check.get("expected"):
        return "stale", f"{name} was '{check.get('expected')}' when planned, now '{current}'", None
    return TODO


def _start_mode(node: LabNode, check: dict[str, Any], request: dict[str, Any], outcomes: Any) -> Verdict:
    name = str(request.get("name") or "")
    service = node.service(name)
    now = service.start_mode if service is not None else None
    if now is None:
        return TODO
    if actions.START_MODES.get(now.lower()) == actions.START_MODES.get(str(check["mode"]).lower()):
        return "done", f"{name} already starts {now}", None
    expected = str(check.get("expected") or "")
    if expected and actions.START_MODES.get(now.lower()) != actions.START_MODES.get(expected.lower()):
        return "stale", f"{name} started {expected} when planned, now {now}", None
    return TODO


def _running(node: LabNode, check: dict[str, Any], request: dict[str, Any], outcomes: Any) -> Verdict:
    name = str(request.get("name") or "")
    service = node.service(name) if node.services is not None else None
    if service is None:
        raise ActionError(f"Cannot find any service with service name '{name}'.")
    if service.state == "Running":
        return "done", f"{service.name} already runs", None
    return TODO


def _restart(node: LabNode, check: dict[str, Any], request: dict[str, Any], outcomes: Any) -> Verdict:
    if any(step in outcomes and _changed(outcomes[step]) for step in check.get("after") or []):
        return TODO
    if check.get("unit_changed"):
        if check.get("mark") in node.runbook_marks:
            return "done", "this step restarted the service after those changes already", None
        return TODO
    return "done", "nothing else in its unit changed on this node", None


_CHECKS: dict[str, Callable[[LabNode, dict[str, Any], dict[str, Any], Any], Verdict]] = {
    "none": lambda _node, _check, _request, _outcomes: TODO,
    "created": _created,
    "present": _present,
    "absent": _absent,
    "key_readable": _key_readable,
    "setting": _setting,
    "binding": _binding,
    "schannel": _schannel,
    "start_mode": _start_mode,
    "running": _running,
    "restart": _restart,
}


def _verdict(node: LabNode, check: dict[str, Any], request: dict[str, Any], outcomes: Any) -> Verdict:
    """``Get-StepVerdict``, reading the node under its lock as the agent reads it in one run."""
    with node.lock:
        return _CHECKS[str(check["kind"])](node, check, request, outcomes)
