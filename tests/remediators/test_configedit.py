"""The config editor changes one value and nothing else — checked on the bytes, not on a re-parse.

Every test compares the edited file with the original byte for byte: the common prefix and suffix must
cover everything except the old value's bytes, which must be replaced by exactly the new value's bytes
in the file's own encoding. Then the real parser must read the new value and every other setting
unchanged.
"""

from __future__ import annotations

import codecs
import json

import pytest

from scaleguard.collectors.parsers.config import parse_config
from scaleguard.lab.evidence import encode_text, settings_json, settings_xml
from scaleguard.remediators.configedit import ConfigEditError, edit_setting, read_setting

OLD = "\u200e9f 3a 11 0c 2e 44 55 66 77 88 99 aa bb cc dd ee ff 00 11 22"
NEW = "9F3A110C2E445566778899AABBCCDDEEFF001122"
OTHER = {
    "PortNumber": "8391",
    "SqlServerName": "MASTER01\\SQL",
    "CleanupCompletedJobsIntervalInMs": "43200000",
}


def diff(before: bytes, after: bytes) -> tuple[bytes, bytes, int, int]:
    """(removed bytes, inserted bytes, common prefix length, common suffix length)."""
    prefix = 0
    while prefix < min(len(before), len(after)) and before[prefix] == after[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < min(len(before), len(after)) - prefix
        and before[len(before) - 1 - suffix] == after[len(after) - 1 - suffix]
    ):
        suffix += 1
    return before[prefix : len(before) - suffix], after[prefix : len(after) - suffix], prefix, suffix


def assert_only_value_changed(before: bytes, after: bytes, codec: str, old: str, new: str) -> None:
    removed, inserted, prefix, suffix = diff(before, after)
    old_bytes, new_bytes = old.encode(codec), new.encode(codec)
    # the changed region lies inside the old value and the new value (shared leading/trailing characters
    # of the two values are legitimately part of the common prefix/suffix)
    assert old_bytes.find(removed) >= 0 and new_bytes.find(inserted) >= 0
    assert len(before) - len(after) == len(old_bytes) - len(new_bytes)
    assert before[:prefix] == after[:prefix] and before[len(before) - suffix :] == after[len(after) - suffix :]
    start = before.find(old_bytes)
    assert start >= 0 and after[start : start + len(new_bytes)] == new_bytes
    assert before[:start] == after[:start]
    assert before[start + len(old_bytes) :] == after[start + len(new_bytes) :]


def settings_read(data: bytes) -> dict[str, str]:
    parsed = parse_config(data, "MasterSettings.config", kind="master")
    assert parsed.parse_error is None
    return parsed.settings


@pytest.mark.parametrize(
    ("encoding", "crlf", "codec", "bom"),
    [
        ("utf-16-le", True, "utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", True, "utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-8-sig", True, "utf-8", codecs.BOM_UTF8),
        ("utf-8", False, "utf-8", b""),
    ],
    ids=["utf16le-bom-crlf", "utf16be-bom-crlf", "utf8-bom-crlf", "utf8-nobom-lf"],
)
def test_xml_element_form_changes_only_the_value(encoding: str, crlf: bool, codec: str, bom: bytes) -> None:
    original = encode_text(settings_xml("MasterSettings", {**OTHER, "SSLCertThumbprint": OLD}), encoding, crlf=crlf)  # type: ignore[arg-type]
    result = edit_setting(original, "SSLCertThumbprint", NEW)

    assert result.content.startswith(bom) and (bom or not result.content.startswith(codecs.BOM_UTF8))
    assert_only_value_changed(original, result.content, codec, OLD, NEW)
    assert (b"\r\x00\n" in result.content or b"\x00\r\x00\n" in result.content or b"\r\n" in result.content) == crlf
    assert result.old_values == (OLD,) and result.occurrences == 1 and result.changed
    assert settings_read(result.content) == {**OTHER, "SSLCertThumbprint": NEW}
    assert read_setting(result.content, "sslcertthumbprint") == NEW


def test_xml_declaration_that_disagrees_with_the_bytes_is_kept_verbatim() -> None:
    text = '<?xml version="1.0" encoding="utf-8"?>\r\n<WorkerSettings>\r\n  <MasterEndpoint>https://old:8391</MasterEndpoint>\r\n</WorkerSettings>\r\n'
    original = codecs.BOM_UTF16_LE + text.encode("utf-16-le")  # the hand-edited file: UTF-16 bytes, "utf-8" claim
    result = edit_setting(original, "MasterEndpoint", "https://master01.contoso.test:8391")
    assert result.content.startswith(codecs.BOM_UTF16_LE + '<?xml version="1.0" encoding="utf-8"?>'.encode("utf-16-le"))
    assert_only_value_changed(
        original, result.content, "utf-16-le", "https://old:8391", "https://master01.contoso.test:8391"
    )


def test_json_keeps_formatting_and_nested_pairs() -> None:
    text = (
        '{\n    "Settings":  {\n        "PortNumber":  8391,\n        "SSLCertThumbprint":  "' + OLD + '",\n'
        '        "Comment":  "SSLCertThumbprint is the master cert"\n    },\n'
        '    "List": [ {"key": "Other", "value": "x"} ]\n}\n'
    )
    original = text.encode("utf-8")
    result = edit_setting(original, "SSLCertThumbprint", NEW)
    assert_only_value_changed(original, result.content, "utf-8", f'"{OLD}"', f'"{NEW}"')
    assert settings_read(result.content)["SSLCertThumbprint"] == NEW
    assert settings_read(result.content)["PortNumber"] == "8391"


def test_json_written_by_the_lab_utf8_bom_crlf() -> None:
    original = encode_text(
        settings_json({"MasterEndpoint": "https://a:8391", "MasterHttpsCertThumbprint": OLD}), "utf-8-sig"
    )
    result = edit_setting(original, "MasterHttpsCertThumbprint", NEW)
    assert result.content.startswith(codecs.BOM_UTF8)
    # json.dumps wrote the U+200E as an escape; the whole string token is what gets replaced
    assert_only_value_changed(original, result.content, "utf-8", json.dumps(OLD), f'"{NEW}"')
    assert result.old_values == (OLD,)


def test_json_key_value_pair_objects() -> None:
    original = b'[{"name": "PortNumber", "value": 8391}, {"name": "SSLCertThumbprint", "value": "old"}]'
    result = edit_setting(original, "SSLCertThumbprint", NEW)
    assert result.content == original.replace(b'"old"', f'"{NEW}"'.encode())


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        pytest.param(
            '<configuration><appSettings><add key="SSLCertThumbprint" value="old"/>'
            '<add key="PortNumber" value="8391"/></appSettings></configuration>',
            '<configuration><appSettings><add key="SSLCertThumbprint" value="NEW"/>'
            '<add key="PortNumber" value="8391"/></appSettings></configuration>',
            id="appsettings-add",
        ),
        pytest.param(
            "<MasterSettings SSLCertThumbprint='old' PortNumber=\"8391\"/>",
            "<MasterSettings SSLCertThumbprint='NEW' PortNumber=\"8391\"/>",
            id="attribute",
        ),
        pytest.param(
            '<s:MasterSettings xmlns:s="urn:x"><s:SSLCertThumbprint>old</s:SSLCertThumbprint></s:MasterSettings>',
            '<s:MasterSettings xmlns:s="urn:x"><s:SSLCertThumbprint>NEW</s:SSLCertThumbprint></s:MasterSettings>',
            id="namespaced-element",
        ),
        pytest.param(
            '<settings><setting name="SSLCertThumbprint"><value>old</value></setting></settings>',
            '<settings><setting name="SSLCertThumbprint"><value>NEW</value></setting></settings>',
            id="setting-value-child",
        ),
        pytest.param(
            "<M><SSLCertThumbprint><![CDATA[old]]></SSLCertThumbprint></M>",
            "<M><SSLCertThumbprint><![CDATA[NEW]]></SSLCertThumbprint></M>",
            id="cdata",
        ),
        pytest.param(
            "<M><SSLCertThumbprint/></M>",
            "<M><SSLCertThumbprint>NEW</SSLCertThumbprint></M>",
            id="self-closing",
        ),
        pytest.param(
            "<M><SSLCertThumbprint>  old\n </SSLCertThumbprint></M>",
            "<M><SSLCertThumbprint>NEW</SSLCertThumbprint></M>",
            id="whitespace-is-part-of-the-value",
        ),
        pytest.param(
            "<M><!-- <SSLCertThumbprint>keep</SSLCertThumbprint> --><SSLCertThumbprint>old</SSLCertThumbprint></M>",
            "<M><!-- <SSLCertThumbprint>keep</SSLCertThumbprint> --><SSLCertThumbprint>NEW</SSLCertThumbprint></M>",
            id="commented-copy-untouched",
        ),
        pytest.param(
            "<M><a><SSLCertThumbprint>old</SSLCertThumbprint></a><b><sslcertthumbprint>old</sslcertthumbprint></b></M>",
            "<M><a><SSLCertThumbprint>NEW</SSLCertThumbprint></a><b><sslcertthumbprint>NEW</sslcertthumbprint></b></M>",
            id="every-occurrence-the-parser-reads",
        ),
    ],
)
def test_xml_shapes(xml: str, expected: str) -> None:
    assert edit_setting(xml.encode("utf-8"), "SSLCertThumbprint", "NEW").content == expected.encode("utf-8")


def test_values_are_escaped_for_where_they_go() -> None:
    element = edit_setting(b"<W><MasterEndpoint>x</MasterEndpoint></W>", "MasterEndpoint", "https://a:1/?a=1&b=<2>")
    assert element.content == b"<W><MasterEndpoint>https://a:1/?a=1&amp;b=&lt;2&gt;</MasterEndpoint></W>"
    attribute = edit_setting(b'<add key="MasterEndpoint" value="x"/>', "MasterEndpoint", 'a"b&c')
    assert attribute.content == b'<add key="MasterEndpoint" value="a&quot;b&amp;c"/>'
    assert read_setting(attribute.content, "MasterEndpoint") == 'a"b&c'
    json_value = edit_setting(b'{"MasterEndpoint": "x"}', "MasterEndpoint", 'a"b\\c')
    assert read_setting(json_value.content, "MasterEndpoint") == 'a"b\\c'


def test_unchanged_value_gives_identical_bytes() -> None:
    original = encode_text(settings_xml("MasterSettings", {"SSLCertThumbprint": NEW}), "utf-16-le")
    result = edit_setting(original, "SSLCertThumbprint", NEW)
    assert result.content == original and not result.changed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<M><PortNumber>1</PortNumber></M>", "not in the file"),
        (b"<M><SSLCertThumbprint>a<!-- x -->b</SSLCertThumbprint></M>", "comments"),
        (b"<M><SSLCertThumbprint>a</M>", "does not parse"),
        (b"   ", "empty"),
        (b"SSLCertThumbprint=abc", "neither XML nor JSON"),
        (b'{"SSLCertThumbprint": "a",}', "JSON"),
        (b"\xff\xfe<\x00M\x00>\x00\x00\xd8", "not valid utf-16"),
    ],
)
def test_refuses_what_it_cannot_edit_safely(data: bytes, message: str) -> None:
    with pytest.raises(ConfigEditError, match=message):
        edit_setting(data, "SSLCertThumbprint", NEW)


def test_refuses_a_value_that_cannot_live_in_cdata() -> None:
    with pytest.raises(ConfigEditError, match="CDATA"):
        edit_setting(b"<M><SSLCertThumbprint><![CDATA[x]]></SSLCertThumbprint></M>", "SSLCertThumbprint", "a]]>b")
