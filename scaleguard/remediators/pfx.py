"""``--master-pfx``: an enterprise master certificate imported instead of a self-signed one created.

The PFX is read once at planning time, so the plan can show the certificate it will install and refuse
one that lacks a name workers use; its bytes and password are only resolved again when the import step
runs, so neither ever lands in plan.json or the journal.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from cryptography.x509.oid import NameOID

from scaleguard.remediators.base import MasterPfx
from scaleguard.remediators.model import SecretRef
from scaleguard.safefile import read_limited

PFX_LIMIT = 1024 * 1024
"""A PFX is a few KiB; the file a plan names is never read beyond this."""


class PfxError(ValueError):
    """The PFX cannot be used (unreadable, wrong password, no key, not RSA ≥ 2048)."""


def load_master_pfx(path: Path, password: str | None, reference: SecretRef) -> MasterPfx:
    try:
        key, cert, _chain = pkcs12.load_key_and_certificates(
            read_limited(path, PFX_LIMIT, named=True), password.encode("utf-8") if password else None
        )
    except (OSError, ValueError) as exc:
        raise PfxError(f"{path}: cannot be opened ({exc})") from exc
    if key is None or cert is None:
        raise PfxError(f"{path}: holds no certificate with its private key")
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise PfxError(f"{path}: the key must be RSA with at least 2048 bits")
    common_names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    dns: list[str] = []
    ips: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        ips = [str(n) for n in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    der = cert.public_bytes(Encoding.DER)
    return MasterPfx(
        path=str(path),
        password=reference,
        thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - Windows' thumbprint is SHA-1
        der_b64=base64.b64encode(der).decode("ascii"),
        names=tuple(dict.fromkeys([*common_names, *dns, *ips])),
        common_names=tuple(common_names),
        subject=cert.subject.rfc4514_string(),
        key_bits=key.key_size,
        self_signed=cert.issuer == cert.subject,
    )
