"""Certificate bytes (DER, PEM, bare base64, PKCS#7) → :class:`Certificate`, including the legacy shapes.

Scale Out clusters carry what MakeCert and ``New-SelfSignedCertificate -HashAlgorithm SHA1`` made: SHA-1
or MD5 signatures, several CN attributes (``CN=name;CN=ip``), negative serials. All of them must parse,
because a certificate we cannot read is a certificate we cannot judge.

Cost matters (a fleet audit parses tens of thousands of certificates, mostly the same master and root
certificates again and again), so facts are cached by the DER itself (a dict key hashes faster than
SHA-1, which is taken once per distinct certificate, as its Windows thumbprint), and the only signature
check, for ``self_signed``, runs only when the issuer and subject encodings are byte-for-byte equal.
The serial is read straight from the DER, which both gives Windows' own hex rendering (two's complement,
leading ``00`` kept) and tells us up front whether `cryptography` is about to warn about a non-positive
serial, so warnings are only silenced when needed.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import hashlib
import re
import threading
import warnings
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding, PKCS1v15
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from scaleguard.collectors.parsers.text import decode_text
from scaleguard.snapshot.model import Certificate


class CertificateParseError(ValueError):
    """The bytes hold no certificate we can read (the message says what they looked like instead)."""


_PEM_BEGIN = "-----BEGIN "
_PEM_END = "-----END "
_PEM_DASHES = "-----"
_PEM_LABEL_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 #")
_PEM_NOTES_LIMIT = 20
_PEM_CERT_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"})
_PEM_PKCS7_LABELS = frozenset({"PKCS7", "PKCS #7 SIGNED DATA", "CMS"})
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\s]+")
_WHITESPACE = re.compile(r"\s+")
_KEY_ALGORITHM_OIDS = {
    "1.2.840.113549.1.1.1": "RSA",
    "1.2.840.113549.1.1.10": "RSA-PSS",
    "1.2.840.10045.2.1": "EC",
    "1.2.840.10040.4.1": "DSA",
    "1.3.101.112": "Ed25519",
    "1.3.101.113": "Ed448",
}
_LEGACY_SIGNATURE_OIDS = {"1.2.840.113549.1.1.2": "md2", "1.2.840.113549.1.1.3": "md4"}
_CACHE_LIMIT = 8192
_SAN_OID_DER = b"\x06\x03\x55\x1d\x11"  # OBJECT IDENTIFIER 2.5.29.17 (subjectAltName), as encoded


@dataclass(frozen=True, slots=True)
class _Facts:
    """Everything about one DER that does not depend on where it was found: a prototype certificate
    (copied per store entry, never handed out itself) and the observations made while parsing it."""

    prototype: Certificate
    notes: tuple[str, ...]


class _Layout(NamedTuple):
    """The few TBS fields read straight from the DER, before (and independently of) `cryptography`."""

    serial: bytes
    issuer: bytes
    subject: bytes


_cache: dict[bytes, _Facts] = {}
_cache_lock = threading.Lock()  # live collection parses from several threads; readers need no lock


def parse_certificate(der: bytes, *, source: str) -> Certificate:
    """One DER certificate → :class:`Certificate`; raises :class:`CertificateParseError`."""
    return _certificate(_facts(der), source)


def load_certificates(data: bytes | str, *, source: str) -> list[Certificate]:
    """Every certificate in a file (DER, PEM bundle, bare base64, PKCS#7); raises if there is none."""
    return load_certificates_with_notes(data, source=source)[0]


def load_certificates_with_notes(data: bytes | str, *, source: str) -> tuple[list[Certificate], list[str]]:
    """As :func:`load_certificates`, plus observations worth a diagnostic (skipped blocks, odd signatures)."""
    if isinstance(data, bytes) and _is_exact_der_sequence(data):
        # the common case (a Windows .cer export): one DER certificate, nothing around it
        facts = _facts(data)
        return [_certificate(facts, source)], list(facts.notes)
    notes: list[str] = []
    ders = _ders(data, notes)
    if not ders:
        raise CertificateParseError("; ".join(notes) or "no certificate found")
    certificates: list[Certificate] = []
    for index, der in enumerate(ders, start=1):
        where = source if len(ders) == 1 else f"{source}#{index}"
        try:
            facts = _facts(der)
        except CertificateParseError as exc:
            if len(ders) == 1:
                raise
            notes.append(f"certificate {index} skipped: {exc}")
            continue
        notes.extend(facts.notes if len(ders) == 1 else (f"certificate {index}: {n}" for n in facts.notes))
        certificates.append(_certificate(facts, where))
    if not certificates:
        raise CertificateParseError("; ".join(notes) or "no readable certificate")
    return certificates, notes


def clear_cache() -> None:
    """Forget parsed certificates (tests and long-running processes that audit many unrelated fleets)."""
    with _cache_lock:
        _cache.clear()


def _certificate(facts: _Facts, source: str) -> Certificate:
    """A shallow copy of the validated prototype with this entry's source and fresh lists, so that no
    two store entries share a mutable list (the per-entry key facts are set by the caller)."""
    certificate = copy.copy(facts.prototype)
    fields = vars(certificate)
    fields["source"] = source
    fields["common_names"] = [*fields["common_names"]]
    fields["san_dns"] = [*fields["san_dns"]]
    fields["san_ip"] = [*fields["san_ip"]]
    return certificate


def _is_exact_der_sequence(data: bytes) -> bool:
    """A SEQUENCE holding a SEQUENCE whose declared length is exactly the data's length."""
    if len(data) < 4 or data[0] != 0x30:
        return False
    first = data[1]
    if first < 0x80:
        return data[2] == 0x30 and 2 + first == len(data)
    size = first & 0x7F
    if size == 0 or size > 4 or len(data) <= 2 + size:
        return False
    return data[2 + size] == 0x30 and 2 + size + int.from_bytes(data[2 : 2 + size], "big") == len(data)


# -- finding the DER inside whatever the file is ------------------------------------------------------


def _ders(data: bytes | str, notes: list[str]) -> list[bytes]:
    if isinstance(data, bytes):
        if not data.strip():
            notes.append("the file is empty")
            return []
        if data[0] == 0x30:
            return _ders_from_binary(data, notes)
        text = decode_text(data).text
    else:
        text = data
    text = text.lstrip("\ufeff")
    if "-----BEGIN" in text:
        return _ders_from_pem(text, notes)
    stripped = text.strip()
    if len(stripped) >= 64 and _BASE64_TEXT.fullmatch(stripped):
        try:
            raw = base64.b64decode(_WHITESPACE.sub("", stripped), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if raw[:1] == b"\x30":
            return _ders_from_binary(raw, notes)
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    notes.append(f"not a certificate: no DER structure, PEM block or base64 text ({size} bytes)")
    return []


def _ders_from_binary(data: bytes, notes: list[str]) -> list[bytes]:
    try:
        _, start, end = _tlv(data, 0)
        inner_tag = data[start] if start < end else -1
    except ValueError:
        end, inner_tag = -1, -1
    if inner_tag == 0x30:  # Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, ... }
        trailing = data[end:]
        if trailing.strip(b"\x00\r\n\t "):
            notes.append(f"{len(trailing)} bytes after the certificate were ignored")
        return [data[:end]] if trailing else [data]
    try:
        bundle = pkcs7.load_der_pkcs7_certificates(data)
    except Exception:  # noqa: BLE001 - any failure here just means "not PKCS#7 either"
        bundle = []
    if bundle:
        return [c.public_bytes(Encoding.DER) for c in bundle]
    return [data]  # let the X.509 parser produce the precise error


def _ders_from_pem(text: str, notes: list[str]) -> list[bytes]:
    ders: list[bytes] = []
    certificate_blocks = 0
    ignored = 0
    for label, body in pem_blocks(text):
        if label not in _PEM_CERT_LABELS | _PEM_PKCS7_LABELS:
            ignored += 1
            if ignored <= _PEM_NOTES_LIMIT:
                notes.append(f"ignored a PEM block of type {label!r}")
            continue
        certificate_blocks += 1
        try:
            raw = base64.b64decode(_WHITESPACE.sub("", body), validate=True)
        except (binascii.Error, ValueError) as exc:
            notes.append(f"a {label} PEM block is not valid base64 ({exc})")
            continue
        ders.extend(_ders_from_binary(raw, notes) if raw[:1] == b"\x30" else [raw])
    if ignored > _PEM_NOTES_LIMIT:
        notes.append(f"ignored {ignored - _PEM_NOTES_LIMIT} more PEM blocks that hold no certificate")
    if not ders and not notes:
        notes.append("not a certificate: a PEM header without a complete BEGIN/END block")
    elif not ders and not certificate_blocks:
        notes.append("not a certificate: the PEM file holds no CERTIFICATE block")
    return ders


def pem_blocks(text: str) -> list[tuple[str, str]]:
    """``(label, body)`` of every ``-----BEGIN L-----body-----END L-----`` block, in order, not nested.

    Found by plain string search, never a backtracking pattern: the text is node data, and a pattern with
    a back-reference is quadratic on repeated BEGIN markers. Every END marker is indexed once (by label),
    so a BEGIN without its END costs a binary search, not a scan to the end of the text.
    """
    ends: dict[str, list[int]] = {}
    position = text.find(_PEM_END)
    while position >= 0:
        label_end = text.find(_PEM_DASHES, position + len(_PEM_END))
        if label_end < 0:
            break
        ends.setdefault(text[position + len(_PEM_END) : label_end], []).append(position)
        position = text.find(_PEM_END, position + 1)
    blocks: list[tuple[str, str]] = []
    position = text.find(_PEM_BEGIN)
    while position >= 0:
        label_start = position + len(_PEM_BEGIN)
        label_end = text.find(_PEM_DASHES, label_start)
        if label_end < 0:
            break
        label = text[label_start:label_end]
        candidates = ends.get(label, []) if _is_pem_label(label) else []
        body_start = label_end + len(_PEM_DASHES)
        index = bisect.bisect_left(candidates, body_start)
        if index == len(candidates):
            position = text.find(_PEM_BEGIN, position + 1)
            continue
        end = candidates[index]
        blocks.append((label, text[body_start:end]))
        position = text.find(_PEM_BEGIN, end + len(_PEM_END) + len(label) + len(_PEM_DASHES))
    return blocks


def _is_pem_label(label: str) -> bool:
    return bool(label) and all(character in _PEM_LABEL_CHARACTERS for character in label)


def _tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at ``pos``; single-byte tags are all X.509 needs."""
    if pos + 2 > len(buf):
        raise ValueError("truncated")
    tag, length = buf[pos], buf[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or size > 4 or pos + size > len(buf):
            raise ValueError("bad length")
        length = int.from_bytes(buf[pos : pos + size], "big")
        pos += size
    end = pos + length
    if end > len(buf):
        raise ValueError("truncated")
    return tag, pos, end


def _layout(der: bytes) -> _Layout | None:
    try:
        tag, start, _ = _tlv(der, 0)
        tbs_tag, position, _ = _tlv(der, start)
        if tag != 0x30 or tbs_tag != 0x30:
            return None
        field_tag, content, field_end = _tlv(der, position)
        if field_tag == 0xA0:  # explicit version
            position = field_end
            field_tag, content, field_end = _tlv(der, position)
        if field_tag != 0x02:
            return None
        serial = der[content:field_end]
        position = _tlv(der, field_end)[2]  # signature algorithm
        issuer_end = _tlv(der, position)[2]
        issuer = der[position:issuer_end]
        position = _tlv(der, issuer_end)[2]  # validity
        subject_end = _tlv(der, position)[2]
        return _Layout(serial=serial, issuer=issuer, subject=der[position:subject_end])
    except ValueError:
        return None


# -- facts ------------------------------------------------------------------------------------------


def _facts(der: bytes) -> _Facts:
    cached = _cache.get(der)
    if cached is not None:
        return cached
    layout = _layout(der)
    non_positive = layout is None or not any(layout.serial) or bool(layout.serial[0] & 0x80)
    try:
        if non_positive:
            # MakeCert-era negative serials: cryptography warns but parses; the warning is not ours to show
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                facts = _extract(der, layout)
        else:
            facts = _extract(der, layout)
    except CertificateParseError:
        raise
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateParseError(f"not a readable X.509 certificate: {exc}") from exc
    with _cache_lock:
        if len(_cache) >= _CACHE_LIMIT:
            del _cache[next(iter(_cache))]  # oldest first: insertion order is good enough here
        _cache[der] = facts
    return facts


def _extract(der: bytes, layout: _Layout | None) -> _Facts:
    cert = x509.load_der_x509_certificate(der)
    notes: list[str] = []
    subject = cert.subject
    subject_text = subject.rfc4514_string()
    # parsing every extension costs more than the rest of the certificate; most carry no SAN at all
    san_dns, san_ip = _sans(cert, notes) if _SAN_OID_DER in der else ([], [])
    key, key_algorithm, key_bits = _public_key(cert, notes)
    if layout is not None:
        names_equal = layout.issuer == layout.subject
        serial = layout.serial.hex().upper()
    else:
        names_equal = cert.issuer == subject
        serial = _twos_complement_hex(cert.serial_number)
    # identical encodings print identically: parsing the issuer again would only cost time
    issuer_text = subject_text if names_equal else cert.issuer.rfc4514_string()
    prototype = Certificate(
        thumbprint=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
        subject=subject_text,
        issuer=issuer_text,
        common_names=_common_names(subject),
        san_dns=san_dns,
        san_ip=san_ip,
        serial=serial,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_algorithm=key_algorithm,
        key_bits=key_bits,
        signature_hash=_signature_hash(cert),
        self_signed=names_equal and _self_signature_holds(cert, key, notes),
        source="",
        der_b64=base64.b64encode(der).decode("ascii"),
    )
    return _Facts(prototype=prototype, notes=tuple(notes))


def _common_names(subject: x509.Name) -> list[str]:
    """Every CN attribute in DER order; a single CN holding ``a;b`` (a MakeCert string that was not
    split into attributes) is kept as written and also contributes ``a`` and ``b``."""
    names: list[str] = []
    for attribute in subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.decode("latin-1")
        names.append(value)
        if ";" in value:
            for part in value.split(";"):
                part = part.strip()
                if part[:3].upper() == "CN=":
                    part = part[3:].strip()
                if part:
                    names.append(part)
    return list(dict.fromkeys(names))


def _sans(cert: x509.Certificate, notes: list[str]) -> tuple[list[str], list[str]]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return [], []
    except ValueError as exc:
        notes.append(f"extensions could not be read ({exc}); names from SAN are unknown")
        return [], []
    san = extension.value
    return (
        list(san.get_values_for_type(x509.DNSName)),
        [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
    )


_PublicKey: TypeAlias = (
    "rsa.RSAPublicKey | ec.EllipticCurvePublicKey | dsa.DSAPublicKey | ed25519.Ed25519PublicKey"
    " | ed448.Ed448PublicKey"
)

with warnings.catch_warnings():
    # old clusters still hold DSA certificates, and cryptography warns on every use of the class's name
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    _DSAPublicKey = dsa.DSAPublicKey


def _public_key(cert: x509.Certificate, notes: list[str]) -> tuple[_PublicKey | None, str, int | None]:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        try:
            dotted = cert.public_key_algorithm_oid.dotted_string
        except Exception:  # noqa: BLE001 - the OID itself may be what is broken
            dotted = "unknown"
        notes.append(f"public key not loadable ({exc})")
        return None, _KEY_ALGORITHM_OIDS.get(dotted, dotted), None
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, "EC", key.curve.key_size
    if isinstance(key, _DSAPublicKey):
        return key, "DSA", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return key, "Ed448", 456
    return None, type(key).__name__, None


def _signature_hash(cert: x509.Certificate) -> str | None:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return _LEGACY_SIGNATURE_OIDS.get(cert.signature_algorithm_oid.dotted_string)
    return algorithm.name if algorithm is not None else None


def _self_signature_holds(cert: x509.Certificate, key: _PublicKey | None, notes: list[str]) -> bool:
    """Issuer equals subject; does the certificate's own key verify it? Unverifiable counts as yes (the
    names say self-issued and nothing contradicts it), but a *failing* signature means another CA that
    happens to use the same name."""
    data, signature = cert.tbs_certificate_bytes, cert.signature
    try:
        if isinstance(key, rsa.RSAPublicKey):
            parameters = cert.signature_algorithm_parameters
            algorithm = cert.signature_hash_algorithm
            if algorithm is None:
                raise UnsupportedAlgorithm("no hash for the RSA signature")
            # cryptography reports no parameters for md5WithRSA; every RSA OID but PSS means PKCS#1 v1.5
            padding = parameters if isinstance(parameters, AsymmetricPadding) else PKCS1v15()
            key.verify(signature, data, padding, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            algorithm = cert.signature_hash_algorithm
            if algorithm is None:
                raise UnsupportedAlgorithm("no ECDSA hash")
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, _DSAPublicKey):
            algorithm = cert.signature_hash_algorithm
            if algorithm is None:
                raise UnsupportedAlgorithm("no DSA hash")
            key.verify(signature, data, algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            raise UnsupportedAlgorithm("public key not loadable")
    except InvalidSignature:
        return False
    except (UnsupportedAlgorithm, ValueError, TypeError) as exc:
        notes.append(f"issuer equals subject but the self-signature could not be checked ({exc}); "
                     "treated as self-signed")
    return True


def _twos_complement_hex(value: int) -> str:
    size = ((value if value >= 0 else ~value).bit_length() + 8) // 8
    return value.to_bytes(size, "big", signed=True).hex().upper()
