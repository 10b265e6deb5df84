"""Decoding node files: the bytes decide the encoding, never what the text claims."""

from __future__ import annotations

import codecs

import pytest

from scaleguard.collectors.parsers.text import codec_family, declared_xml_encoding, decode_text, encode_text

SAMPLE = "<MasterSettings>\r\n  <SqlServerName>SQL01\\INST</SqlServerName>\r\n</MasterSettings>\r\n"


def test_utf8_without_bom() -> None:
    decoded = decode_text(SAMPLE.encode("utf-8"))
    assert (decoded.text, decoded.encoding, decoded.bom, decoded.newline) == (SAMPLE, "utf-8", False, "\r\n")
    assert decoded.notes == ()


def test_utf8_with_bom_is_stripped_and_remembered() -> None:
    decoded = decode_text(codecs.BOM_UTF8 + SAMPLE.encode("utf-8"))
    assert (decoded.text, decoded.encoding, decoded.bom) == (SAMPLE, "utf-8-sig", True)


@pytest.mark.parametrize(
    ("bom", "codec", "label"),
    [
        (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16-be"),
    ],
)
def test_utf16_with_bom(bom: bytes, codec: str, label: str) -> None:
    decoded = decode_text(bom + SAMPLE.encode(codec))
    assert (decoded.text, decoded.encoding, decoded.bom) == (SAMPLE, label, True)


@pytest.mark.parametrize(
    ("codec", "label"), [("utf-16-le", "utf-16-le-nobom"), ("utf-16-be", "utf-16-be-nobom")]
)
def test_utf16_without_bom_is_recognised_by_its_nul_pattern(codec: str, label: str) -> None:
    decoded = decode_text(SAMPLE.encode(codec))
    assert (decoded.text, decoded.encoding, decoded.bom) == (SAMPLE, label, False)


def test_lf_and_cr_line_endings_are_reported() -> None:
    assert decode_text(b"a\nb\n").newline == "\n"
    assert decode_text(b"a\rb\r").newline == "\r"


def test_invalid_utf8_falls_back_to_windows_1252_with_a_note() -> None:
    decoded = decode_text("Café \u20ac".encode("cp1252"))
    assert decoded.text == "Café \u20ac"
    assert decoded.encoding == "cp1252"
    assert decoded.notes == ("not valid UTF-8; read as cp1252",)


def test_a_declared_legacy_code_page_is_honoured_once_utf8_is_ruled_out() -> None:
    data = '<?xml version="1.0" encoding="windows-1250"?><a>Łódź</a>'.encode("cp1250")
    decoded = decode_text(data)
    assert decoded.text.endswith("<a>Łódź</a>")
    assert decoded.encoding == "cp1250"


def test_a_declaration_never_overrides_valid_utf8_bytes() -> None:
    text = '<?xml version="1.0" encoding="utf-16"?><a>Zürich</a>'
    assert decode_text(text.encode("utf-8")).text == text


def test_truncated_utf16_is_decoded_with_replacement_and_says_so() -> None:
    decoded = decode_text(codecs.BOM_UTF16_LE + "abc".encode("utf-16-le") + b"\x00")
    assert decoded.text == "abc\ufffd"
    assert decoded.notes == ("invalid utf-16-le byte sequence at offset 6; replaced",)


@pytest.mark.parametrize(
    "data",
    [
        SAMPLE.encode("utf-8"),
        codecs.BOM_UTF8 + SAMPLE.encode("utf-8"),
        codecs.BOM_UTF16_LE + SAMPLE.encode("utf-16-le"),
        codecs.BOM_UTF16_BE + SAMPLE.encode("utf-16-be"),
        SAMPLE.encode("utf-16-le"),
        SAMPLE.encode("utf-16-be"),
        "Café\r\n".encode("cp1252"),
    ],
)
def test_encode_text_reproduces_the_original_bytes(data: bytes) -> None:
    decoded = decode_text(data)
    assert encode_text(decoded.text, decoded.encoding) == data


def test_declared_encoding_and_families() -> None:
    assert declared_xml_encoding("\ufeff<?xml version='1.0' encoding='UTF-16'?><a/>") == "UTF-16"
    assert declared_xml_encoding("<a/>") is None
    assert codec_family("UTF8") == codec_family("utf-8-sig") == "utf-8"
    assert codec_family("utf-16-le-nobom") == "utf-16"
    assert codec_family("no-such-codec") is None
