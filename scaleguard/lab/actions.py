"""The fix engine's actions on a simulated node: what ``apply/agent/actions.ps1`` does on Windows.

Each handler answers one request ``{"op": ..., ...}`` from :class:`LabNode` state and behaves as the
Windows side does where it matters to a fix: a binding needs its certificate (with its key) in the named
store, a disabled service does not start, an edited file is backed up first and only written if it is
still what scaleguard read (compare-and-swap on its SHA-256), a removed certificate keeps its key
container and can be restored from its backup. Every handler either changes the node completely or not
at all, and tells the caller what was there before, which is what rollback and ``--undo`` replay.

Failures are :class:`ActionError` (stderr + exit code 1 on the wire). ``faults.fail_ops`` injects them:
the next N requests of an op fail before touching anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.serialization import pkcs12

from scaleguard.lab.certs import CertSpec, make_certificate
from scaleguard.lab.state import (
    ALWAYS_KEY_READERS,
    ActionError,
    ActionHandler,
    LabBinding,
    LabCert,
    LabKey,
    LabNode,
    LabSchannel,
    LabService,
    Role,
)
from scaleguard.remediators.configedit import ConfigEditError, edit_setting
from scaleguard.rules.account import account_matches
from scaleguard.rules.host import valid_host
from scaleguard.rules.thumbprint import normalize_thumbprint

BACKUP_ROOT = "C:\\ProgramData\\scaleguard\\backup"
BACKUP_NAME = re.compile(r"[A-Za-z0-9._-]{1,80}\\[A-Za-z0-9._-]{1,120}")
SCHANNEL_VALUES = {"ClientAuthTrustMode": "client_auth_trust_mode", "SendTrustedIssuerList": "send_trusted_issuer_list"}
DWORD_WRITABLE_MAX = 2**31 - 1  # what actions.ps1 writes and reads back unchanged (a DWORD reads as Int32)
START_MODES = {"auto": "Auto", "automatic": "Auto", "manual": "Manual", "disabled": "Disabled"}


def lab_action(op: str, *, journaled: bool = True) -> Callable[[ActionHandler], ActionHandler]:
    """Wrap a handler with the fault hook and (unless it only keeps the lease) a journal entry on
    success; ``lab/dispatch.py`` lists the wrapped handlers."""

    def register(handler: ActionHandler) -> ActionHandler:
        def run(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
            pending = node.faults.fail_ops.get(op, 0)
            if pending > 0:
                node.faults.fail_ops[op] = pending - 1
                raise ActionError(f"{op} failed on {node.name} (injected by the lab)")
            result = handler(node, request)
            if journaled:
                node.journal.append({"op": op, "request": _loggable(request), "result": result})
            return result

        return run

    return register


def _loggable(request: dict[str, Any]) -> dict[str, Any]:
    return {k: ("<redacted>" if k in ("password", "pfx_b64") else v) for k, v in request.items()}


def _text(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise ActionError(f"the request needs {key!r} (a non-empty string)")
    return value


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _backup_path(request: dict[str, Any]) -> str:
    """Backups live under scaleguard's folder in ProgramData, named by the caller (run and step id)."""
    name = _text(request, "backup_name")
    if not BACKUP_NAME.fullmatch(name):
        raise ActionError("'backup_name' is not acceptable")
    return f"{BACKUP_ROOT}\\{name}"


# --- files ---------------------------------------------------------------------------------------------


def _config_role(node: LabNode, path: str) -> Role | None:
    roles: tuple[Role, ...] = ("master", "worker")
    return next((r for r in roles if node.config_path(r).lower() == path.lower()), None)


def read_bytes(node: LabNode, path: str) -> bytes | None:
    role = _config_role(node, path)
    if role is not None:
        return node.config(role)
    return next((v for k, v in node.files.items() if k.lower() == path.lower()), None)


def _write_bytes(node: LabNode, path: str, data: bytes) -> None:
    role = _config_role(node, path)
    if role is not None:
        node.set_config(role, data)
        return
    existing = next((k for k in node.files if k.lower() == path.lower()), path)
    node.files[existing] = data


def _config_path(node: LabNode, request: dict[str, Any]) -> str:
    """Only the Scale Out settings files are ever read or edited (as actions.ps1 enforces)."""
    path = _text(request, "path")
    if _config_role(node, path) is None:
        raise ActionError(
            "only MasterSettings.config and WorkerSettings.config in a DTS\\Binn folder are edited"
        )
    if read_bytes(node, path) is None:
        raise ActionError(f"{path} does not exist")
    return path


@lab_action("read_file")
def read_file(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    path = _config_path(node, request)
    data = read_bytes(node, path)
    assert data is not None
    return {
        "path": path,
        "exists": True,
        "content_b64": base64.b64encode(data).decode("ascii"),
        "sha256": _sha256(data),
    }


@lab_action("write_config")
def write_config(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    path, backup_path = _config_path(node, request), _backup_path(request)
    setting, value = _text(request, "setting"), request.get("value")
    if not isinstance(value, str):
        raise ActionError("the request needs 'value' (a string)")
    current = read_bytes(node, path)
    assert current is not None
    if _sha256(current) != request.get("expected_sha256"):
        raise ActionError(f"{path} changed since it was read; not written")
    if read_bytes(node, backup_path) is not None:
        raise ActionError(f"the backup {backup_path} already exists; not overwritten")
    try:
        edited = edit_setting(current, setting, value).content
    except ConfigEditError as exc:
        raise ActionError(f"{path}: {exc}") from exc
    content = base64.b64decode(_text(request, "content_b64"))
    if content != edited:
        raise ActionError(f"{path}: the new content is not exactly the old one with {setting} changed")
    node.files[backup_path] = current
    _write_bytes(node, path, content)
    return {
        "path": path,
        "backup_path": backup_path,
        "before_sha256": _sha256(current),
        "after_sha256": _sha256(content),
        "changed": content != current,
    }


@lab_action("restore_file")
def restore_file(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    path, backup_path = _config_path(node, request), _backup_path(request)
    backup = read_bytes(node, backup_path)
    if backup is None:
        return {"path": path, "restored": False, "reason": "no backup (the file was never written)"}
    current = read_bytes(node, path)
    expected = request.get("expected_sha256")
    if expected and current is not None and _sha256(current) not in (expected, _sha256(backup)):
        raise ActionError(f"{path} was changed by someone else since scaleguard wrote it; not restored")
    _write_bytes(node, path, backup)
    return {"path": path, "restored": True, "sha256": _sha256(backup)}


# --- certificates --------------------------------------------------------------------------------------


def _cert_document(cert: LabCert, store: str) -> dict[str, Any]:
    return {
        "store": store,
        "thumbprint": cert.thumbprint,
        "der_b64": base64.b64encode(cert.der).decode("ascii"),
    }


@lab_action("create_certificate")
def create_certificate(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    store = _text(request, "store")
    names = [str(n) for n in request.get("common_names") or []]
    san_dns = [str(n) for n in request.get("san_dns") or []]
    san_ip = [str(n) for n in request.get("san_ip") or []]
    if not names or not all(valid_host(n) for n in [*names, *san_dns, *san_ip]):
        raise ActionError("every certificate name must be a host name or an address")
    key_bits = int(request.get("key_bits") or 2048)
    hash_name = str(request.get("hash") or "sha256")
    if key_bits < 2048 or hash_name not in ("sha256", "sha384", "sha1"):
        raise ActionError(f"refusing RSA {key_bits} / {hash_name}")
    issued = make_certificate(
        CertSpec(
            common_names=tuple(names),
            san_dns=tuple(san_dns),
            san_ip=tuple(san_ip),
            valid_from_days=-1,
            valid_days=int(request.get("valid_days") or 730) + 1,
            key_size=key_bits,
            hash=hash_name,
            key_seed=secrets.randbits(62),
        )
    )
    certs = node.store(store)
    cert = LabCert(der=issued.der)
    cert.key = node.new_key(cert.thumbprint, "cng", list(ALWAYS_KEY_READERS))
    certs.append(cert)
    return _cert_document(cert, store)


@lab_action("import_certificate")
def import_certificate(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    store = _text(request, "store")
    der = base64.b64decode(_text(request, "der_b64"))
    cert = LabCert(der=der)
    wanted = request.get("thumbprint")
    if isinstance(wanted, str) and normalize_thumbprint(wanted) != cert.thumbprint:
        raise ActionError(f"the certificate is {cert.thumbprint}, not {wanted}")
    if node.find_cert(store, cert.thumbprint) is not None:
        return {**_cert_document(cert, store), "already_present": True}
    node.store(store).append(cert)
    return {**_cert_document(cert, store), "already_present": False}


@lab_action("import_pfx")
def import_pfx(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    store = _text(request, "store")
    password = request.get("password")
    try:
        _key, certificate, _extra = pkcs12.load_key_and_certificates(
            base64.b64decode(_text(request, "pfx_b64")),
            password.encode("utf-8") if isinstance(password, str) else None,
        )
    except ValueError as exc:
        raise ActionError(f"the PFX cannot be opened: {exc}") from exc
    if certificate is None or _key is None:
        raise ActionError("the PFX holds no certificate with a private key")
    from cryptography.hazmat.primitives.serialization import Encoding

    cert = LabCert(der=certificate.public_bytes(Encoding.DER))
    wanted = request.get("thumbprint")
    if isinstance(wanted, str) and normalize_thumbprint(wanted) != cert.thumbprint:
        raise ActionError(f"the PFX certificate is {cert.thumbprint}, not {wanted}")
    if node.find_cert(store, cert.thumbprint) is not None:
        return {**_cert_document(cert, store), "already_present": True}
    cert.key = node.new_key(cert.thumbprint, "capi", list(ALWAYS_KEY_READERS))
    node.store(store).append(cert)
    return {**_cert_document(cert, store), "already_present": False}


@lab_action("copy_certificate")
def copy_certificate(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    source, target, thumbprint = (
        _text(request, "from_store"),
        _text(request, "to_store"),
        _text(request, "thumbprint"),
    )
    cert = node.find_cert(source, thumbprint)
    if cert is None:
        raise ActionError(f"{thumbprint} is not in LocalMachine\\{source}")
    if node.find_cert(target, thumbprint) is not None:
        return {**_cert_document(cert, target), "already_present": True}
    # X509Store.Add of a certificate with a key links the copy to the same key container.
    node.store(target).append(LabCert(der=cert.der, key=cert.key, key_known=cert.key_known))
    return {**_cert_document(cert, target), "already_present": False}


@lab_action("remove_certificate")
def remove_certificate(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    store, thumbprint = _text(request, "store"), _text(request, "thumbprint")
    cert = node.find_cert(store, thumbprint)
    if cert is None:
        return {"store": store, "thumbprint": normalize_thumbprint(thumbprint), "removed": False}
    delete_key = bool(request.get("delete_key"))
    if delete_key and not cert.key_known:
        raise ActionError(f"the lab does not know whether {cert.thumbprint} has a private key; not removed")
    backup_path = _backup_path(request) if request.get("backup_name") else None
    if backup_path is not None:
        node.files[backup_path] = json.dumps(
            {
                "der_b64": base64.b64encode(cert.der).decode("ascii"),
                "key_container": cert.key.name if cert.key is not None else None,
                "key_known": cert.key_known,
            }
        ).encode("utf-8")
    node.store(store).remove(cert)
    key_deleted = delete_key and cert.usable_key is not None
    if cert.key is not None and key_deleted:
        cert.key.deleted = True  # the one key file: every other copy linked to it loses it too
    return {
        "store": store,
        "thumbprint": cert.thumbprint,
        "removed": True,
        "had_key": cert.has_private_key,
        "key_deleted": key_deleted,
        "backup_path": backup_path,
    }


@lab_action("restore_certificate")
def restore_certificate(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    store, backup_path = _text(request, "store"), _backup_path(request)
    data = read_bytes(node, backup_path)
    if data is None:
        raise ActionError(f"no certificate backup at {backup_path}")
    saved = json.loads(data)
    # The copy links to its key container by name again; a container deleted since stays deleted.
    container = saved.get("key_container")
    cert = LabCert(
        der=base64.b64decode(saved["der_b64"]),
        key=node.key_containers.get(container) if isinstance(container, str) else None,
        key_known=bool(saved.get("key_known", True)),
    )
    if node.find_cert(store, cert.thumbprint) is not None:
        return {**_cert_document(cert, store), "already_present": True}
    node.store(store).append(cert)
    return {**_cert_document(cert, store), "already_present": False}


def _key(node: LabNode, request: dict[str, Any]) -> tuple[LabKey, list[str]]:
    """The key behind a store copy and its ACL's readers; refused when the lab does not know them."""
    store, thumbprint = _text(request, "store"), _text(request, "thumbprint")
    cert = node.find_cert(store, thumbprint)
    if cert is None:
        raise ActionError(f"{thumbprint} is not in LocalMachine\\{store}")
    if not cert.key_known:
        raise ActionError(f"the lab does not know whether {thumbprint} has a private key (not in the evidence)")
    if cert.key is None:
        raise ActionError(f"{thumbprint} has no private key")
    if cert.key.deleted:
        raise ActionError(f"{thumbprint}: Keyset does not exist")
    if cert.key.readers is None:
        raise ActionError(f"the lab does not know the ACL of the key of {thumbprint} (not in the evidence)")
    return cert.key, cert.key.readers


@lab_action("grant_key_read")
def grant_key_read(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    (key, readers), account = _key(node, request), _text(request, "account")
    if any(account_matches(r, account) for r in readers):
        return {"account": account, "already": True}
    key.readers = [*readers, account]
    return {"account": account, "already": False}


@lab_action("revoke_key_read")
def revoke_key_read(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    (key, readers), account = _key(node, request), _text(request, "account")
    kept = [r for r in readers if not account_matches(r, account)]
    key.readers = kept
    return {"account": account, "revoked": len(kept) != len(readers)}


# --- HTTP.sys bindings ------------------------------------------------------------------------------------


def _binding_document(binding: LabBinding | None) -> dict[str, Any] | None:
    if binding is None:
        return None
    return {
        "ip_port": binding.ip_port,
        "cert_hash": binding.cert_hash,
        "app_id": binding.app_id,
        "cert_store": binding.store,
    }


@lab_action("set_binding")
def set_binding(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    ip_port, app_id = _text(request, "ip_port"), _text(request, "app_id")
    cert_hash = normalize_thumbprint(_text(request, "cert_hash"))
    if cert_hash is None:
        raise ActionError(f"{_text(request, 'cert_hash')!r} is not a certificate thumbprint")
    store = request.get("cert_store")
    store_name = store if isinstance(store, str) and store else "My"
    cert = node.find_cert(store_name, cert_hash)
    if cert is not None and not cert.key_known:
        raise ActionError(f"the lab does not know whether {cert_hash} has a private key (not in the evidence)")
    if cert is None or cert.usable_key is None:
        raise ActionError(
            f"SSL Certificate add failed, Error: 1312 ({cert_hash} with its key is not in "
            f"LocalMachine\\{store_name})"
        )
    if node.bindings is None:
        raise ActionError("the SslBindingInfo registry key cannot be read")
    previous = node.binding(ip_port)
    if previous is not None:
        node.bindings.remove(previous)
    node.bindings.append(
        LabBinding(
            ip_port=ip_port,
            cert_hash=cert_hash,
            app_id=app_id,
            store=store if isinstance(store, str) and store else None,
        )
    )
    return {"ip_port": ip_port, "previous": _binding_document(previous)}


@lab_action("delete_binding")
def delete_binding(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    ip_port = _text(request, "ip_port")
    previous = node.binding(ip_port)
    if previous is not None and node.bindings is not None:
        node.bindings.remove(previous)
    return {"ip_port": ip_port, "previous": _binding_document(previous)}


# --- services ------------------------------------------------------------------------------------------


def _service(node: LabNode, request: dict[str, Any]) -> tuple[LabService, str, str]:
    """The service, its state and its start mode; refused when the lab does not know them."""
    name = _text(request, "name")
    if node.services is None:
        raise ActionError(f"the lab does not know the services of {node.name} (not in the evidence)")
    service = node.service(name)
    if service is None:
        raise ActionError(f"Cannot find any service with service name '{name}'.")
    state, mode = service.state, service.start_mode
    if state is None or mode is None:
        raise ActionError(f"the lab does not know the state or start mode of {service.name}")
    return service, state, mode


@lab_action("set_service_start_mode")
def set_service_start_mode(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    service, _state, previous = _service(node, request)
    mode = START_MODES.get(_text(request, "mode").lower())
    if mode is None:
        raise ActionError(f"unknown start mode {request.get('mode')!r}")
    service.start_mode = mode
    return {"name": service.name, "previous": previous, "mode": mode}


@lab_action("start_service")
def start_service(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    service, state, mode = _service(node, request)
    was_running = state.lower() == "running"
    if not was_running:
        if mode.lower() == "disabled":
            raise ActionError(f"Service '{service.name}' cannot be started: it is disabled")
        node.change_service(service, "Running")
    return {"name": service.name, "was_running": was_running}


@lab_action("stop_service")
def stop_service(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    service, state, _mode = _service(node, request)
    was_running = state.lower() == "running"
    if state.lower() != "stopped":
        node.change_service(service, "Stopped")
    return {"name": service.name, "was_running": was_running}


@lab_action("restart_service")
def restart_service(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """Restart a running service; a stopped one stays stopped (an HA passive master stays passive)."""
    service, state, mode = _service(node, request)
    if state.lower() != "running":
        return {"name": service.name, "restarted": False, "state": state}
    node.change_service(service, "Stopped")
    if mode.lower() == "disabled":
        raise ActionError(f"Service '{service.name}' stopped and cannot be started again: it is disabled")
    node.change_service(service, "Running")
    return {"name": service.name, "restarted": True, "state": "Running"}



# --- SCHANNEL registry values ---------------------------------------------------------------------------


def _schannel(node: LabNode, request: dict[str, Any]) -> tuple[LabSchannel, str, str]:
    """(the node's SCHANNEL values, the value name, its LabSchannel field); only the two SO-M11 names."""
    name = _text(request, "name")
    if name not in SCHANNEL_VALUES:
        raise ActionError("'name' must be ClientAuthTrustMode or SendTrustedIssuerList")
    if node.schannel is None:
        raise ActionError("the SCHANNEL registry key cannot be read")
    return node.schannel, name, SCHANNEL_VALUES[name]


@lab_action("set_schannel_value")
def set_schannel_value(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    schannel, name, field_name = _schannel(node, request)
    value = request.get("value")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= DWORD_WRITABLE_MAX:
        raise ActionError("'value' must be a REG_DWORD number 0-2147483647")
    previous: int | None = getattr(schannel, field_name)
    setattr(schannel, field_name, value)
    return {"name": name, "value": value, "previous": previous, "existed": previous is not None}


@lab_action("delete_schannel_value")
def delete_schannel_value(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    schannel, name, field_name = _schannel(node, request)
    previous: int | None = getattr(schannel, field_name)
    setattr(schannel, field_name, None)
    return {"name": name, "previous": previous, "existed": previous is not None}


# --- the cluster lease (held on the masters) ------------------------------------------------------------

RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}-[0-9a-f]{4,32}")
LEASE_TEXT = re.compile(r"[A-Za-z0-9 ._@\\-]{1,128}")
LEASE_TTL_MAX = 86400


def _now() -> datetime:
    return datetime.now(UTC)


def _lease_view(node: LabNode) -> dict[str, Any] | None:
    if node.lease is None:
        return None
    expires = datetime.fromisoformat(node.lease["expires"])
    return {**node.lease, "expired": _now() >= expires}


def _run_id(request: dict[str, Any], key: str = "run_id") -> str:
    value = _text(request, key)
    if not RUN_ID.fullmatch(value):
        raise ActionError(f"'{key}' is not a run id")
    return value


def _ttl(request: dict[str, Any]) -> int:
    value = request.get("ttl_s")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LEASE_TTL_MAX:
        raise ActionError(f"'ttl_s' must be 1-{LEASE_TTL_MAX} seconds")
    return value


@lab_action("lease_acquire", journaled=False)
def lease_acquire(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """Take the lease unless another run holds it (expired or not: breaking is an explicit act).

    ``replaces`` lets ``--undo`` of a run take over that very run's lease."""
    run_id, ttl = _run_id(request), _ttl(request)
    operator, host = _text(request, "operator"), _text(request, "host")
    if not LEASE_TEXT.fullmatch(operator) or not LEASE_TEXT.fullmatch(host):
        raise ActionError("'operator' and 'host' must be plain names")
    replaces = _run_id(request, "replaces") if request.get("replaces") else None
    current = _lease_view(node)
    if current is not None and current["run_id"] not in (run_id, replaces):
        return {"acquired": False, "holder": current}
    now = _now()
    node.lease = {
        "run_id": run_id,
        "operator": operator,
        "host": host,
        "started": now.isoformat(),
        "expires": (now + timedelta(seconds=ttl)).isoformat(),
    }
    return {"acquired": True, "lease": _lease_view(node), "previous": current}


@lab_action("lease_renew", journaled=False)
def lease_renew(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    run_id, ttl = _run_id(request), _ttl(request)
    if node.lease is None or node.lease["run_id"] != run_id:
        holder = node.lease["run_id"] if node.lease else "nobody"
        raise ActionError(f"the lease is not held by {run_id} (holder: {holder})")
    node.lease = {**node.lease, "expires": (_now() + timedelta(seconds=ttl)).isoformat()}
    return {"renewed": True, "lease": _lease_view(node)}


@lab_action("lease_release", journaled=False)
def lease_release(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    run_id = _run_id(request)
    current = _lease_view(node)
    if current is None or current["run_id"] != run_id:
        return {"released": False, "holder": current}
    node.lease = None
    return {"released": True, "holder": current}


@lab_action("lease_break", journaled=False)
def lease_break(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """Remove an *expired* lease (a live one is never broken: its run may still be changing nodes)."""
    holder = _run_id(request, "holder")
    current = _lease_view(node)
    if current is None:
        return {"broken": False, "holder": None}
    if current["run_id"] != holder:
        raise ActionError(f"the lease is now held by {current['run_id']}, not {holder}")
    if not current["expired"]:
        raise ActionError(f"the lease of {holder} has not expired (until {current['expires']})")
    node.lease = None
    return {"broken": True, "holder": current}
