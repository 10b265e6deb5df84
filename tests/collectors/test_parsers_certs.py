"""Certificates in every shape Windows exports them, including the legacy ones Scale Out clusters carry."""

from __future__ import annotations

import base64
import hashlib
import os
import warnings

import asn1crypto.x509 as asn1_x509
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from scaleguard.collectors.parsers.certs import (
    CertificateParseError,
    load_certificates,
    load_certificates_with_notes,
    parse_certificate,
)
from scaleguard.lab.certs import IssuedCertificate
from tests.collectors.conftest import Pki


def _b64_lines(der: bytes) -> str:
    text = base64.b64encode(der).decode()
    return "\r\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + "\r\n"


def test_der_certificate_facts(pki: Pki) -> None:
    issued = pki.worker
    cert = parse_certificate(issued.der, source="certs/My/worker.cer")
    assert cert.thumbprint == hashlib.sha1(issued.der).hexdigest().upper() == issued.thumbprint
    assert cert.subject == "CN=WORKER01"
    assert cert.issuer == "CN=WORKER01"
    assert cert.common_names == ["WORKER01"]
    assert cert.san_dns == ["worker01.corp.example"]
    assert cert.san_ip == ["10.0.2.8", "fd00::8"]
    assert cert.names() == ["WORKER01", "worker01.corp.example", "10.0.2.8", "fd00::8"]
    assert cert.not_before == issued.certificate.not_valid_before_utc
    assert cert.not_after == issued.certificate.not_valid_after_utc
    assert (cert.key_algorithm, cert.key_bits, cert.signature_hash) == ("RSA", 2048, "sha1")
    assert cert.self_signed is True
    assert cert.source == "certs/My/worker.cer"
    assert base64.b64decode(cert.der_b64 or "") == issued.der
    assert (cert.has_private_key, cert.key_readers) == (None, None)


def test_serial_is_windows_hex_of_the_der_integer(pki: Pki) -> None:
    serial = pki.worker.certificate.serial_number
    expected = serial.to_bytes((serial.bit_length() + 8) // 8, "big").hex().upper()
    assert parse_certificate(pki.worker.der, source="x").serial == expected


def test_makecert_multiple_cn_attributes(pki: Pki) -> None:
    cert = parse_certificate(pki.master.der, source="x")
    assert cert.common_names == ["MASTER01", "10.0.2.4"]
    assert cert.subject == "CN=10.0.2.4,CN=MASTER01"
    assert cert.names() == ["MASTER01", "10.0.2.4"]


def test_a_single_cn_holding_semicolons_is_kept_and_split(pki: Pki) -> None:
    cert = parse_certificate(pki.semicolon_cn.der, source="x")
    assert cert.common_names == ["WorkerMachine;CN=10.0.2.9", "WorkerMachine", "10.0.2.9"]


def test_sha1_and_md5_signatures_really_verify_as_self_signed(pki: Pki) -> None:
    [sha1], sha1_notes = load_certificates_with_notes(pki.master.der, source="x")
    [md5], md5_notes = load_certificates_with_notes(pki.md5.der, source="x")
    assert (sha1.signature_hash, sha1.self_signed, sha1_notes) == ("sha1", True, [])
    assert (md5.signature_hash, md5.self_signed, md5_notes) == ("md5", True, [])


def test_unsupported_signature_algorithm_does_not_crash(pki: Pki) -> None:
    parsed = asn1_x509.Certificate.load(pki.worker.der)
    tbs = parsed["tbs_certificate"].copy()
    tbs["signature"] = asn1_x509.SignedDigestAlgorithm({"algorithm": "md2_rsa"})
    der = asn1_x509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": {"algorithm": "md2_rsa"},
            "signature_value": bytes(256),
        }
    ).dump(force=True)
    [cert], notes = load_certificates_with_notes(der, source="x")
    assert (cert.signature_hash, cert.self_signed, cert.common_names) == ("md2", True, ["WORKER01"])
    assert len(notes) == 1
    assert notes[0].startswith("issuer equals subject but the self-signature could not be checked (")
    assert notes[0].endswith("); treated as self-signed")


def test_negative_serial_parses_without_leaking_cryptography_warnings(pki: Pki) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cert = parse_certificate(pki.negative.der, source="x")
    assert cert.serial == "CFC7"  # -12345 in two's complement, as Windows shows it
    assert cert.common_names == ["NEGATIVE01"]
    assert cert.self_signed is True
    assert [str(w.message) for w in caught] == []


def test_issued_by_a_ca_is_not_self_signed(pki: Pki) -> None:
    cert = parse_certificate(pki.issued.der, source="x")
    assert cert.issuer == "CN=Contoso Root CA"
    assert cert.subject == "CN=app.corp.example"
    assert cert.self_signed is False
    assert parse_certificate(pki.ca.der, source="x").self_signed is True


def test_same_name_but_another_key_is_not_self_signed(pki: Pki) -> None:
    cert = parse_certificate(pki.impostor.der, source="x")
    assert cert.issuer == cert.subject == "CN=Lookalike"
    assert cert.self_signed is False


def test_key_algorithms_and_sizes(pki: Pki) -> None:
    ec = parse_certificate(pki.ec.der, source="x")
    weak = parse_certificate(pki.weak.der, source="x")
    assert (ec.key_algorithm, ec.key_bits, ec.signature_hash, ec.self_signed) == ("EC", 256, "sha256", True)
    assert (weak.key_algorithm, weak.key_bits) == ("RSA", 1024)


def test_pem_bundle_gives_every_certificate_with_numbered_sources(pki: Pki) -> None:
    bundle = pki.master.pem() + b"\r\n" + pki.worker.pem() + pki.ca.pem()
    certs = load_certificates(bundle, source="certs/Root/bundle.pem")
    assert [c.thumbprint for c in certs] == [pki.master.thumbprint, pki.worker.thumbprint, pki.ca.thumbprint]
    assert [c.source for c in certs] == [f"certs/Root/bundle.pem#{i}" for i in (1, 2, 3)]


def test_single_pem_keeps_the_plain_source(pki: Pki) -> None:
    [cert] = load_certificates(pki.master.pem(), source="certs/Root/m.crt")
    assert (cert.thumbprint, cert.source) == (pki.master.thumbprint, "certs/Root/m.crt")


def test_private_key_blocks_are_skipped_never_read(pki: Pki) -> None:
    certs, notes = load_certificates_with_notes(pki.worker.key_pem() + pki.worker.pem(), source="x")
    assert [c.thumbprint for c in certs] == [pki.worker.thumbprint]
    assert notes == ["ignored a PEM block of type 'PRIVATE KEY'"]


def test_pem_with_only_a_key_is_not_a_certificate(pki: Pki) -> None:
    with pytest.raises(CertificateParseError) as caught:
        load_certificates(pki.worker.key_pem(), source="x")
    assert str(caught.value) == (
        "ignored a PEM block of type 'PRIVATE KEY'; "
        "not a certificate: the PEM file holds no CERTIFICATE block"
    )


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode("ascii"),
        lambda text: b"\xff\xfe" + text.encode("utf-16-le"),  # Out-File in Windows PowerShell
        lambda text: text.replace("\r\n", "").encode("ascii"),
    ],
)
def test_bare_base64_without_headers(pki: Pki, encode: object) -> None:
    data = encode(_b64_lines(pki.master.der))  # type: ignore[operator]
    [cert] = load_certificates(data, source="x")
    assert cert.thumbprint == pki.master.thumbprint


def test_base64_text_handed_over_as_str(pki: Pki) -> None:
    [cert] = load_certificates(base64.b64encode(pki.worker.der).decode(), source="live:My")
    assert cert.thumbprint == pki.worker.thumbprint


def test_trailing_bytes_after_der_are_ignored_with_a_note(pki: Pki) -> None:
    certs, notes = load_certificates_with_notes(pki.worker.der + b"\r\n\x00junk", source="x")
    assert [c.thumbprint for c in certs] == [pki.worker.thumbprint]
    assert notes == ["7 bytes after the certificate were ignored"]
    certs, notes = load_certificates_with_notes(pki.worker.der + b"\r\n", source="x")
    assert ([c.thumbprint for c in certs], notes) == ([pki.worker.thumbprint], [])


def test_pkcs7_bundle(pki: Pki) -> None:
    p7 = pkcs7.serialize_certificates([pki.master.certificate, pki.worker.certificate], Encoding.DER)
    certs = load_certificates(p7, source="certs/Root/chain.p7b")
    assert sorted(c.thumbprint for c in certs) == sorted([pki.master.thumbprint, pki.worker.thumbprint])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (
            b"hello, I am a text file\r\n",
            "not a certificate: no DER structure, PEM block or base64 text (25 bytes)",
        ),
        (
            b"PK\x03\x04" + bytes(64),
            "not a certificate: no DER structure, PEM block or base64 text (68 bytes)",
        ),
        (b"\x30\x82\x01\x00" + bytes(16), "not a readable X.509 certificate"),
        (
            b"-----BEGIN CERTIFICATE-----\r\nnot base64 at all!\r\n-----END CERTIFICATE-----\r\n",
            "a CERTIFICATE PEM block is not valid base64",
        ),
    ],
)
def test_not_a_certificate_is_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(CertificateParseError) as caught:
        load_certificates(data, source="x")
    assert str(caught.value).startswith(message)


def test_random_bytes_are_not_a_certificate() -> None:
    with pytest.raises(CertificateParseError):
        load_certificates(b"\x30" + os.urandom(2000), source="x")


def test_copies_from_the_cache_share_nothing_mutable(pki: Pki) -> None:
    first = parse_certificate(pki.master.der, source="certs/Root/a.cer")
    second = parse_certificate(pki.master.der, source="certs/My/a.cer")
    first.has_private_key = True
    first.common_names.append("changed")
    assert (second.has_private_key, second.common_names, second.source) == (
        None,
        ["MASTER01", "10.0.2.4"],
        "certs/My/a.cer",
    )
    assert first.model_dump(exclude={"source", "has_private_key", "common_names"}) == second.model_dump(
        exclude={"source", "has_private_key", "common_names"}
    )


def _issued(pki: Pki, name: str) -> IssuedCertificate:
    issued: IssuedCertificate = getattr(pki, name)
    return issued


@pytest.mark.parametrize(
    "name", ["master", "worker", "ca", "issued", "md5", "negative", "ec", "weak", "impostor"]
)
def test_der_pem_and_base64_forms_agree(pki: Pki, name: str) -> None:
    issued = _issued(pki, name)
    forms = [issued.der, issued.pem(), _b64_lines(issued.der).encode()]
    dumps = [load_certificates(form, source="x")[0].model_dump() for form in forms]
    assert dumps[0] == dumps[1] == dumps[2]
