"""The fix engine's actions on a simulated node: what ``apply/agent/actions.ps1`` does on Windows.

Each handler answers one request ``{"op": ..., ...}`` from :class:`LabNode` state and behaves as the
Windows side does where it matters to a fix: a binding needs its certificate (with its key) in the named
store, a disabled service does not start, an edited file is backed up first and only written if it is
still what scaleguard read (compare-and-swap on its SHA-256), a removed certificate keeps its key
container and can be restored from its backup. Every handler either changes the node completely or not
at all, and tells the caller what was there before, which is what rollback and ``--undo`` replay.

Failures are :class:`ActionError` (stderr + exit code 1 on the wire). ``faults.fail_ops`` injects them:
the next N requests of an op fail before touching anything. A change that could be neither finished nor
undone is a :class:`PartialChangeError` (exit code 3, what was there before on stdout).

The lab is never kinder than Windows: every field ``actions.ps1`` requires is required here (no defaults),
a store is Root or My (never null), and what Windows refuses (a locked file, an AES-256 PFX on Server 2016,
a null binding store, a hung service) is refused here with the same outcome. Each behaviour, its source and
the test that pins it are in ``docs/windows-conformance.md``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ntpath
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

from scaleguard.lab.agent_collect import collect
from scaleguard.lab.certs import CertSpec, make_certificate
from scaleguard.lab.state import (
    ALWAYS_KEY_READERS,
    CONFIG_FILES,
    PENDING_STATES,
    SECRET_KEY,
    SQL_VERSIONS,
    ActionError,
    ActionHandler,
    KeyProvider,
    LabBinding,
    LabCert,
    LabKey,
    LabNode,
    LabSchannel,
    LabService,
    PartialChangeError,
    Role,
)
from scaleguard.rules.account import account_matches
from scaleguard.rules.host import valid_host

BACKUP_ROOT = "C:\\ProgramData\\scaleguard\\backup"
BACKUP_NAME = re.compile(r"[A-Za-z0-9._-]{1,80}\\[A-Za-z0-9._-]{1,120}")
SCHANNEL_VALUES = {"ClientAuthTrustMode": "client_auth_trust_mode", "SendTrustedIssuerList": "send_trusted_issuer_list"}
DWORD_WRITABLE_MAX = 2**31 - 1  # what actions.ps1 writes and reads back unchanged (a DWORD reads as Int32)
START_MODES = {"auto": "Auto", "automatic": "Auto", "manual": "Manual", "disabled": "Disabled"}
STORES = ("Root", "My")
THUMBPRINT = re.compile(r"[0-9A-F]{40}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
FRIENDLY_NAME = re.compile(r"[A-Za-z0-9 ._-]{1,64}")
PBES2_OID = bytes.fromhex("06092a864886f70d01050d")  # 1.2.840.113549.1.5.13, how AES-encrypted PFX files say so
SHARING_VIOLATION = "The process cannot access the file because it is being used by another process."
UNTRUSTED_OWNER = "S-1-5-21-1004336348-1177238915-682003330-1001"
NEVER = 10.0**9  # a stuck service's transition: it never gets there


def lab_action(op: str, handler: ActionHandler, *, journaled: bool = True) -> ActionHandler:
    """``handler`` behind the fault hook and (unless it only keeps the lease) a journal entry on success;
    ``lab/dispatch.py`` wraps every action with it."""

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


def _loggable(request: dict[str, Any]) -> dict[str, Any]:
    return {k: ("<redacted>" if k in ("password", "pfx_b64", SECRET_KEY) else v) for k, v in request.items()}


def store_name(request: dict[str, Any], key: str = "store") -> str:
    """``Get-StoreName``: Root or My, any case; anything else (null included) is refused."""
    value = request.get(key)
    for known in STORES:
        if isinstance(value, str) and value.lower() == known.lower():
            return known
    raise ActionError(f"'{key}' must be Root or My")


def thumbprint_field(request: dict[str, Any], key: str = "thumbprint") -> str:
    """``Get-Thumbprint``: required; every character that is not a hex digit dropped; 40 hex digits."""
    clean = "".join(ch for ch in _text(request, key) if ch in "0123456789abcdefABCDEF").upper()
    if not THUMBPRINT.fullmatch(clean):
        raise ActionError(f"'{key}' is not a 40-hex thumbprint")
    return clean


def _integer(request: dict[str, Any], key: str) -> int:
    """``[int](Get-Field ...)``: required. A JSON number or numeric text converts, anything else is refused."""
    value = request.get(key)
    if value is None or value == "" or isinstance(value, bool):
        raise ActionError(f"the request needs '{key}'")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ActionError(f"'{key}' is not a number") from exc


def _text(request: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    """``Get-Text``: required, a non-empty string, and all of it matching ``pattern`` when given."""
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise ActionError(f"the request needs {key!r} (a non-empty string)")
    if pattern is not None and not pattern.fullmatch(value):
        raise ActionError(f"'{key}' is not acceptable")
    return value


def _base64(request: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(_text(request, key), validate=True)
    except ValueError as exc:
        raise ActionError(f"'{key}' is not acceptable") from exc


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _backup_path(request: dict[str, Any]) -> str:
    """Backups live under scaleguard's folder in ProgramData, named by the caller (run and step id)."""
    return f"{BACKUP_ROOT}\\{_text(request, 'backup_name', BACKUP_NAME)}"


def _trusted_backup_folder(node: LabNode) -> None:
    """``Test-TrustedFolder``: a backup folder some other account owns is never written or read."""
    if node.faults.untrusted_backup_folder:
        raise ActionError(f"{BACKUP_ROOT} is owned by {UNTRUSTED_OWNER}, not SYSTEM or Administrators; backups refused")


def _make_backup(node: LabNode, backup_path: str, data: bytes, *, same_is_fine: bool = False) -> str:
    """A backup never replaces another (``same_is_fine``: one of exactly these bytes, which a run stopped
    before made, is kept); returns the backup's SHA-256."""
    _trusted_backup_folder(node)
    left = read_bytes(node, backup_path)
    if left is not None and not (same_is_fine and left == data):
        raise ActionError(f"the backup {backup_path} already exists; not overwritten")
    node.files[backup_path] = data
    return _sha256(data)


def _read_backup(node: LabNode, request: dict[str, Any], backup_path: str) -> bytes:
    """``Read-Backup``: the backup, only when it still has the SHA-256 recorded when it was made."""
    recorded = _text(request, "backup_sha256", SHA256_HEX)
    _trusted_backup_folder(node)
    data = read_bytes(node, backup_path)
    if data is None:
        raise ActionError(f"no backup at {backup_path}")
    if _sha256(data) != recorded:
        raise ActionError(f"the backup {backup_path} does not have the SHA-256 recorded when it was made; not restored")
    return data


# --- files ---------------------------------------------------------------------------------------------


def _config_role(node: LabNode, path: str) -> Role | None:
    return next((r for r in CONFIG_FILES if node.config_path(r).lower() == path.lower()), None)


def read_bytes(node: LabNode, path: str) -> bytes | None:
    role = _config_role(node, path)
    if role is not None:
        return node.config(role)
    return next((v for k, v in node.files.items() if k.lower() == path.lower()), None)


def _write_bytes(node: LabNode, path: str, data: bytes) -> None:
    """``Write-BytesAtomically``: a file another process holds open fails as File.Replace does."""
    if any(locked.lower() == path.lower() for locked in node.faults.locked_files):
        raise ActionError(f"{path} not written: {SHARING_VIOLATION}")
    role = _config_role(node, path)
    if role is not None:
        node.set_config(role, data)
        return
    existing = next((k for k in node.files if k.lower() == path.lower()), path)
    node.files[existing] = data


def windows_full_path(raw: str) -> str:
    """``Path.GetFullPath`` of a drive-absolute path (/ as \\, . and .. resolved); anything else (UNC,
    ``\\\\?\\`` and ``\\\\.\\`` device paths, relative paths) is refused as ``Get-ConfigPath`` refuses it."""
    if not re.match(r"[A-Za-z]:[\\/]", raw):
        raise ActionError("the config path must be a local drive path (UNC and device paths are refused)")
    return ntpath.normpath(raw.replace("/", "\\"))


def _config_path(node: LabNode, request: dict[str, Any]) -> str:
    """Only the Scale Out settings files in the node's own DTS\\Binn folders (as actions.ps1 enforces)."""
    full = windows_full_path(_text(request, "path"))
    allowed = {
        f"C:\\Program Files\\Microsoft SQL Server\\{version}\\DTS\\Binn\\{leaf}".lower()
        for version in SQL_VERSIONS
        for leaf in CONFIG_FILES.values()
    }
    if full.lower() not in allowed:
        raise ActionError(
            "only MasterSettings.config and WorkerSettings.config in this node's SQL Server DTS\\Binn folder are edited"
        )
    if read_bytes(node, full) is None:
        raise ActionError(f"{full} does not exist")
    role = _config_role(node, full)
    return node.config_path(role) if role is not None else full


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


def write_config(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """Writes exactly the bytes it is given (the agent never looks inside them), after a backup."""
    path, backup_path = _config_path(node, request), _backup_path(request)
    expected = _text(request, "expected_sha256", SHA256_HEX)
    content = _base64(request, "content_b64")
    current = read_bytes(node, path)
    assert current is not None
    if _sha256(current) != expected:
        raise ActionError(f"{path} changed since it was read; not written")
    _make_backup(node, backup_path, current)
    _write_bytes(node, path, content)
    return {
        "path": path,
        "backup_path": backup_path,
        "before_sha256": expected,
        "backup_sha256": expected,
        "after_sha256": _sha256(content),
        "changed": content != current,
    }


ENDPOINT = re.compile(r"https://[A-Za-z0-9.-]{1,253}:[0-9]{1,5}/?")
ROLE_SETTINGS: dict[str, tuple[str, ...]] = {
    "master": ("SSLCertThumbprint",),
    "worker": ("MasterHttpsCertThumbprint", "WorkerHttpsCertThumbprint", "MasterEndpoint"),
}
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def _encoding(data: bytes) -> tuple[bytes, str]:
    """(byte order mark, codec): UTF-8 or UTF-16 by the file's byte order mark, else UTF-8 (no guessing)."""
    return next(((bom, codec) for bom, codec in _BOMS if data.startswith(bom)), (b"", "utf-8"))


def _strict_text(data: bytes) -> str:
    """``Read-ConfigText``: decoded strictly, as :func:`_encoding` says."""
    bom, codec = _encoding(data)
    try:
        return data[len(bom) :].decode(codec)
    except UnicodeDecodeError as exc:
        raise ActionError("the settings file is not UTF-8 or UTF-16 text; not changed") from exc


def setting_value(text: str, setting: str) -> str:
    """``Get-SettingSpan``: ``<Setting>value</Setting>`` exactly once, its value plain text."""
    opening, closing = f"<{setting}>", f"</{setting}>"
    start = text.find(opening)
    if start < 0:
        raise ActionError(f"the settings file has no {opening} element; not changed")
    begin = start + len(opening)
    end = text.find(closing, begin)
    if end < 0:
        raise ActionError(f"the settings file has no {closing} after {opening}; not changed")
    if text.find(opening, begin) >= 0 or text.find(closing, end + len(closing)) >= 0:
        raise ActionError(f"the settings file has {opening} more than once; not changed")
    value = text[begin:end]
    if "<" in value or "&" in value:
        raise ActionError(f"the value of {opening} is not plain text; not changed")
    return value


def config_setting(node: LabNode, role: Role, setting: str) -> tuple[str, bytes, str]:
    """(path, bytes, value) of ``setting`` in the node's one settings file of ``role`` (``Get-ConfigSetting``)."""
    data = node.config(role)
    if data is None:
        leaf = CONFIG_FILES[role]
        raise ActionError(f"this node has 0 {leaf} files in its SQL Server DTS\\Binn folders; exactly one is edited")
    return node.config_path(role), data, setting_value(_strict_text(data), setting)


def setting_request(request: dict[str, Any]) -> tuple[Role, str]:
    role = request.get("role")
    if role not in ("master", "worker"):
        raise ActionError("'role' is not acceptable")
    setting = request.get("setting")
    if not isinstance(setting, str) or setting not in ROLE_SETTINGS[role]:
        raise ActionError(f"'setting' is not a setting scaleguard edits in the {role} settings file")
    return ("master" if role == "master" else "worker"), setting


def set_config_setting(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """The runbook's settings edit on the node itself: the value's characters and nothing else change
    (the project's :func:`edit_setting` makes the bytes; they must equal the plain span replacement the
    agent does, or the edit is refused)."""
    from scaleguard.remediators.configedit import ConfigEditError, edit_setting

    role, setting = setting_request(request)
    value = _text(request, "value", ENDPOINT if setting == "MasterEndpoint" else THUMBPRINT)
    path, current, old = config_setting(node, role, setting)
    backup_path = _backup_path(request)
    before = _sha256(current)
    result: dict[str, Any] = {
        "path": path, "setting": setting, "old_value": old, "before_sha256": before, "after_sha256": before,
        "changed": False, "backup_path": None, "backup_sha256": None,
    }
    if old == value:
        return result
    try:
        edited = edit_setting(current, setting, value)
    except ConfigEditError as exc:
        raise ActionError(f"{path}: {exc}; not changed") from exc
    bom, codec = _encoding(current)
    text = _strict_text(current)
    begin = text.index(f"<{setting}>") + len(setting) + 2
    spliced = bom + (text[:begin] + value + text[begin + len(old) :]).encode(codec)
    if edited.content != spliced:
        raise ActionError(f"{path}: the edit would change more than the value of {setting}; not changed")
    _make_backup(node, backup_path, current, same_is_fine=True)
    _write_bytes(node, path, edited.content)
    return {**result, "after_sha256": _sha256(edited.content), "changed": True, "backup_path": backup_path,
            "backup_sha256": before}


def restore_file(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    path, backup_path = _config_path(node, request), _backup_path(request)
    if read_bytes(node, backup_path) is None:
        return {"path": path, "restored": False, "reason": "no backup (the file was never written)"}
    backup = _read_backup(node, request, backup_path)
    current = read_bytes(node, path)
    expected = request.get("expected_sha256")
    if expected and current is not None and _sha256(current) not in (expected, _sha256(backup)):
        raise ActionError(f"{path} was changed by someone else since scaleguard wrote it; not restored")
    _write_bytes(node, path, backup)
    return {"path": path, "restored": True, "sha256": _sha256(backup)}


# --- certificates --------------------------------------------------------------------------------------


def cert_document(cert: LabCert, store: str) -> dict[str, Any]:
    return {
        "store": store,
        "thumbprint": cert.thumbprint,
        "der_b64": base64.b64encode(cert.der).decode("ascii"),
    }


def create_certificate(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """``New-SelfSignedCertificate`` with every parameter from the request: none has a default here."""
    store = store_name(request)
    names = [str(n) for n in request.get("common_names") or []]
    if not names:
        raise ActionError("the request needs 'common_names'")
    san_dns = [str(n) for n in request.get("san_dns") or []]
    san_ip = [str(n) for n in request.get("san_ip") or []]
    if not all(valid_host(n) for n in [*names, *san_dns, *san_ip]):
        raise ActionError("every certificate name must be a host name or an address")
    key_bits = _integer(request, "key_bits")
    hash_name = _text(request, "hash")
    valid_days = _integer(request, "valid_days")
    if key_bits < 2048 or hash_name not in ("sha256", "sha384", "sha1") or valid_days < 1:
        raise ActionError("refusing a weak or invalid certificate request")
    friendly_name = _text(request, "friendly_name", FRIENDLY_NAME)
    issued = make_certificate(
        CertSpec(
            common_names=tuple(names),
            san_dns=tuple(san_dns),
            san_ip=tuple(san_ip),
            valid_from_days=-1,
            valid_days=valid_days + 1,
            key_size=key_bits,
            hash=hash_name,
            key_seed=secrets.randbits(62),
        )
    )
    certs = node.store(store)
    cert = LabCert(der=issued.der, friendly_name=friendly_name)
    cert.key = node.new_key(cert.thumbprint, "cng", list(ALWAYS_KEY_READERS))
    certs.append(cert)
    return cert_document(cert, store)


def _add(node: LabNode, store: str, cert: LabCert, new_key: KeyProvider | None = None) -> dict[str, Any]:
    """Add ``cert`` unless the store holds it already; ``new_key`` gives an added copy a container of its own."""
    present = node.find_cert(store, cert.thumbprint) is not None
    if not present:
        if new_key is not None:
            cert.key = node.new_key(cert.thumbprint, new_key, list(ALWAYS_KEY_READERS))
        node.store(store).append(cert)
    return {**cert_document(cert, store), "already_present": present}


def import_certificate(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    store = store_name(request)
    cert = LabCert(der=_base64(request, "der_b64"))
    if thumbprint_field(request) != cert.thumbprint:
        raise ActionError(f"the certificate is {cert.thumbprint}, not the one requested")
    return _add(node, store, cert)


def import_pfx(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """The password comes only from the payload's secret (``$ScaleguardSecret``), never the JSON. A PFX
    encrypted with AES (PBES2) is refused as Windows Server 2016 refuses it."""
    store = store_name(request)
    data = _base64(request, "pfx_b64")
    wanted = thumbprint_field(request)
    secret = request.get(SECRET_KEY)
    if PBES2_OID in data:
        raise ActionError(
            "the PFX cannot be opened: The specified network password is not correct. (Windows Server 2016 "
            "cannot read AES-256/PBES2 PFX files; export it with TripleDES-SHA1)"
        )
    try:
        key, certificate, _extra = pkcs12.load_key_and_certificates(
            data, secret.encode("utf-8") if isinstance(secret, str) else None
        )
    except ValueError as exc:
        raise ActionError("the PFX cannot be opened: The specified network password is not correct.") from exc
    if certificate is None or key is None:
        raise ActionError("the PFX holds no private key")
    cert = LabCert(der=certificate.public_bytes(Encoding.DER))
    if wanted != cert.thumbprint:
        raise ActionError(f"the PFX certificate is {cert.thumbprint}, not the one requested")
    return _add(node, store, cert, new_key="capi")


def copy_certificate(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    source, target = store_name(request, "from_store"), store_name(request, "to_store")
    thumbprint = thumbprint_field(request)
    cert = node.find_cert(source, thumbprint)
    if cert is None:
        raise ActionError(f"the certificate is not in LocalMachine\\{source}")
    # X509Store.Add of a certificate with a key links the copy to the same key container.
    return _add(node, target, LabCert(der=cert.der, key=cert.key, key_known=cert.key_known))


def _key_used_elsewhere(node: LabNode, store: str, thumbprint: str) -> str | None:
    """``Test-KeyUsedElsewhere``: the other store whose copy of the certificate has a key."""
    for other in STORES:
        copy = node.find_cert(other, thumbprint) if other != store else None
        if copy is not None and copy.has_private_key:
            return other
    return None


def remove_certificate(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    store, thumbprint = store_name(request), thumbprint_field(request)
    cert = node.find_cert(store, thumbprint)
    if cert is None:
        return {"store": store, "thumbprint": thumbprint, "removed": False}
    delete_key = bool(request.get("delete_key"))
    if delete_key and not cert.key_known:
        raise ActionError(f"the lab does not know whether {cert.thumbprint} has a private key; not removed")
    kept_for = _key_used_elsewhere(node, store, thumbprint) if delete_key and cert.key is not None else None
    backup_path = _backup_path(request) if request.get("backup_name") else None
    backup_sha256 = None
    if backup_path is not None:
        # the lab's stand-in for Export('SerializedCert'): the certificate and its key link
        serialized = json.dumps(
            {
                "der_b64": base64.b64encode(cert.der).decode("ascii"),
                "key_container": cert.key.name if cert.key is not None else None,
                "key_known": cert.key_known,
            }
        ).encode("utf-8")
        backup_sha256 = _make_backup(node, backup_path, serialized)
    node.store(store).remove(cert)
    key_deleted = delete_key and cert.usable_key is not None and kept_for is None
    if cert.key is not None and key_deleted:
        cert.key.deleted = True  # the one key file: every other copy linked to it loses it too
    return {
        "store": store,
        "thumbprint": cert.thumbprint,
        "removed": True,
        "had_key": cert.has_private_key,
        "key_deleted": key_deleted,
        "key_kept_for": kept_for,
        "backup_path": backup_path,
        "backup_sha256": backup_sha256,
    }


def restore_certificate(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    store, thumbprint, backup_path = store_name(request), thumbprint_field(request), _backup_path(request)
    if read_bytes(node, backup_path) is None:
        raise ActionError(f"no certificate backup at {backup_path}")
    saved = json.loads(_read_backup(node, request, backup_path))
    # The copy links to its key container by name again; a container deleted since stays deleted.
    container = saved.get("key_container")
    cert = LabCert(
        der=base64.b64decode(saved["der_b64"]),
        key=node.key_containers.get(container) if isinstance(container, str) else None,
        key_known=bool(saved.get("key_known", True)),
    )
    if cert.thumbprint != thumbprint:
        raise ActionError("the backup holds another certificate")
    if request.get("had_key") and cert.usable_key is None:
        raise ActionError("the private key the certificate was linked to no longer exists; not restored")
    return _add(node, store, cert)


def _key(node: LabNode, request: dict[str, Any]) -> tuple[LabKey, list[str]]:
    """The key behind a store copy and its ACL's readers; refused when the lab does not know them."""
    store, thumbprint = store_name(request), thumbprint_field(request)
    _text(request, "account")
    cert = node.find_cert(store, thumbprint)
    if cert is None:
        raise ActionError(f"the certificate is not in LocalMachine\\{store}")
    if not cert.key_known:
        raise ActionError(f"the lab does not know whether {thumbprint} has a private key (not in the evidence)")
    if cert.key is None:
        raise ActionError("the certificate has no private key")
    if cert.key.deleted:
        raise ActionError("the private key cannot be opened: Keyset does not exist")
    if cert.key.readers is None:
        raise ActionError(f"the lab does not know the ACL of the key of {thumbprint} (not in the evidence)")
    return cert.key, cert.key.readers


def grant_key_read(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    (key, readers), account = _key(node, request), _text(request, "account")
    if any(account_matches(d, account) for d in key.denied):
        raise ActionError(f"a Deny entry for {account} on the key file overrides any grant; not changed")
    if any(account_matches(r, account) for r in readers):
        return {"account": account, "already": True}
    key.readers = [*readers, account]
    return {"account": account, "already": False}


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


def _binding_store(request: dict[str, Any]) -> str | None:
    """``Get-BindingStore``: absent → None (no certstorename: HTTP.sys uses MY); null is refused."""
    if "cert_store" not in request:
        return None
    if request["cert_store"] is None:
        raise ActionError("'cert_store' must be Root or My, or left out (HTTP.sys then uses MY)")
    store_name(request, "cert_store")
    return str(request["cert_store"])  # as spelled: a restored binding is the one that was there


def set_binding(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """``netsh http update sslcert`` over an existing binding (no gap), ``add`` for a new one."""
    ip_port, app_id = _text(request, "ip_port"), _text(request, "app_id")
    cert_hash = thumbprint_field(request, "cert_hash")
    store = _binding_store(request)
    look_in = store or "My"
    cert = node.find_cert(look_in, cert_hash)
    if cert is not None and not cert.key_known:
        raise ActionError(f"the lab does not know whether {cert_hash} has a private key (not in the evidence)")
    if cert is None or cert.usable_key is None:
        raise ActionError(
            f"the certificate with its private key is not in LocalMachine\\{look_in}; binding not changed"
        )
    if node.bindings is None:
        raise ActionError("the SslBindingInfo registry key cannot be read")
    previous = node.binding(ip_port)
    replacement = LabBinding(ip_port=ip_port, cert_hash=cert_hash, app_id=app_id, store=store)
    if previous is None:
        node.bindings.append(replacement)
    else:
        node.bindings[node.bindings.index(previous)] = replacement
    return {
        "ip_port": ip_port,
        "previous": _binding_document(previous),
        "verb": "add" if previous is None else "update",
    }


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


def _wait_s(request: dict[str, Any]) -> float:
    """``Get-WaitSpan``: a whole number of seconds, 1-3600, required."""
    value = request.get("wait_s")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3600:
        raise ActionError("'wait_s' must be a whole number of seconds, 1-3600")
    return float(value)


def _await(node: LabNode, service: LabService, target: str, wait_s: float, doing: str, result: dict[str, Any]) -> None:
    """Ask for ``target`` and wait as ``WaitForStatus(target, wait_s)`` does: a transition that is not
    over within ``wait_s`` (a stuck service never is) ends as a partial change at the end of the wait."""
    began = max(time.monotonic(), node.busy_until)
    stuck = target == "Running" and any(s.lower() == service.name.lower() for s in node.faults.stuck_services)
    if stuck:
        reached = service.change("Running", NEVER, not_before=node.busy_until)
    else:
        reached = node.change_service(service, "Running" if target == "Running" else "Stopped")
    if reached - began > wait_s:
        gave_up = began + wait_s
        node.busy_until = gave_up
        raise PartialChangeError(
            f"{service.name} did not reach {target} within {int(wait_s)} s after {doing} "
            f"(now {PENDING_STATES[target].replace(' ', '')})",
            result,
            ends_at=gave_up,
        )


def set_service_start_mode(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    service, _state, previous = _service(node, request)
    mode = START_MODES.get(_text(request, "mode").lower())
    if mode is None:
        raise ActionError("unknown start mode")
    service.start_mode = mode
    return {"name": service.name, "previous": previous, "mode": mode}


def start_service(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    service, state, mode = _service(node, request)
    wait_s = _wait_s(request)
    was_running = state.lower() == "running"
    result = {"name": service.name, "was_running": was_running}
    if not was_running:
        if mode.lower() == "disabled":
            raise ActionError(f"Cannot start service {service.name} on computer '.'.")
        _await(node, service, "Running", wait_s, "a start", result)
    return result


def stop_service(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """Only a Running service is stopped (``Invoke-StopService``)."""
    service, state, _mode = _service(node, request)
    wait_s = _wait_s(request)
    was_running = state.lower() == "running"
    result = {"name": service.name, "was_running": was_running}
    if was_running:
        _await(node, service, "Stopped", wait_s, "a stop", result)
    return result


def restart_service(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    """Restart a running service; a stopped one stays stopped (an HA passive master stays passive).
    A stop then a start, each waited for; a start refused after the stop is a partial change."""
    service, state, mode = _service(node, request)
    wait_s = _wait_s(request)
    if state.lower() != "running":
        return {"name": service.name, "restarted": False, "state": state}
    result = {"name": service.name, "restarted": True, "state": "Running"}
    _await(node, service, "Stopped", wait_s, "a stop", result)
    if mode.lower() == "disabled":
        raise PartialChangeError(
            f"{service.name} was stopped and could not be started again: "
            f"Cannot start service {service.name} on computer '.'.",
            result,
            ends_at=node.busy_until,
        )
    _await(node, service, "Running", wait_s, "a start", result)
    return result


# --- SCHANNEL registry values ---------------------------------------------------------------------------


def _schannel(node: LabNode, request: dict[str, Any]) -> tuple[LabSchannel, str, str]:
    """(the node's SCHANNEL values, the value name, its LabSchannel field); only the two SO-M11 names."""
    name = _text(request, "name")
    if name not in SCHANNEL_VALUES:
        raise ActionError("'name' must be ClientAuthTrustMode or SendTrustedIssuerList")
    if node.schannel is None:
        raise ActionError("the SCHANNEL registry key cannot be read")
    return node.schannel, name, SCHANNEL_VALUES[name]


def set_schannel_value(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    schannel, name, field_name = _schannel(node, request)
    value = request.get("value")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= DWORD_WRITABLE_MAX:
        raise ActionError("'value' must be a REG_DWORD number 0-2147483647")
    previous: int | None = getattr(schannel, field_name)
    setattr(schannel, field_name, value)
    return {"name": name, "value": value, "previous": previous, "existed": previous is not None}


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
    answer = {"acquired": True, "lease": _lease_view(node), "previous": current}
    read = request.get("collect")
    if isinstance(read, dict) and read.get("op") == "collect":  # the run's first read of this master
        answer["collect"] = collect(node, read)
    return answer


def lease_renew(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    run_id, ttl = _run_id(request), _ttl(request)
    if node.lease is None or node.lease["run_id"] != run_id:
        holder = node.lease["run_id"] if node.lease else "nobody"
        raise ActionError(f"the lease is not held by {run_id} (holder: {holder})")
    node.lease = {**node.lease, "expires": (_now() + timedelta(seconds=ttl)).isoformat()}
    return {"renewed": True, "lease": _lease_view(node)}


def lease_release(node: LabNode, request: dict[str, Any]) -> dict[str, Any]:
    run_id = _run_id(request)
    current = _lease_view(node)
    if current is None or current["run_id"] != run_id:
        return {"released": False, "holder": current}
    node.lease = None
    return {"released": True, "holder": current}


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
