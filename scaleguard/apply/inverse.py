"""What undoes an action, computed from the request sent and the answer the node gave (pure).

Every action reports what was there before (the previous binding, the previous start mode, the previous
SCHANNEL value or its absence, whether a certificate was already present, where the backup of an edited
file is), so its inverse restores exactly that and nothing more: importing a certificate that was
already there is undone by doing nothing, a SCHANNEL value that was absent is deleted again.

Restarts are special: undoing a restart means restarting again *after* everything else on the node is
back, so the service picks up the restored configuration. They are returned as *deferred* and run last.

When the answer never arrived (the run was interrupted mid-action), :func:`inverse_unknown` falls back to
what the request alone allows: a file is restored if its backup exists, a binding is put back as the plan
saw it. Anything that cannot be undone blindly is reported, never guessed.

The yes/no fields of an answer (:data:`ANSWER_FLAGS`) decide whether there is anything to undo, so they are
read strictly: the agent writes each from a boolean expression, and anything but JSON ``true``/``false``
is not its answer. The executor refuses such an answer when it arrives (an unknown outcome, rolled back);
a journal edited since makes the inverse :attr:`Inverse.unsure`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Inverse:
    requests: list[dict[str, Any]] = field(default_factory=list)
    deferred: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    unsure: bool = False
    """The action was done but its answer does not say what it replaced: whatever this does, the undo
    cannot be called complete."""


ANSWER_FLAGS: dict[str, tuple[str, ...]] = {
    "import_certificate": ("already_present",),
    "import_pfx": ("already_present",),
    "copy_certificate": ("already_present",),
    "restore_certificate": ("already_present",),
    "remove_certificate": ("removed",),
    "write_config": ("changed",),
    "set_config_setting": ("changed",),
    "grant_key_read": ("already",),
    "revoke_key_read": ("revoked",),
    "start_service": ("was_running",),
    "stop_service": ("was_running",),
    "restart_service": ("restarted",),
}
"""The yes/no fields every answer to each operation carries (a removal that removed something also says
``had_key`` and ``key_deleted``)."""

_SAYS_WHAT_WAS = frozenset(
    {"set_binding", "delete_binding", "set_service_start_mode", "set_schannel_value", "delete_schannel_value"}
)
"""Operations whose answer names what was there before as ``previous`` (null: nothing was)."""


def answer_problems(op: str, result: dict[str, Any]) -> list[str]:
    """Why a node's answer to ``op`` is not one its undo can read: a yes/no field that is not true or false,
    or no ``previous`` where the operation replaces something."""
    names = ANSWER_FLAGS.get(op, ())
    if op == "remove_certificate" and result.get("removed") is True:
        names += ("had_key", "key_deleted")
    problems = [f"{name} is {_shown(result.get(name))}, not true or false" for name in names
                if not isinstance(result.get(name), bool)]
    if op in _SAYS_WHAT_WAS and "previous" not in result:
        problems.append("it does not say what was there before (previous)")
    return problems


def _shown(value: Any) -> str:
    return "missing" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"


def _flag(result: dict[str, Any], name: str) -> bool:
    """A yes/no field of an answer; anything else means the answer does not say (see :func:`inverse`)."""
    value = result[name]
    if not isinstance(value, bool):
        raise TypeError(f"{name} is not true or false")
    return value


def inverse(request: dict[str, Any], result: dict[str, Any] | None) -> Inverse:
    """The requests that undo ``request`` given its ``result`` (None: the outcome is unknown)."""
    if result is None:
        return inverse_unknown(request)
    op = request.get("op")
    handler = _INVERSES.get(str(op))
    if handler is None:
        return Inverse(note=f"{op} is not undone")
    try:
        return handler(request, result)
    except (KeyError, TypeError, AttributeError):  # node data: the answer does not say what was there before
        blind = inverse_unknown(request)
        return replace(blind, note=f"the answer to {op} does not say what it replaced; {blind.note}", unsure=True)


def _removal(store: Any, thumbprint: Any, *, delete_key: bool) -> dict[str, Any]:
    """The request that takes out a certificate the request put in (with its key only when it made the key)."""
    return {"op": "remove_certificate", "store": store, "thumbprint": thumbprint, "delete_key": delete_key}


def _create(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    """The new certificate out again, with its key. A move to Root that failed half-way (a partial change)
    answers with the store the certificate was left in (My): that copy goes too."""
    left_in = result.get("store") if str(result.get("store")).lower() in ("root", "my") else None
    stores = {str(s).lower(): s for s in (left_in, request["store"]) if s}
    return Inverse([_removal(store, result["thumbprint"], delete_key=True) for store in stores.values()])


def _import(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    """An import, a copy or a certificate restored from its backup: taken out again unless it was there."""
    if _flag(result, "already_present"):
        return Inverse(note="the certificate was already there")
    store = request.get("store") or request.get("to_store")
    return Inverse([_removal(store, result["thumbprint"], delete_key=request.get("op") == "import_pfx")])


def _remove(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    if not _flag(result, "removed"):
        return Inverse(note="nothing was removed")
    if _flag(result, "key_deleted"):
        return Inverse(note="the certificate was deleted with its key; it cannot be restored")
    if not request.get("backup_name"):
        return Inverse(note="no backup was made")
    return Inverse(
        [
            {
                "op": "restore_certificate",
                "store": request["store"],
                "thumbprint": result["thumbprint"],
                "backup_name": request["backup_name"],
                "backup_sha256": result.get("backup_sha256"),
                "had_key": _flag(result, "had_key"),
            }
        ]
    )


def _binding(previous: dict[str, Any] | None, ip_port: str) -> dict[str, Any]:
    """The request that puts ``previous`` back. A binding without SslCertStoreName (netsh shows "(null)",
    HTTP.sys uses MY) is restored by leaving ``cert_store`` out: the agent refuses a null store."""
    if previous is None:
        return {"op": "delete_binding", "ip_port": ip_port}
    request = {
        "op": "set_binding",
        "ip_port": previous["ip_port"],
        "cert_hash": previous["cert_hash"],
        "app_id": previous["app_id"],
    }
    if previous.get("cert_store"):
        request["cert_store"] = previous["cert_store"]
    return request


def _set_binding(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    return Inverse([_binding(result["previous"], request["ip_port"])])


def _delete_binding(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    previous = result["previous"]
    return Inverse([_binding(previous, request["ip_port"])]) if previous else Inverse(note="there was no binding")


def _write_config(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    if not _flag(result, "changed") or not request.get("backup_name"):
        return Inverse(note="the file was not changed")
    return _restore(request["path"], request, result)


def _set_setting(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    """A runbook's edit on the node: the node found the file itself, so its path is in the answer."""
    if not _flag(result, "changed") or not request.get("backup_name") or not result.get("path"):
        return Inverse(note="the file was not changed")
    return _restore(result["path"], request, result)


def _restore(path: Any, request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    backup_sha256 = result.get("backup_sha256") or result.get("before_sha256")
    return Inverse(
        [
            {
                "op": "restore_file",
                "path": path,
                "backup_name": request["backup_name"],
                "backup_sha256": backup_sha256,
                "expected_sha256": result.get("after_sha256"),
            }
        ]
    )


def _grant(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    if _flag(result, "already"):
        return Inverse(note="the account could already read the key")
    return Inverse([{**request, "op": "revoke_key_read"}])


def _revoke(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    if not _flag(result, "revoked"):
        return Inverse(note="nothing was revoked")
    return Inverse([{**request, "op": "grant_key_read"}])


_MODES = {"auto": "auto", "automatic": "auto", "manual": "manual", "disabled": "disabled"}


def _start_mode(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    previous = result["previous"]
    wanted = _MODES.get(str(request.get("mode", "")).lower())
    if not previous or _MODES.get(str(previous).lower()) == wanted:
        return Inverse(note="the start mode was already that")
    return Inverse([{"op": "set_service_start_mode", "name": request["name"], "mode": previous}])


def _start(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    if _flag(result, "was_running"):
        return Inverse(note="the service was already running")
    return Inverse([{"op": "stop_service", "name": request["name"]}])


def _stop(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    if not _flag(result, "was_running"):
        return Inverse(note="the service was not running")
    return Inverse([{"op": "start_service", "name": request["name"]}])


def _restart(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    if not _flag(result, "restarted"):
        return Inverse(note="the service was not running, so it was not restarted")
    return Inverse(deferred=[{"op": "restart_service", "name": request["name"]}])


def _schannel_previous(request: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The request that puts a SCHANNEL value back as the node reported it (absent: deleted)."""
    previous = result["previous"]
    if previous is None:
        return {"op": "delete_schannel_value", "name": request["name"]}
    return {"op": "set_schannel_value", "name": request["name"], "value": previous}


def _set_schannel(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    if result["previous"] == request.get("value"):
        return Inverse(note="the value was already that")
    return Inverse([_schannel_previous(request, result)])


def _delete_schannel(request: dict[str, Any], result: dict[str, Any]) -> Inverse:
    if result["previous"] is None:
        return Inverse(note="there was no value")
    return Inverse([_schannel_previous(request, result)])


_INVERSES = {
    "create_certificate": _create,
    "import_certificate": _import,
    "import_pfx": _import,
    "copy_certificate": _import,
    "remove_certificate": _remove,
    "restore_certificate": _import,
    "set_binding": _set_binding,
    "delete_binding": _delete_binding,
    "write_config": _write_config,
    "set_config_setting": _set_setting,
    "grant_key_read": _grant,
    "revoke_key_read": _revoke,
    "set_service_start_mode": _start_mode,
    "start_service": _start,
    "stop_service": _stop,
    "restart_service": _restart,
    "set_schannel_value": _set_schannel,
    "delete_schannel_value": _delete_schannel,
}


def inverse_unknown(request: dict[str, Any]) -> Inverse:
    """Best effort when the node's answer is unknown: only what is safe without it."""
    op = request.get("op")
    if op == "write_config" and request.get("backup_name"):
        # restore_file does nothing when the backup does not exist (the write never happened)
        return Inverse(
            [
                {
                    "op": "restore_file",
                    "path": request["path"],
                    "backup_name": request["backup_name"],
                    "backup_sha256": request.get("expected_sha256"),
                }
            ],
            note="outcome unknown: restored from the backup if one was made",
        )
    if op == "import_certificate" and request.get("absent_before"):
        # the fresh read before the run saw it missing, so if it is there now this run put it there
        return Inverse(
            [{"op": "remove_certificate", "store": request["store"], "thumbprint": request["thumbprint"]}],
            note="outcome unknown: removed if the import happened",
        )
    if op == "restart_service":
        return Inverse(
            deferred=[{"op": "restart_service", "name": request["name"]}],
            note="outcome unknown: restarted again",
        )
    return Inverse(note=f"outcome of {op} unknown: check the node by hand (re-audit shows its state)")
