"""Names and text that came from a node, made safe to keep and safe to show.

Two different dangers, two helpers:

* :func:`os_name` — a file or folder name as the operating system gave it. On POSIX a name is bytes, and
  Python hands over the bytes that are not UTF-8 as lone surrogates (``surrogateescape``), which no JSON
  writer, SQLite or HTML encoder accepts: one such name used to cost the whole fleet's report. The name
  is turned into plain text once, where it enters the model, with each undecodable byte written as
  ``\\xff`` (``backslashreplace``), so nothing is lost and every writer gets valid Unicode.
  :func:`plain_text` does the same for lone surrogates that arrive inside JSON (``"\\ud800"``).
* :func:`terminal_safe` — text about to be written to an operator's terminal. Escape sequences (ESC),
  carriage returns, BEL, the C1 controls (a single-byte CSI on some terminals) and bidirectional
  overrides can rewrite or reorder what the operator reads; each such character is shown as a visible
  escape instead (``\\x1b``, ``\\u202e``). Rich's markup escaping does not do this: it only stops
  ``[tags]``, so :func:`console_text` applies both.
"""

from __future__ import annotations

import unicodedata
from typing import Any

_BIDI_AND_INVISIBLE = frozenset(
    "\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
)


def os_name(name: str) -> str:
    """A file or folder name as valid Unicode: undecodable bytes become ``\\xNN`` (lossless)."""
    if name.isascii():
        return name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name


def plain_text(text: str) -> str:
    """``text`` with any lone surrogate written as ``\\udXXX``, so that it encodes as UTF-8."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def may_hold_surrogates(json_text: str) -> bool:
    """Whether decoding ``json_text`` can give lone surrogates (only a ``\\uD8xx``-``\\uDFxx`` escape can)."""
    return "\\ud" in json_text or "\\uD" in json_text


def plain_json(value: Any) -> Any:
    """A decoded JSON value with :func:`plain_text` applied to every string, keys included.

    Rebuilt with an explicit stack: the nesting depth is the document's to choose."""
    if isinstance(value, str):
        return plain_text(value)
    if not isinstance(value, dict | list):
        return value
    root: list[Any] = [None]
    pending: list[tuple[Any, Any, Any]] = [(value, root, 0)]  # (source, container, key in container)
    while pending:
        source, container, key = pending.pop()
        if isinstance(source, dict):
            copy: dict[str, Any] = {}
            container[key] = copy
            for name, item in source.items():
                clean_name = plain_text(name)
                copy[clean_name] = None
                pending.append((item, copy, clean_name))
        elif isinstance(source, list):
            items: list[Any] = [None] * len(source)
            container[key] = items
            pending.extend((item, items, index) for index, item in enumerate(source))
        elif isinstance(source, str):
            container[key] = plain_text(source)
        else:
            container[key] = source
    return root[0]


def terminal_safe(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control, format and bidi character shown as an escape (line feeds too,
    unless ``multiline``: then each line is made safe and the line feeds kept)."""
    if multiline:
        return "\n".join(terminal_safe(line) for line in text.split("\n"))
    if text.isascii() and text.isprintable():
        return text
    return "".join(_visible(character) for character in text)


def console_text(text: str, *, multiline: bool = False) -> str:
    """:func:`terminal_safe`, then Rich markup escaping: for ``console.print`` of node-controlled text."""
    from rich.markup import escape

    return escape(terminal_safe(text, multiline=multiline))


def _visible(character: str) -> str:
    if character.isprintable() and character not in _BIDI_AND_INVISIBLE:
        return character
    if character == " ":
        return character
    code = ord(character)
    if unicodedata.category(character) == "Zs":
        return character
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
