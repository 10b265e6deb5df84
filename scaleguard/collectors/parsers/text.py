"""Turn the bytes a Windows node gave us into text, the way the file was really written.

Windows tools disagree about encodings: PowerShell 5's ``>`` writes UTF-16 LE with a BOM, Notepad writes
UTF-8 with a BOM, hand edits leave an XML declaration claiming one encoding while the bytes are another,
and some exports drop the BOM entirely. The bytes are the only witness that cannot lie, so a BOM wins,
then the NUL pattern of UTF-16, then strict UTF-8; a declaration is only consulted when none of those
decide, and Windows-1252 is the last resort because it can decode anything.

The ``encoding`` label is what a fix needs to write the file back unchanged: Python codec names, with
``utf-8-sig`` for UTF-8 with BOM, ``utf-16-le``/``utf-16-be`` meaning *with* BOM (as the lab writes them)
and a ``-nobom`` suffix for BOM-less UTF-16. :func:`encode_text` is the exact inverse.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_BOMS: tuple[tuple[bytes, str, str], ...] = (
    # longest first: the UTF-32 LE BOM starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16-be"),
)
_SNIFF = 4096
_XML_DECL_ENCODING = re.compile(r"""^\s*<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")


@dataclass(frozen=True, slots=True)
class DecodedText:
    """Decoded text plus what a faithful rewrite needs (encoding label, BOM, line ending)."""

    text: str
    encoding: str
    bom: bool
    newline: str
    notes: tuple[str, ...] = ()


def decode_text(data: bytes) -> DecodedText:
    """Decode ``data`` trusting the bytes over anything the text claims about itself."""
    notes: list[str] = []
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            text = _decode(data[len(bom):], codec, notes)
            return DecodedText(text, label, True, _newline(text), tuple(notes))
    utf16 = _utf16_by_nul_pattern(data)
    if utf16 is not None:
        text = _decode(data, utf16, notes)
        return DecodedText(text, f"{utf16}-nobom", False, _newline(text), tuple(notes))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return DecodedText(text, "utf-8", False, _newline(text), ())
    codec = _declared_single_byte_codec(data) or "cp1252"
    notes.append(f"not valid UTF-8; read as {codec}")
    text = _decode(data, codec, notes)
    return DecodedText(text, codec, False, _newline(text), tuple(notes))


def as_text(data: bytes | str) -> DecodedText:
    """Accept what live collection already decoded (``str``) as well as raw file bytes."""
    if isinstance(data, str):
        return DecodedText(data, "unknown", data.startswith("\ufeff"), _newline(data))
    return decode_text(data)


def encode_text(text: str, encoding: str) -> bytes:
    """The inverse of :func:`decode_text`: bytes with the same encoding and BOM as the original."""
    if encoding.endswith("-nobom"):
        return text.encode(encoding.removesuffix("-nobom"))
    for bom, codec, label in _BOMS:
        if label == encoding:
            return bom + text.encode(codec)
    return text.encode(encoding)


def declared_xml_encoding(text: str) -> str | None:
    """The ``encoding=`` of an XML declaration at the very start of ``text``, as written."""
    match = _XML_DECL_ENCODING.match(text.lstrip("\ufeff"))
    return match.group(1) if match else None


def codec_family(name: str) -> str | None:
    """Compare encodings by what they decode, not how they are spelled (``UTF8`` = ``utf-8-sig``)."""
    try:
        canonical = codecs.lookup(name.removesuffix("-nobom")).name
    except LookupError:
        return None
    for family in ("utf-8", "utf-16", "utf-32"):
        if canonical.startswith(family):
            return family
    return canonical


def _decode(data: bytes, codec: str, notes: list[str]) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        notes.append(f"invalid {codec} byte sequence at offset {exc.start}; replaced")
        return data.decode(codec, errors="replace")


def _utf16_by_nul_pattern(data: bytes) -> str | None:
    """BOM-less UTF-16 of mostly-ASCII text has a NUL in every other byte; nothing else does."""
    sample = data[:_SNIFF]
    pairs = len(sample) // 2
    if pairs == 0 or b"\x00" not in sample:
        return None
    even_nuls = sample[0 : pairs * 2 : 2].count(0)
    odd_nuls = sample[1 : pairs * 2 : 2].count(0)
    if odd_nuls >= pairs * 0.4 and even_nuls <= pairs * 0.05:
        return "utf-16-le"
    if even_nuls >= pairs * 0.4 and odd_nuls <= pairs * 0.05:
        return "utf-16-be"
    return None


def _declared_single_byte_codec(data: bytes) -> str | None:
    """Honour a declared legacy code page (``windows-1250``...) once the bytes have ruled out UTF-8."""
    declared = declared_xml_encoding(data[:200].decode("latin-1"))
    family = codec_family(declared) if declared else None
    if family is None or family in ("utf-8", "utf-16", "utf-32"):
        return None
    return family


def _newline(text: str) -> str:
    index = text.find("\n")
    if index > 0 and text[index - 1] == "\r":
        return "\r\n"
    if index < 0 and "\r" in text:
        return "\r"
    return "\n"
