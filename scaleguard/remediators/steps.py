"""Step builders shared by the remediators; each also records its effect in the intended state.

Keeping "emit the step" and "update what the cluster will look like" in one call is what keeps the
intended state honest: a remediator cannot plan a change without the next one seeing it.
"""

from __future__ import annotations

from dataclasses import replace

from scaleguard.remediators.actions import (
    CreateCertificate,
    ImportCertificate,
    RemoveCertificate,
    SetBinding,
    WriteConfig,
)
from scaleguard.remediators.base import UnitDraft, role_of
from scaleguard.remediators.intent import (
    BindingFact,
    CertFact,
    NodeIntent,
    ServiceFact,
    Thumb,
    thumb_key,
)
from scaleguard.remediators.model import BindingWas, SettingWas, StepRef
from scaleguard.rules.host import is_ip

ALWAYS_KEY_READERS = ("NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators")


def write_setting(
    draft: UnitDraft,
    node: NodeIntent,
    role: str,
    setting: str,
    value: str | StepRef,
    *,
    depends_on: tuple[str, ...] = (),
) -> str:
    current = node.setting(role, setting)
    step = draft.step(
        node,
        WriteConfig(config=role_of(role), setting=setting, value=value),  # type: ignore[arg-type]
        depends_on=depends_on,
        expect=SettingWas(
            role=role_of(role),
            setting=setting,  # type: ignore[arg-type]
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
    depends_on: tuple[str, ...] = (),
) -> str:
    """The public part of ``cert`` into ``store`` (trust only: no private key travels). The caller has
    made sure it is no CA (:func:`ca_reason`): a plan never puts one into a Root store."""
    assert cert.der_b64 is not None
    step = draft.step(
        node,
        ImportCertificate(store="Root", thumbprint=cert.thumbprint, der_b64=cert.der_b64),
        depends_on=depends_on,
    )
    add_cert(node, store, replace(cert, has_key=False, readers=None, provided_by=draft.id))
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
) -> tuple[CertFact, str]:
    """A new self-signed certificate made ON ``node`` (the key never leaves it), as both rotations need.

    Names that are addresses go into the SAN as IPs, the rest as DNS names; every name is also a CN, as
    MakeCert's ``CN=name;CN=ip`` did. Returns the certificate as the intended state will know it (its
    thumbprint and DER are references to the step's answer) and the step id.
    """
    step = draft.step(
        node,
        CreateCertificate(
            store=store,  # type: ignore[arg-type]
            common_names=names,
            san_dns=[n for n in names if not is_ip(n)],
            san_ip=[n for n in names if is_ip(n)],
            key_bits=key_bits,
            hash=hash_name,  # type: ignore[arg-type]
            valid_days=valid_days,
            friendly_name=friendly_name,  # type: ignore[arg-type]
        ),
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
    assert isinstance(old.thumbprint, str)
    step = draft.step(node, RemoveCertificate(store="My", thumbprint=old.thumbprint))
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
    step = draft.step(
        master,
        SetBinding(ip_port=binding.ip_port, cert_hash=thumb, cert_store="Root", app_id=app_id),
        depends_on=depends_on,
        expect=BindingWas(
            ip_port=binding.ip_port,
            cert_hash=binding.cert_hash,
            cert_store=binding.store if existing else None,
            app_id=binding.app_id if existing else None,
        ),
    )
    kept = [b for b in master.bindings or [] if b.ip_port.lower() != binding.ip_port.lower()]
    master.bindings = [*kept, BindingFact(binding.ip_port, thumb, app_id, "Root", "ipport", draft.id)]
    return step
