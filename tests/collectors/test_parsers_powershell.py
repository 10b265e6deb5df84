"""ConvertTo-Json output and the rows built from it (services, keys, host, SCHANNEL)."""

from __future__ import annotations

import codecs
from datetime import UTC, datetime

import pytest

from scaleguard.collectors.parsers.host import host_from_json, schannel_from_json
from scaleguard.collectors.parsers.keys import KeyFact, apply_key_facts, key_facts_from_json
from scaleguard.collectors.parsers.psjson import (
    PowerShellJsonError,
    as_rows,
    ci_get,
    loads_powershell_json,
)
from scaleguard.collectors.parsers.services import services_from_json
from scaleguard.lab.evidence import powershell_json
from scaleguard.snapshot.model import Certificate, CertificateStore, HostIdentity, Schannel, Service

THUMB = "01D207B300CA662F479BEB884EFE6CE328F77D53"
OTHER = "AB" * 20
MY = "Microsoft.PowerShell.Security\\Certificate::LocalMachine\\My"
ROOT = "Microsoft.PowerShell.Security\\Certificate::LocalMachine\\Root"


def test_lone_object_with_double_space_and_bom() -> None:
    text = powershell_json([{"Name": "SSISScaleOutMaster150", "State": "Running"}])
    assert '"Name":  "SSISScaleOutMaster150"' in text
    value = loads_powershell_json(codecs.BOM_UTF8 + text.encode())
    assert value == {"Name": "SSISScaleOutMaster150", "State": "Running"}
    assert as_rows(value) == [{"Name": "SSISScaleOutMaster150", "State": "Running"}]


def test_utf16_array() -> None:
    text = powershell_json([{"a": 1}, {"a": 2}])
    assert as_rows(loads_powershell_json(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))) == [
        {"a": 1},
        {"a": 2},
    ]


@pytest.mark.parametrize(
    "data", [b"", b"\r\n", codecs.BOM_UTF8, codecs.BOM_UTF16_LE + "\r\n".encode("utf-16-le")]
)
def test_empty_pipeline_is_none_and_no_rows(data: bytes) -> None:
    assert loads_powershell_json(data) is None
    assert as_rows(None) == []


def test_rows_drop_non_objects() -> None:
    assert as_rows([{"a": 1}, "x", 3, None]) == [{"a": 1}]
    assert as_rows("x") == []


def test_invalid_json_is_an_error_with_context() -> None:
    with pytest.raises(PowerShellJsonError) as caught:
        loads_powershell_json(b'[{"Name": "x"')
    assert str(caught.value).startswith("not valid JSON: ")
    assert "line 1 column 14 (13 characters)" in str(caught.value)
    assert "Name" not in str(caught.value)  # the file is described, never quoted


def test_ci_get_prefers_exact_then_any_case() -> None:
    assert ci_get({"name": "a"}, "Name") == "a"
    assert ci_get({"Status": 4}, "State", "Status") == 4
    assert ci_get({"x": 1}, "Name") is None


def test_services_from_win32_service_strings() -> None:
    value = {
        "Name": "SSISScaleOutWorker150",
        "State": "Running",
        "StartMode": "Auto",
        "StartName": "NT Service\\SSISScaleOutWorker150",
    }
    assert services_from_json(value) == (
        [
            Service(
                name="SSISScaleOutWorker150",
                state="Running",
                start_mode="Auto",
                account="NT Service\\SSISScaleOutWorker150",
            )
        ],
        [],
    )


@pytest.mark.parametrize(
    ("state", "mode", "expected_state", "expected_mode"),
    [
        (4, 2, "Running", "Auto"),
        (1, 3, "Stopped", "Manual"),
        (7, 4, "Paused", "Disabled"),
        ("4", "2", "Running", "Auto"),
    ],
)
def test_numeric_states_and_start_modes(
    state: object, mode: object, expected_state: str, expected_mode: str
) -> None:
    services, notes = services_from_json([{"Name": "S", "State": state, "StartMode": mode}])
    assert services == [Service(name="S", state=expected_state, start_mode=expected_mode)]
    assert notes == []


def test_get_service_column_names() -> None:
    services, _ = services_from_json([{"Name": "S", "Status": 4, "StartType": 2, "UserName": "CORP\\svc"}])
    assert services == [Service(name="S", state="Running", start_mode="Auto", account="CORP\\svc")]


def test_unknown_numbers_and_nameless_rows_are_noted() -> None:
    services, notes = services_from_json([{"State": "Running"}, {"Name": "S", "State": 99, "StartMode": [1]}])
    assert services == [Service(name="S", state=None, start_mode=None)]
    assert notes == [
        "row 1 has no service Name; skipped",
        "S: State 99 is not a known value; treated as unknown",
        "S: StartMode [1] is not understood; treated as unknown",
    ]


def test_key_facts_columns_and_quirks() -> None:
    rows = [
        {
            "Thumbprint": THUMB,
            "HasPrivateKey": True,
            "PSParentPath": MY,
            "KeyReaders": ["NT Service\\W", "BUILTIN\\Administrators"],
        },
        {"thumbprint": THUMB.lower(), "hasprivatekey": "False", "psparentpath": ROOT},
        {
            "Thumbprint": OTHER,
            "HasPrivateKey": True,
            "PSParentPath": MY,
            "KeyReaders": "NT Service\\W; CORP\\svc",
        },
        {
            "Thumbprint": OTHER,
            "HasPrivateKey": True,
            "PSPath": ROOT + "\\" + OTHER,
            "KeyReaders": "System.Object[]",
        },
        {"Thumbprint": "nonsense", "HasPrivateKey": True},
        {
            "Thumbprint": THUMB,
            "HasPrivateKey": True,
            "KeyReaders": [{"IdentityReference": {"Value": "CORP\\svc"}}],
        },
        {"Thumbprint": THUMB, "HasPrivateKey": None, "KeyReaders": None},
        {"Thumbprint": THUMB, "KeyReaders": []},
    ]
    facts, notes = key_facts_from_json(rows)
    assert facts == [
        KeyFact(THUMB, "My", True, ("NT Service\\W", "BUILTIN\\Administrators")),
        KeyFact(THUMB, "Root", False, None),
        KeyFact(OTHER, "My", True, ("NT Service\\W", "CORP\\svc")),
        KeyFact(OTHER, "Root", True, None),
        KeyFact(THUMB, None, True, ("CORP\\svc",)),
        KeyFact(THUMB, None, None, None),
        KeyFact(THUMB, None, None, ()),
    ]
    assert notes == [
        f"{OTHER}: KeyReaders was cut off by ConvertTo-Json (-Depth too small); readers unknown",
        "row 5: Thumbprint 'nonsense' is not a thumbprint; skipped",
    ]


def _cert(thumbprint: str) -> Certificate:
    now = datetime.now(UTC)
    return Certificate(
        thumbprint=thumbprint,
        subject="CN=x",
        issuer="CN=x",
        common_names=["x"],
        serial="01",
        not_before=now,
        not_after=now,
        key_algorithm="RSA",
        self_signed=True,
        source="x",
    )


def test_apply_key_facts_matches_thumbprint_and_store() -> None:
    root = CertificateStore(name="Root", certificates=[_cert(THUMB)])
    my = CertificateStore(name="My", certificates=[_cert(THUMB), _cert(OTHER)])
    facts = [
        KeyFact(THUMB, "My", True, ("NT Service\\W",)),
        KeyFact(THUMB, "Root", False, None),
        KeyFact("CD" * 20, "My", True, None),
    ]
    unmatched = apply_key_facts(facts, [root, my, None])
    assert [(c.has_private_key, c.key_readers) for c in root.certificates] == [(False, None)]
    assert [(c.has_private_key, c.key_readers) for c in my.certificates] == [
        (True, ["NT Service\\W"]),
        (None, None),
    ]
    assert unmatched == [KeyFact("CD" * 20, "My", True, None)]


def test_a_row_without_store_applies_wherever_the_certificate_is() -> None:
    root = CertificateStore(name="Root", certificates=[_cert(THUMB)])
    my = CertificateStore(name="My", certificates=[_cert(THUMB)])
    assert apply_key_facts([KeyFact(THUMB, None, True, None)], [root, my]) == []
    assert [root.certificates[0].has_private_key, my.certificates[0].has_private_key] == [True, True]


def test_host_identity() -> None:
    identity, notes = host_from_json(
        {"fqdn": "worker01.corp.example", "addresses": ["10.0.2.8", " fd00::8 "]}, "WORKER01"
    )
    assert identity == HostIdentity(
        computer_name="WORKER01", fqdn="worker01.corp.example", addresses=["10.0.2.8", "fd00::8"]
    )
    assert notes == []


def test_host_identity_variations() -> None:
    identity, notes = host_from_json(
        [{"FQDN": "", "Addresses": "10.0.2.8", "ComputerName": "OTHER"}], "WORKER01"
    )
    assert identity == HostIdentity(computer_name="WORKER01", fqdn=None, addresses=["10.0.2.8"])
    assert notes == ["names the computer 'OTHER' but the folder is 'WORKER01'; the folder name is used"]
    identity, notes = host_from_json(None, "W")
    assert identity == HostIdentity(computer_name="W")
    assert notes == ["holds no JSON object; FQDN and addresses unknown"]
    identity, notes = host_from_json({"fqdn": 5, "addresses": ["10.0.0.1", 7]}, "W")
    assert identity == HostIdentity(computer_name="W", fqdn=None, addresses=["10.0.0.1"])
    assert notes == [
        "fqdn 5 is not a string; unknown",
        "addresses ['10.0.0.1', 7] holds values that are not strings; they were dropped",
    ]


def test_schannel() -> None:
    assert schannel_from_json({"ClientAuthTrustMode": 2, "SendTrustedIssuerList": 0}) == (
        Schannel(client_auth_trust_mode=2, send_trusted_issuer_list=0),
        [],
    )
    assert schannel_from_json({"clientauthtrustmode": "2"}) == (Schannel(client_auth_trust_mode=2), [])
    assert schannel_from_json({"ClientAuthTrustMode": "two"}) == (
        Schannel(),
        ["ClientAuthTrustMode 'two' is not a number; unknown"],
    )
