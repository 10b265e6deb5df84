"""netsh http show sslcert: keyed on value shapes, so builds and languages do not matter."""

from __future__ import annotations

import codecs

import pytest

from scaleguard.collectors.parsers.netsh import NetshParseError, parse_sslcert, parse_sslcert_with_notes
from scaleguard.lab.evidence import Binding, encode_text, netsh_sslcert_text
from scaleguard.snapshot.model import SslBinding

HASH = "01d207b300ca662f479beb884efe6ce328f77d53"
APPID = "{a1f96506-93e0-4c91-9171-05a2f6739e13}"

SERVER_2022 = f"""
SSL Certificate bindings:
-------------------------


    IP:port                      : 0.0.0.0:8391
    Certificate Hash             : {HASH}
    Application ID               : {APPID}
    Certificate Store Name       : Root
    Verify Client Certificate Revocation : Enabled
    Verify Revocation Using Cached Client Certificate Only : Disabled
    Usage Check                  : Enabled
    Revocation Freshness Time    : 0
    URL Retrieval Timeout        : 0
    Ctl Identifier               : (null)
    Ctl Store Name               : (null)
    DS Mapper Usage              : Disabled
    Negotiate Client Certificate : Disabled
    Reject Connections           : Disabled
    Disable HTTP2                : Not Set
    Disable QUIC                 : Not Set
    Disable TLS1.2               : Not Set
    Disable TLS1.3               : Set
    Disable OCSP Stapling        : Not Set
    Enable Token Binding         : Not Set
    Log Extended Events          : Not Set
    Disable Legacy TLS Versions  : Not Set
    Enable Session Ticket        : Not Set
 Extended Properties:
    PropertyId                   : 0
    Receive Window               : 1048576
 Extended Properties:
    PropertyId                   : 1
    Max Settings Per Frame       : 2796202
    Max Settings Per Minute      : 4294967295


    IP:port                      : [::]:8391
    Certificate Hash             : {"ab" * 20}
    Application ID               : {{4dc3e181-e14b-4a21-b022-59fc669b0914}}
    Certificate Store Name       : (null)
    Verify Client Certificate Revocation : Enabled
    Ctl Identifier               : (null)
    Ctl Store Name               : (null)
 Extended Properties:
    PropertyId                   : 0
    Receive Window               : 1048576


    Hostname:port                : master01.corp.example:443
    Certificate Hash             : {"CD" * 20}
    Application ID               : {{00000000-0000-0000-0000-000000000001}}
    Certificate Store Name       : My
    Ctl Store Name               : (null)

"""

GERMAN = f"""
SSL-Zertifikatbindungen:
-------------------------

    IP:Port                      : 0.0.0.0:8391
    Zertifikathash               : {HASH}
    Anwendungs-ID                : {APPID}
    Zertifikatspeichername       : Root
    Clientzertifikatsperrung ueberpruefen : Aktiviert
    Sperrung mit zwischengespeichertem Clientzertifikat ueberpruefen : Deaktiviert
    Verwendungspruefung          : Aktiviert
    Ctl-Bezeichner               : (null)
    Ctl-Speichername             : (null)

    IP:Port                      : 10.0.2.4:8391
    Zertifikathash               : {"EF" * 20}
    Anwendungs-ID                : {APPID}
    Zertifikatspeichername       : (null)

"""


def test_lab_output_round_trips_with_lower_case_hash_and_null_store() -> None:
    text = netsh_sslcert_text(
        [
            Binding("0.0.0.0:8391", HASH.upper(), store="Root"),
            Binding("10.0.2.4:8391", "AB" * 20, app_id="{4dc3e181-e14b-4a21-b022-59fc669b0914}", store=None),
        ]
    )
    assert parse_sslcert(encode_text(text, "utf-16-le")) == [
        SslBinding(
            ip_port="0.0.0.0:8391", kind="ipport", cert_hash=HASH.upper(), app_id=APPID, cert_store="Root"
        ),
        SslBinding(
            ip_port="10.0.2.4:8391",
            kind="ipport",
            cert_hash="AB" * 20,
            app_id="{4dc3e181-e14b-4a21-b022-59fc669b0914}",
            cert_store=None,
        ),
    ]


def test_server_2022_fields_ipv6_and_hostname_bindings() -> None:
    bindings, notes = parse_sslcert_with_notes(SERVER_2022.replace("\n", "\r\n").encode("utf-8"))
    assert bindings == [
        SslBinding(
            ip_port="0.0.0.0:8391", kind="ipport", cert_hash=HASH.upper(), app_id=APPID, cert_store="Root"
        ),
        SslBinding(
            ip_port="[::]:8391",
            kind="ipport",
            cert_hash="AB" * 20,
            app_id="{4dc3e181-e14b-4a21-b022-59fc669b0914}",
            cert_store=None,
        ),
        SslBinding(
            ip_port="master01.corp.example:443",
            kind="hostnameport",
            cert_hash="CD" * 20,
            app_id="{00000000-0000-0000-0000-000000000001}",
            cert_store="My",
        ),
    ]
    assert notes == []
    assert [(b.host, b.port) for b in bindings] == [
        ("0.0.0.0", 8391),
        ("::", 8391),
        ("master01.corp.example", 443),
    ]


def test_german_labels() -> None:
    data = codecs.BOM_UTF16_LE + GERMAN.replace("\n", "\r\n").encode("utf-16-le")
    assert parse_sslcert(data) == [
        SslBinding(
            ip_port="0.0.0.0:8391", kind="ipport", cert_hash=HASH.upper(), app_id=APPID, cert_store="Root"
        ),
        SslBinding(
            ip_port="10.0.2.4:8391", kind="ipport", cert_hash="EF" * 20, app_id=APPID, cert_store=None
        ),
    ]


def test_unknown_language_falls_back_to_shape_and_position() -> None:
    text = f"""
Liaisons de certificat SSL :
----------------------------

    IP:port                      : 0.0.0.0:8391
    Hachage du certificat        : {HASH}
    ID de l'application          : {APPID}
    Nom du magasin de certificats : Root
    Nom du magasin CTL           : (null)
"""
    assert parse_sslcert(text) == [
        SslBinding(
            ip_port="0.0.0.0:8391", kind="ipport", cert_hash=HASH.upper(), app_id=APPID, cert_store="Root"
        ),
    ]


def test_binding_without_hash_is_kept_and_noted() -> None:
    text = f"SSL Certificate bindings:\n------\n\n    IP:port : 0.0.0.0:8391\n    Application ID : {APPID}\n"
    bindings, notes = parse_sslcert_with_notes(text)
    assert bindings == [SslBinding(ip_port="0.0.0.0:8391", cert_hash=None, app_id=APPID, cert_store=None)]
    assert notes == ["binding 0.0.0.0:8391 shows no 40-hex certificate hash"]


def test_central_certificate_store_binding() -> None:
    text = f"    Central Certificate Store    : 443\n    Certificate Hash             : {HASH}\n"
    assert parse_sslcert(text) == [SslBinding(ip_port="*:443", kind="ccs", cert_hash=HASH.upper())]


@pytest.mark.parametrize(
    "text",
    [
        "The system cannot find the file specified.\r\n",
        "\r\nSSL Certificate bindings:\r\n-------------------------\r\n\r\n",
        "Das System kann die angegebene Datei nicht finden.\r\n",
    ],
)
def test_no_bindings_is_an_empty_list(text: str) -> None:
    assert parse_sslcert(encode_text(text, "utf-16-le")) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the netsh output is empty"),
        (codecs.BOM_UTF16_LE, "the netsh output is empty"),
        (
            b"The requested operation requires elevation (Run as administrator).\r\n",
            "not `netsh http show sslcert` output (68 characters in 1 line(s), no binding block and no "
            "bindings header)",
        ),
        (
            b"<html>hello</html>",
            "not `netsh http show sslcert` output (18 characters in 1 line(s), no binding block and no "
            "bindings header)",
        ),
    ],
)
def test_text_that_is_not_netsh_output_is_unknown_not_empty(data: bytes, message: str) -> None:
    with pytest.raises(NetshParseError) as caught:
        parse_sslcert(data)
    assert str(caught.value) == message


def test_time_like_values_do_not_open_bindings() -> None:
    text = (
        f"SSL Certificate bindings:\n-----\n    IP:port : 0.0.0.0:8391\n    Certificate Hash : {HASH}\n"
        "    Some Timeout : 0:10\n"
    )
    assert [b.ip_port for b in parse_sslcert(text)] == ["0.0.0.0:8391"]
