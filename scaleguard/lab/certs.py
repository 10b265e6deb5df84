"""Real X.509 certificates made on the fly, including the legacy shapes Windows clusters still carry.

`cryptography` refuses to sign with SHA-1 or MD5 and to emit negative serials, but MakeCert did both for
years and Microsoft's own Scale Out procedure still makes SHA-1 certificates. To produce those faithfully
the certificate is built and signed normally, then its TBS part is re-encoded with asn1crypto (the
algorithm identifier and serial swapped) and signed again with the same key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import asn1crypto.x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_LEGACY = {"sha1": ("sha1_rsa", hashes.SHA1()), "md5": ("md5_rsa", hashes.MD5())}
_MODERN = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}


@dataclass(frozen=True)
class CertSpec:
    """What a certificate should look like; dates are relative to ``now`` so fixtures never go stale."""

    common_names: tuple[str, ...]
    san_dns: tuple[str, ...] = ()
    san_ip: tuple[str, ...] = ()
    valid_from_days: int = -30
    valid_days: int = 365
    key_size: int = 2048
    key_type: str = "rsa"
    hash: str = "sha256"
    serial: int | None = None
    server_auth: bool = True
    client_auth: bool = True
    key_seed: int = 0
    ca: bool = False  # basicConstraints CA:TRUE + keyCertSign: TLS stacks refuse other issuers
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate
    der: bytes
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @property
    def thumbprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA1()).hex().upper()

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def pfx_for_server_2016(issued: IssuedCertificate, password: bytes) -> bytes:
    """A PFX Windows Server 2016 can import: TripleDES-SHA1 (what Export-PfxCertificate writes there).
    Its PKCS#12 import cannot read AES-256/PBES2 files, so the lab refuses those, as Windows does."""
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(password)
    )
    return pkcs12.serialize_key_and_certificates(b"scaleguard", issued.key, issued.certificate, None, encryption)


@lru_cache(maxsize=64)
def _key(key_type: str, key_size: int, seed: int) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """Keys are the slow part (≈60 ms for RSA-2048); a small pool keyed by seed keeps fleets fast."""
    del seed  # only part of the cache key: different seeds give different keys
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def make_certificate(
    spec: CertSpec, *, issuer: IssuedCertificate | None = None, now: datetime | None = None
) -> IssuedCertificate:
    """A certificate per ``spec``: self-signed unless an ``issuer`` is given."""
    now = now or datetime.now(UTC)
    key = _key(spec.key_type, spec.key_size, spec.key_seed)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in spec.common_names])
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(abs(spec.serial) if spec.serial else x509.random_serial_number())
        .not_valid_before(now + timedelta(days=spec.valid_from_days))
        .not_valid_after(now + timedelta(days=spec.valid_from_days + spec.valid_days))
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.san_dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in spec.san_ip]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    usages = [u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, spec.server_auth),
                              (ExtendedKeyUsageOID.CLIENT_AUTH, spec.client_auth)) if on]
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if spec.ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = builder.add_extension(key_id, critical=False)
    if issuer is not None and _is_ca(issuer.certificate):
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    modern = _MODERN.get(spec.hash, hashes.SHA256())
    cert = builder.sign(signer_key, modern)  # type: ignore[arg-type]
    der = cert.public_bytes(serialization.Encoding.DER)
    negative = spec.serial is not None and spec.serial < 0
    if spec.hash in _LEGACY or negative:
        der = _resign(der, signer_key, spec.hash, spec.serial if negative else None)
        cert = x509.load_der_x509_certificate(der)
    return IssuedCertificate(cert, der, key)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _resign(
    der: bytes, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, hash_name: str, serial: int | None
) -> bytes:
    parsed = asn1_x509.Certificate.load(der)
    tbs = parsed["tbs_certificate"].copy()
    if serial is not None:
        tbs["serial_number"] = serial
    if hash_name in _LEGACY:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("legacy SHA-1/MD5 signatures are only made with RSA keys")
        algo, digest = _LEGACY[hash_name]
        tbs["signature"] = asn1_x509.SignedDigestAlgorithm({"algorithm": algo})
        sig_alg = asn1_x509.SignedDigestAlgorithm({"algorithm": algo})
    else:
        digest = _MODERN.get(hash_name, hashes.SHA256())
        sig_alg = parsed["signature_algorithm"].copy()  # keep the exact encoding (NULL params) of the TBS copy
    body = tbs.dump(force=True)
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(body, padding.PKCS1v15(), digest)
    else:
        signature = key.sign(body, ec.ECDSA(digest))
    out = asn1_x509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": sig_alg, "signature_value": signature}
    )
    return bytes(out.dump(force=True))
