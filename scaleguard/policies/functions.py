"""The few functions CEL lacks that certificate policies need, registered on every evaluation context.

The Rust CEL core has no case folding and no TLS host matching; doing either with CEL string macros would
be unreadable and wrong at the edges (wildcards match exactly one label, IPv6 has several spellings).
Each function is a Python callback, dearer than CEL's own operators, so the pack uses them only where
they decide.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from scaleguard.rules.host import is_ip

BUILTIN_FUNCTIONS = frozenset(
    {
        "size",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "string",
        "bytes",
        "double",
        "int",
        "uint",
        "timestamp",
        "duration",
        "dyn",
        "type",
        "getFullYear",
        "getMonth",
        "getDate",
        "getDayOfMonth",
        "getDayOfWeek",
        "getDayOfYear",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
        "optional.of",
        "optional.none",
        "optional.ofNonZeroValue",
        "hasValue",
        "value",
        "or",
        "orValue",
    }
)
"""What the `cel` package's Rust core provides (the macros has/all/exists/exists_one/map/filter expand
before this list matters); the loader rejects any other function a policy calls."""


def covers(names: Any, host: Any) -> bool:
    """Whether a certificate or host carrying ``names`` answers to ``host`` (RFC 6125 matching)."""
    if not isinstance(host, str) or not host or not isinstance(names, list):
        return False
    wanted = _canonical(host)
    for name in names:
        if not isinstance(name, str) or not name:
            continue
        candidate = _canonical(name)
        if candidate == wanted:
            return True
        wildcard = candidate.startswith("*.") and "." in wanted and not _is_ip(wanted)
        if wildcard and wanted.split(".", 1)[1] == candidate[2:]:
            return True
    return False


def lower(value: Any) -> Any:
    """Lower-case a string; anything else (including null) passes through unchanged."""
    return value.lower() if isinstance(value, str) else value


def join(values: Any, separator: Any) -> str:
    """Join a list into one string for messages; null elements read "unknown"."""
    if not isinstance(values, list):
        return "" if values is None else str(values)
    sep = separator if isinstance(separator, str) else ", "
    return sep.join("unknown" if v is None else str(v) for v in values)


FUNCTIONS: dict[str, Callable[..., Any]] = {"covers": covers, "lower": lower, "join": join}


@lru_cache(maxsize=4096)
def _canonical(name: str) -> str:
    """The form names are compared in; cached, because a fleet asks about the same few master names for
    every worker and a failed ``ip_address`` parse (an exception) costs more than the comparison."""
    text = name.strip().lower().rstrip(".")
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return text


_is_ip = lru_cache(maxsize=4096)(is_ip)
