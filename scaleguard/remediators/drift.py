"""Drift: does a planned step still make sense on the node as it is now? (pure; plan semantics)

A plan is a set of intended changes, not a script. Just before a step runs, the executor holds a fresh
collection of its node (taken after the cluster lease) and asks :func:`check`:

- ``done``: the step's target state already holds (the certificate is in Root, the setting has the
  value, the binding serves the certificate...). The step is skipped and counts as succeeded.
- ``stale``: the state the plan recorded as "before" (:attr:`Step.expect`) no longer holds and the
  target does not either — someone changed the node since the plan was made. The step's unit stops
  without touching anything more, and the reason says what changed.
- ``todo``: run it.

A whole unit is already done when every finding it was planned to fix passes now (:func:`unit_holds`):
re-applying an applied plan then changes nothing, not even a new certificate or a restart. Restarts are
decided by the executor (a restart runs only when something else in its unit changed on that node).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from scaleguard.findings.model import Finding, Status
from scaleguard.remediators.actions import AGENT_OP
from scaleguard.remediators.model import (
    BindingWas,
    SchannelWas,
    SettingWas,
    StartModeWas,
    Step,
    StepRef,
    Unit,
)
from scaleguard.rules.account import account_matches
from scaleguard.rules.thumbprint import comparable
from scaleguard.snapshot.model import Certificate, CollectionState, NodeSnapshot, SslBinding

Verdict = Literal["todo", "done", "stale"]
Resolver = Callable[[StepRef], str | None]
"""The value a step reference stands for in this run (None: the step it names has not produced it)."""


@dataclass(frozen=True)
class Drift:
    verdict: Verdict
    reason: str = ""


TODO = Drift("todo")
_MODES = {"auto": "auto", "automatic": "auto", "manual": "manual", "disabled": "disabled"}


def unit_holds(unit: Unit, findings: list[Finding]) -> bool:
    """Every finding ``unit`` was planned to fix (``POLICY@cluster/node``) passes in ``findings`` (a fresh
    evaluation)."""
    if not unit.findings:
        return False
    status = {f"{f.policy}@{f.cluster}/{f.node}".lower(): f.status for f in findings}
    return all(status.get(key.lower()) is Status.PASS for key in unit.findings)


def check(step: Step, params: Mapping[str, Any], node: NodeSnapshot | None, resolve: Resolver) -> Drift:
    """The verdict for ``step`` (its references already resolved into ``params``) on ``node``."""
    if node is None:
        return Drift("stale", f"{step.node} was not in the fresh collection, so its state is unknown")
    if node.collection.state is not CollectionState.OK:
        return Drift("stale", f"{step.node} could not be read ({node.collection.reason or node.collection.state})")
    handler = _CHECKS.get(AGENT_OP.get(step.action, step.action))
    if handler is None:
        return TODO
    return handler(step, params, node, resolve)


def _text(value: Any) -> str:
    return str(value) if value is not None else ""


def _thumb(value: Any) -> str:
    return comparable(_text(value))


def _cert(node: NodeSnapshot, store: str, thumbprint: str) -> Certificate | None:
    found = node.root if store.lower() == "root" else node.my if store.lower() == "my" else None
    if found is None:
        return None
    return next((c for c in found.certificates if c.thumbprint == _thumb(thumbprint)), None)


def _store_read(node: NodeSnapshot, store: str) -> bool:
    return (node.root if store.lower() == "root" else node.my) is not None


def _import(step: Step, params: Mapping[str, Any], node: NodeSnapshot, resolve: Resolver) -> Drift:
    store = _text(params.get("store") or params.get("to_store"))
    if _cert(node, store, _text(params.get("thumbprint"))) is not None:
        return Drift("done", f"LocalMachine\\{store} already holds {_thumb(params.get('thumbprint'))}")
    return TODO


def _remove(step: Step, params: Mapping[str, Any], node: NodeSnapshot, resolve: Resolver) -> Drift:
    store = _text(params.get("store"))
    if _store_read(node, store) and _cert(node, store, _text(params.get("thumbprint"))) is None:
        return Drift("done", f"LocalMachine\\{store} no longer holds {_thumb(params.get('thumbprint'))}")
    return TODO


def _binding(node: NodeSnapshot, ip_port: str) -> SslBinding | None:
    return next((b for b in node.bindings or [] if b.ip_port.lower() == ip_port.lower()), None)


def _expected(value: str | StepRef | None, resolve: Resolver) -> tuple[bool, str | None]:
    """(known, value): a reference to a certificate this run has not made is not known."""
    if isinstance(value, StepRef):
        resolved = resolve(value)
        return resolved is not None, resolved
    return True, value


def _set_binding(step: Step, params: Mapping[str, Any], node: NodeSnapshot, resolve: Resolver) -> Drift:
    ip_port, target = _text(params.get("ip_port")), _thumb(params.get("cert_hash"))
    if node.bindings is None:
        return TODO
    current = _binding(node, ip_port)
    store = _text(params.get("cert_store")) or "MY"
    if (
        current is not None
        and current.cert_hash == target
        and (current.cert_store or "MY").lower() == store.lower()
        and _text(current.app_id).lower() == _text(params.get("app_id")).lower()
    ):
        return Drift("done", f"{ip_port} already serves {target} from {store}")
    if isinstance(step.expect, BindingWas):
        known, was = _expected(step.expect.cert_hash, resolve)
        now = current.cert_hash if current is not None else None
        if known and _thumb(was) != _thumb(now) and _thumb(now) != target:
            return Drift("stale", f"{ip_port} served {was or 'nothing'} when planned, now {now or 'nothing'}")
    return TODO


def _delete_binding(step: Step, params: Mapping[str, Any], node: NodeSnapshot, resolve: Resolver) -> Drift:
    if node.bindings is not None and _binding(node, _text(params.get("ip_port"))) is None:
        return Drift("done", f"there is no binding on {params.get('ip_port')}")
    return TODO


def _setting(node: NodeSnapshot, role: str, name: str) -> tuple[bool, str | None]:
    config = node.master_config if role == "master" else node.worker_config
    if config is None or config.parse_error:
        return False, None
    value = next((v for k, v in config.settings.items() if k.lower() == name.lower()), None)
    return True, value


def _write_config(step: Step, params: Mapping[str, Any], node: NodeSnapshot, resolve: Resolver) -> Drift:
    role, setting, target = _text(params.get("role")), _text(params.get("setting")), _text(params.get("value"))
    readable, current = _setting(node, role, setting)
    if not readable:
        return Drift("stale", f"the {role} settings file of {step.node} could not be read")
    if current == target:
        return Drift("done", f"{setting} is already {target!r}")
    if isinstance(step.expect, SettingWas):
        known, was = _expected(step.expect.value, resolve)
        if known and current != was:
            return Drift("stale", f"{setting} was {was!r} when planned, now {current!r}")
    return TODO


def _grant(step: Step, params: Mapping[str, Any], node: NodeSnapshot, resolve: Resolver) -> Drift:
    cert = _cert(node, _text(params.get("store")), _text(params.get("thumbprint")))
    account = _text(params.get("account"))
    if cert is not None and cert.key_readers is not None and any(account_matches(r, account) for r in cert.key_readers):
        return Drift("done", f"{account} can already read the key")
    return TODO


def _revoke(step: Step, params: Mapping[str, Any], node: NodeSnapshot, resolve: Resolver) -> Drift:
    cert = _cert(node, _text(params.get("store")), _text(params.get("thumbprint")))
    account = _text(params.get("account"))
    if cert is not None and cert.key_readers is not None and not any(
        account_matches(r, account) for r in cert.key_readers
    ):
        return Drift("done", f"{account} cannot read the key")
    return TODO


def _service_state(node: NodeSnapshot, name: str) -> tuple[str | None, str | None] | None:
    service = next((s for s in node.services or [] if s.name.lower() == name.lower()), None)
    if service is None:
        return None
    return (service.state or "").lower() or None, _MODES.get((service.start_mode or "").lower())


def _start_mode(step: Step, params: Mapping[str, Any], node: NodeSnapshot, resolve: Resolver) -> Drift:
    name = _text(params.get("name"))
    found = _service_state(node, name)
    target = _MODES.get(_text(params.get("mode")).lower())
    if found is None:
        return TODO
    if found[1] == target:
        return Drift("done", f"{name} already starts {params.get('mode')}")
    if isinstance(step.expect, StartModeWas) and step.expect.mode is not None:
        was = _MODES.get(step.expect.mode.lower())
        if found[1] != was:
            return Drift("stale", f"{name} started {step.expect.mode} when planned, now {found[1] or 'unknown'}")
    return TODO


def _start(step: Step, params: Mapping[str, Any], node: NodeSnapshot, resolve: Resolver) -> Drift:
    found = _service_state(node, _text(params.get("name")))
    if found is not None and found[0] == "running":
        return Drift("done", f"{params.get('name')} already runs")
    return TODO


def _stop(step: Step, params: Mapping[str, Any], node: NodeSnapshot, resolve: Resolver) -> Drift:
    found = _service_state(node, _text(params.get("name")))
    if found is not None and found[0] == "stopped":
        return Drift("done", f"{params.get('name')} is already stopped")
    return TODO


_SCHANNEL_FIELDS = {
    "ClientAuthTrustMode": "client_auth_trust_mode",
    "SendTrustedIssuerList": "send_trusted_issuer_list",
}


def _schannel_value(node: NodeSnapshot, name: str) -> tuple[bool, int | None]:
    field = _SCHANNEL_FIELDS.get(name)
    if node.schannel is None or field is None:
        return False, None
    value: int | None = getattr(node.schannel, field)
    return True, value


def _set_schannel(step: Step, params: Mapping[str, Any], node: NodeSnapshot, resolve: Resolver) -> Drift:
    name = _text(params.get("name"))
    readable, current = _schannel_value(node, name)
    if not readable:
        return TODO
    if current == params.get("value"):
        return Drift("done", f"{name} is already {current}")
    if isinstance(step.expect, SchannelWas) and current != step.expect.value:
        return Drift("stale", f"{name} was {step.expect.value} when planned, now {current}")
    return TODO


def _delete_schannel(step: Step, params: Mapping[str, Any], node: NodeSnapshot, resolve: Resolver) -> Drift:
    readable, current = _schannel_value(node, _text(params.get("name")))
    if readable and current is None:
        return Drift("done", f"there is no {params.get('name')} value")
    return TODO


_Check = Callable[[Step, Mapping[str, Any], NodeSnapshot, Resolver], Drift]
_CHECKS: dict[str, _Check] = {
    "import_certificate": _import,
    "import_pfx": _import,
    "copy_certificate": _import,
    "remove_certificate": _remove,
    "set_binding": _set_binding,
    "delete_binding": _delete_binding,
    "write_config": _write_config,
    "grant_key_read": _grant,
    "revoke_key_read": _revoke,
    "set_service_start_mode": _start_mode,
    "start_service": _start,
    "stop_service": _stop,
    "set_schannel_value": _set_schannel,
    "delete_schannel_value": _delete_schannel,
}
