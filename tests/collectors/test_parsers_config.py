"""Settings files: any shape the real file may turn out to have, values kept exactly as written."""

from __future__ import annotations

import codecs
import json

import pytest

from scaleguard.collectors.parsers.config import parse_config, parse_config_with_notes
from scaleguard.lab.evidence import encode_text, settings_json, settings_xml

THUMB = "01D207B300CA662F479BEB884EFE6CE328F77D53"
MASTER: dict[str, str | int] = {
    "PortNumber": 8391,
    "SSLCertThumbprint": THUMB,
    "SqlServerName": "SQL01\\INST",
}
WORKER: dict[str, str | int] = {
    "DisplayName": "WORKER01",
    "MasterEndpoint": "https://master01.corp.example:8391",
    "MasterHttpsCertThumbprint": THUMB,
    "WorkerHttpsCertThumbprint": "AB" * 20,
    "StoreLocation": "LocalMachine",
    "StoreName": "My",
}
MASTER_TEXT = {"PortNumber": "8391", "SSLCertThumbprint": THUMB, "SqlServerName": "SQL01\\INST"}


def test_element_form_as_the_lab_writes_it() -> None:
    data = encode_text(settings_xml("MasterSettings", MASTER), "utf-8-sig")
    config, notes = parse_config_with_notes(data, "MasterSettings.config", kind="master")
    assert config.format == "xml"
    assert config.encoding == "utf-8-sig"
    assert config.parse_error is None
    assert config.settings == MASTER_TEXT
    assert config.path == "MasterSettings.config"
    assert notes == []


def test_plain_utf8_is_recorded_as_such() -> None:
    data = settings_xml("WorkerSettings", WORKER).encode("utf-8")
    config = parse_config(data, "WorkerSettings.config", kind="worker")
    assert config.encoding == "utf-8"
    assert config.settings == {k: str(v) for k, v in WORKER.items()}


@pytest.mark.parametrize(("encoding", "label"), [("utf-16-le", "utf-16-le"), ("utf-16-be", "utf-16-be")])
def test_utf16_with_bom_whose_declaration_says_utf8(encoding: str, label: str) -> None:
    # settings_xml declares encoding="utf-8": exactly the hand-edit mismatch (the bytes are UTF-16)
    data = encode_text(settings_xml("MasterSettings", MASTER), encoding)  # type: ignore[arg-type]
    config, notes = parse_config_with_notes(data, "MasterSettings.config", kind="master")
    assert config.parse_error is None
    assert config.encoding == label
    assert config.settings == MASTER_TEXT
    assert notes == [f"the XML declaration says 'utf-8' but the bytes are {label}; read as {label}"]


def test_utf8_file_whose_declaration_says_utf16() -> None:
    text = (
        '<?xml version="1.0" encoding="utf-16"?>\r\n'
        "<MasterSettings><PortNumber>8391</PortNumber></MasterSettings>"
    )
    config, notes = parse_config_with_notes(codecs.BOM_UTF8 + text.encode("utf-8"), "m", kind="master")
    assert config.settings == {"PortNumber": "8391"}
    assert notes == ["the XML declaration says 'utf-16' but the bytes are utf-8-sig; read as utf-8-sig"]


def test_utf16_without_bom() -> None:
    data = settings_xml("MasterSettings", MASTER).replace(' encoding="utf-8"', "").encode("utf-16-le")
    config = parse_config(data, "m", kind="master")
    assert (config.encoding, config.settings) == ("utf-16-le-nobom", MASTER_TEXT)


def test_json_config() -> None:
    data = encode_text(settings_json(WORKER), "utf-8-sig")
    config = parse_config(data, "WorkerSettings.config", kind="worker")
    assert config.format == "json"
    assert config.parse_error is None
    assert config.settings == {k: str(v) for k, v in WORKER.items()}


def test_json_keys_at_any_depth_any_case_scalars_rendered_as_text() -> None:
    document = {
        "configuration": {
            "masterSettings": [{"portnumber": 8391}, {"SSLCERTTHUMBPRINT": THUMB}],
            "sqlConnectionTimeoutInSecs": 15.5,
            "Unrelated": {"x": 1},
        }
    }
    config = parse_config(json.dumps(document).encode(), "m", kind="master")
    assert config.settings == {
        "PortNumber": "8391",
        "SSLCertThumbprint": THUMB,
        "SqlConnectionTimeoutInSecs": "15.5",
    }


def test_json_booleans_nulls_and_key_value_pairs() -> None:
    document = {
        "settings": [{"key": "TaskLogEnabled", "value": True}, {"Name": "MasterEndpoint", "Value": None}]
    }
    config = parse_config(json.dumps(document), "w", kind="worker")
    assert config.settings == {"TaskLogEnabled": "true", "MasterEndpoint": ""}
    assert config.encoding is None  # handed over as text: the bytes were never seen


def test_namespaced_xml_with_prefix_and_default_namespace() -> None:
    prefixed = (
        '<s:WorkerSettings xmlns:s="urn:ssis:scaleout"><s:Agent>'
        f"<s:MasterEndpoint>https://m:8391</s:MasterEndpoint><s:MasterHttpsCertThumbprint>{THUMB}"
        "</s:MasterHttpsCertThumbprint></s:Agent></s:WorkerSettings>"
    )
    defaulted = (
        '<WorkerSettings xmlns="urn:ssis:scaleout"><Agent>'
        f"<MasterEndpoint>https://m:8391</MasterEndpoint><MasterHttpsCertThumbprint>{THUMB}"
        "</MasterHttpsCertThumbprint></Agent></WorkerSettings>"
    )
    for text in (prefixed, defaulted):
        config = parse_config(text.encode(), "w", kind="worker")
        assert config.settings == {"MasterEndpoint": "https://m:8391", "MasterHttpsCertThumbprint": THUMB}


def test_attribute_form_and_case_insensitive_names() -> None:
    text = f'<MasterSettings portnumber="8391" xmlns:x="urn:x" x:SSLCertThumbprint="{THUMB}"/>'
    config = parse_config(text.encode(), "m", kind="master")
    assert config.settings == {"PortNumber": "8391", "SSLCertThumbprint": THUMB}


def test_dotnet_appsettings_and_applicationsettings_pairs() -> None:
    text = (
        "<configuration><appSettings>"
        f'<add key="SSLCertThumbprint" value="{THUMB}"/>'
        "</appSettings><applicationSettings><Master.Properties.Settings>"
        '<setting name="PortNumber" serializeAs="String"><value>8391</value></setting>'
        "</Master.Properties.Settings></applicationSettings></configuration>"
    )
    config = parse_config(text.encode(), "m", kind="master")
    assert config.settings == {"SSLCertThumbprint": THUMB, "PortNumber": "8391"}


def test_value_attribute_on_a_setting_element_and_empty_elements() -> None:
    text = (
        f'<MasterSettings><SSLCertThumbprint value="{THUMB}"/>'
        "<SqlServerName></SqlServerName></MasterSettings>"
    )
    config = parse_config(text.encode(), "m", kind="master")
    assert config.settings == {"SSLCertThumbprint": THUMB, "SqlServerName": ""}


def test_kind_limits_the_names_that_count() -> None:
    text = (
        "<MasterSettings><PortNumber>8391</PortNumber><Description>my master</Description></MasterSettings>"
    )
    assert parse_config(text.encode(), "m", kind="master").settings == {"PortNumber": "8391"}
    assert parse_config(text.encode(), "m").settings == {"PortNumber": "8391", "Description": "my master"}


def test_both_documented_spellings_are_kept_apart() -> None:
    text = (
        "<WorkerSettings><HeartbeatErrorTollerance>00:10:00</HeartbeatErrorTollerance>"
        "<LeaseInternval>00:01:00</LeaseInternval></WorkerSettings>"
    )
    config = parse_config(text.encode(), "w", kind="worker")
    assert config.settings == {"HeartbeatErrorTollerance": "00:10:00", "LeaseInternval": "00:01:00"}


@pytest.mark.parametrize(
    "thumbprint",
    [
        "01 d2 07 b3 00 ca 66 2f 47 9b eb 88 4e fe 6c e3 28 f7 7d 53",
        "\u200e" + THUMB,
        THUMB.lower(),
        " " + THUMB + " ",
    ],
)
def test_dirty_thumbprints_are_kept_verbatim(thumbprint: str) -> None:
    for fmt, text in (
        ("xml", settings_xml("MasterSettings", {"SSLCertThumbprint": thumbprint})),
        ("json", settings_json({"SSLCertThumbprint": thumbprint})),
    ):
        config = parse_config(encode_text(text, "utf-16-le"), "m", kind="master")
        assert config.format == fmt
        assert config.settings == {"SSLCertThumbprint": thumbprint}


HOSTILE = ["<script>alert('x')</script>", "=cmd|' /C calc'!A0", '"; DROP TABLE x; --', "{{7*7}}"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_data_not_markup(value: str) -> None:
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    xml = (
        f"<WorkerSettings><MasterEndpoint>{escaped}</MasterEndpoint><DisplayName>{escaped}</DisplayName>"
        "</WorkerSettings>"
    )
    assert parse_config(xml.encode(), "w", kind="worker").settings == {
        "MasterEndpoint": value,
        "DisplayName": value,
    }
    document = json.dumps({"MasterEndpoint": value})
    assert parse_config(document.encode(), "w", kind="worker").settings == {"MasterEndpoint": value}


def test_conflicting_duplicates_keep_the_first_and_say_so() -> None:
    text = (
        "<MasterSettings><PortNumber>8391</PortNumber><x><PortNumber>9000</PortNumber></x>"
        "<PortNumber>8391</PortNumber></MasterSettings>"
    )
    config, notes = parse_config_with_notes(text.encode(), "m", kind="master")
    assert config.settings == {"PortNumber": "8391"}
    assert notes == [
        "PortNumber is given more than once with different values; "
        "the first one ('8391') is used, '9000' is ignored"
    ]


def test_truncated_xml_is_a_parse_error_with_no_settings() -> None:
    data = encode_text(settings_xml("MasterSettings", MASTER), "utf-8-sig")[:-40]
    config = parse_config(data, "MasterSettings.config", kind="master")
    assert config.format == "xml"
    assert config.settings == {}
    assert config.parse_error is not None
    assert config.parse_error.startswith("not well-formed XML: ")


def test_truncated_json_is_a_parse_error() -> None:
    config = parse_config(settings_json(MASTER)[:-5].encode(), "m", kind="master")
    assert config.format == "json"
    assert config.settings == {}
    assert config.parse_error is not None and config.parse_error.startswith("not valid JSON: ")


def test_garbage_is_neither_xml_nor_json() -> None:
    config = parse_config(b"PK\x03\x04\x14\x00binary junk", "m", kind="master")
    assert config.format == "unknown"
    assert config.settings == {}
    assert config.parse_error == "neither XML nor JSON (starts with a letter, 17 characters)"


def test_ini_style_text_is_neither_xml_nor_json() -> None:
    config = parse_config(b"PortNumber=8391\r\n", "m", kind="master")
    assert (config.format, config.parse_error) == (
        "unknown",
        "neither XML nor JSON (starts with a letter, 17 characters)",
    )


@pytest.mark.parametrize("data", [b"", codecs.BOM_UTF8, b"  \r\n", codecs.BOM_UTF16_LE])
def test_empty_file(data: bytes) -> None:
    config = parse_config(data, "m", kind="master")
    assert (config.format, config.parse_error, config.settings) == ("unknown", "the file is empty", {})


def test_entity_expansion_is_refused() -> None:
    text = (
        '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY lol "lol">]>'
        "<MasterSettings><PortNumber>&lol;</PortNumber></MasterSettings>"
    )
    config = parse_config(text.encode(), "m", kind="master")
    assert config.settings == {}
    assert config.parse_error is not None and config.parse_error.startswith(
        "refused unsafe XML (EntitiesForbidden)"
    )


def test_crlf_inside_values_is_what_xml_makes_of_it() -> None:
    text = "<WorkerSettings>\r\n<Description>line1\r\nline2</Description>\r\n</WorkerSettings>\r\n"
    assert parse_config(text.encode(), "w", kind="worker").settings == {"Description": "line1\nline2"}
