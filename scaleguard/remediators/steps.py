"""Step builders shared by the remediators; each also records its effect in the intended state.

Keeping "emit the step" and "update what the cluster will look like" in one call is what keeps the
intended state honest: a remediator cannot plan a change without the next one seeing it.
"""

from __future__ import annotations

import unicodedata

from scaleguard.remediators import commands
from scaleguard.remediators.base import UnitDraft
from scaleguard.remediators.intent import (
    BindingFact,
    CertFact,
    NodeIntent,
    ServiceFact,
    Thumb,
    show,
    thumb_key,
)
from scaleguard.remediators.model import BindingWas, SettingWas, StepRef
from scaleguard.rules.host import is_ip

ALWAYS_KEY_READERS = ("NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators")


def display(value: str | StepRef | None) -> str:
    """A setting value as a reviewer must see it: invisible characters (U+200E...) made visible."""
    if value is None:
        return "(absent)"
    if isinstance(value, StepRef):
        return value.key()
    shown = "".join(
        ch if ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Zs") or ch == " " else f"\\u{ord(ch):04x}"
        for ch in value
    )
    return f"'{shown}'"


def write_setting(
    draft: UnitDraft,
    node: NodeIntent,
    role: str,
    setting: str,
    value: str | StepRef,
    *,
    depends_on: tuple[str, ...] = (),
) -> str:
    path = node.config_path(role) or f"{'Master' if role == 'master' else 'Worker'}Settings.config"
    current = node.setting(role, setting)
    step = draft.step(
        node,
        "write_config",
        {"path": path, "role": role, "setting": setting, "value": value},
        before=f"{setting} = {display(current.value if current else None)}",
        after=f"{setting} = {display(value)}",
        command=commands.write_config(path, setting, show(value) if isinstance(value, StepRef) else value),
        depends_on=depends_on,
        expect=SettingWas(
            role="master" if role == "master" else "worker",
            setting=setting,
            value=current.value if current else None,
        ),
    )
    node.set_setting(role, setting, value, draft.id)
    return step


def import_cert(
    draft: UnitDraft,
    node: NodeIntent,
    store: str,
    cert: CertFact,
    *,
    label: str,
    file_name: str,
    depends_on: tuple[str, ...] = (),
) -> str:
    """The public part of ``cert`` into ``store`` (trust only: no private key travels)."""
    assert cert.der_b64 is not None
    step = draft.step(
        node,
        "import_certificate",
        {"store": store, "thumbprint": cert.thumbprint, "der_b64": cert.der_b64},
        before=f"LocalMachine\\{store} lacks {label} {show(cert.thumbprint)}",
        after=f"LocalMachine\\{store} trusts {label} {show(cert.thumbprint)}",
        command=commands.import_certificate(store, file_name),
        depends_on=depends_on,
    )
    add_cert(
        node,
        store,
        CertFact(
            thumbprint=cert.thumbprint,
            der_b64=cert.der_b64,
            subject=cert.subject,
            common_names=list(cert.common_names),
            names=list(cert.names),
            has_key=False,
            readers=None,
            provided_by=draft.id,
        ),
    )
    return step


def create_certificate(
    draft: UnitDraft,
    node: NodeIntent,
    store: str,
    names: list[str],
    *,
    hash_name: str,
    key_bits: int,
    valid_days: int,
    friendly_name: str,
    file_name: str,
    old: Thumb | None,
    label: str,
    key_note: str,
) -> tuple[CertFact, str]:
    """A new self-signed certificate made ON ``node`` (the key never leaves it), as both rotations need.

    Names that are addresses go into the SAN as IPs, the rest as DNS names; every name is also a CN, as
    MakeCert's ``CN=name;CN=ip`` did. Returns the certificate as the intended state will know it (its
    thumbprint and DER are references to the step's answer) and the step id.
    """
    step = draft.step(
        node,
        "create_certificate",
        {
            "store": store,
            "common_names": names,
            "san_dns": [n for n in names if not is_ip(n)],
            "san_ip": [n for n in names if is_ip(n)],
            "key_bits": key_bits,
            "hash": hash_name,
            "valid_days": valid_days,
            "friendly_name": friendly_name,
        },
        before=f"{label} {show(old)}",
        after=(
            f"new self-signed certificate {'; '.join('CN=' + n for n in names)}, RSA {key_bits}, "
            f"{hash_name}, in LocalMachine\\{store} with its key ({key_note})"
        ),
        command=commands.makecert(names, store=store, file_name=file_name, hash_name=hash_name, key_bits=key_bits),
    )
    cert = CertFact(
        thumbprint=StepRef(from_step=step, field="thumbprint"),
        der_b64=StepRef(from_step=step, field="der_b64"),
        subject=", ".join(f"CN={n}" for n in names),
        common_names=list(names),
        names=list(names),
        has_key=True,
        readers=list(ALWAYS_KEY_READERS),
        provided_by=draft.id,
    )
    add_cert(node, store, cert)
    return cert, step


def add_cert(node: NodeIntent, store: str, cert: CertFact) -> None:
    certs = node.store(store)
    if certs is not None:
        certs[thumb_key(cert.thumbprint)] = cert
    elif store.lower() == "root":
        node.root = {thumb_key(cert.thumbprint): cert}
    else:
        node.my = {thumb_key(cert.thumbprint): cert}


def remove_old_cert(draft: UnitDraft, node: NodeIntent, old: CertFact) -> str:
    """Delete an old certificate from ``node``'s My by thumbprint (Microsoft's ``certmgr /del /n <CN>``
    would take the new one with the same CN too); the node keeps a backup and the key."""
    step = draft.step(
        node,
        "remove_certificate",
        {"store": "My", "thumbprint": old.thumbprint},
        before=f"LocalMachine\\My holds old certificate {show(old.thumbprint)} ({old.subject})",
        after="removed (key kept, backup on the node, restorable)",
        command=commands.remove_certificate("My", show(old.thumbprint)),
    )
    drop_cert(node, "My", old.thumbprint)
    return step


def drop_cert(node: NodeIntent, store: str, thumb: Thumb) -> None:
    certs = node.store(store)
    if certs is not None:
        certs.pop(thumb_key(thumb), None)


def port_of(node: NodeIntent) -> int | None:
    setting = node.setting("master", "PortNumber")
    raw = setting.value.strip() if setting and isinstance(setting.value, str) else ""
    if raw.isdigit() and 1 <= int(raw) <= 65535:
        return int(raw)
    return None


def service_account(service: ServiceFact) -> str:
    """The service's logon account; a virtual account by the documented default when not collected."""
    return service.account or f"NT Service\\{service.name}"


def rebind(
    draft: UnitDraft,
    master: NodeIntent,
    binding: BindingFact,
    thumb: Thumb,
    app_id: str,
    *,
    depends_on: tuple[str, ...] = (),
) -> str:
    """``binding`` replaced by one serving ``thumb`` from Root, keeping its AppId (master step 2)."""
    existing = binding.cert_hash is not None or binding.app_id is not None
    store = binding.store or "(null) = MY"
    before = (
        f"{binding.ip_port} → {show(binding.cert_hash)} (store {store}, appid {binding.app_id})"
        if existing
        else f"no SSL binding on {binding.ip_port}"
    )
    step = draft.step(
        master,
        "set_binding",
        {"ip_port": binding.ip_port, "cert_hash": thumb, "cert_store": "Root", "app_id": app_id},
        before=before,
        after=f"{binding.ip_port} → {show(thumb)} (store Root, appid {app_id})",
        command=commands.set_binding(binding.ip_port, show(thumb), "Root", app_id, existing=existing),
        depends_on=depends_on,
        expect=BindingWas(ip_port=binding.ip_port, cert_hash=binding.cert_hash),
    )
    kept = [b for b in master.bindings or [] if b.ip_port.lower() != binding.ip_port.lower()]
    master.bindings = [*kept, BindingFact(binding.ip_port, thumb, app_id, "Root", "ipport", draft.id)]
    return step
