"""What ``ConvertTo-Json`` really writes, read back into plain Python values.

PowerShell's JSON differs from what a JSON consumer expects in ways that are easy to get wrong: a pipeline
of one object becomes a bare object, not a one-element array; no output at all becomes an empty file;
Windows PowerShell 5.1 writes ``"Key":  value`` (harmless), UTF-16 or a BOM when redirected with ``>``,
``\\/Date(1700000000000)\\/`` for dates, and enums as numbers. Property names are case-insensitive in
PowerShell, so hand-edited files can say ``name`` for ``Name``. These helpers absorb that once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from scaleguard.collectors.parsers.text import as_text
from scaleguard.safetext import may_hold_surrogates, plain_json


class PowerShellJsonError(ValueError):
    """The text is not JSON at all (a truncated export, an error message redirected into the file)."""


_TRAILING_JUNK = "\x00\x1a \t\r\n\ufeff"


def loads_powershell_json(data: bytes | str) -> Any:
    """The JSON value in ``data``; ``None`` when PowerShell wrote nothing (an empty pipeline)."""
    text = as_text(data).text.strip(_TRAILING_JUNK)
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PowerShellJsonError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
                                  f"({len(text)} characters)") from exc
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, arrays nested 10,000 deep
        raise PowerShellJsonError(f"not usable JSON: {type(exc).__name__} ({len(text)} characters)") from exc
    return plain_json(value) if may_hold_surrogates(text) else value


def as_rows(value: Any) -> list[dict[str, Any]]:
    """A lone object, an array of objects, or nothing → a list of objects (non-objects dropped)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return []


def ci_get(row: Mapping[str, Any], *names: str) -> Any:
    """``row[name]`` case-insensitively, trying ``names`` in order (aliases); ``None`` if absent."""
    for name in names:
        if name in row:
            return row[name]
    lowered = {key.lower(): value for key, value in row.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def has_key(row: Mapping[str, Any], name: str) -> bool:
    """Whether ``name`` is a property of ``row`` at all (absent ≠ ``null``: absent means not exported)."""
    return any(key.lower() == name.lower() for key in row)


def as_int(value: Any) -> int | None:
    """PowerShell numbers arrive as ints, floats or strings ("2", "0x2"); anything else is unknown."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            return None
    return None


def as_bool(value: Any) -> bool | None:
    """``true``/``"True"``/``1`` as PowerShell may print a boolean; anything else is unknown."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value) if value in (0, 1) else None
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    return None
