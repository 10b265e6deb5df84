"""Hand CEL only the facts a group of policies can read.

Converting Python values into CEL is what evaluation costs: the `cel` package rebuilds its whole
environment whenever a variable changes, at roughly a microsecond per string, so a 10 kB node fact costs
more than every check that reads it. Policies name their facts as ``variable.key`` paths, so a plain scan
of their sources tells which top-level keys can be read; everything else is left out of the context.
A variable used in any other way (indexed, passed whole to a function, iterated) is kept whole, so the
trim can only ever drop what no expression can reach.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

TOP_LEVEL = ("cluster", "node", "master", "worker", "master_cert", "worker_cert", "masters", "item",
             "thresholds", "now")

AccessSpec = dict[str, frozenset[str] | None]
"""Per top-level variable: the keys read from it, or None when the whole value is needed."""

_PATTERNS = {var: re.compile(rf"(?<![\w.]){var}\b(?:\s*\.\s*([A-Za-z_]\w*))?") for var in TOP_LEVEL}
_NULL_BEFORE = re.compile(r"\bnull\s*[!=]=\s*$")
_NULL_AFTER = re.compile(r"\s*[!=]=\s*null\b")
_TEXT = re.compile(
    r"""[rR][bB]?(?:'{3}.*?'{3}|"{3}.*?"{3}|'[^'\n]*'|"[^"\n]*")"""
    r"""|'{3}(?:\\.|[^\\])*?'{3}|"{3}(?:\\.|[^\\])*?"{3}|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"|//[^\n]*""",
    re.DOTALL,
)
"""CEL string literals and comments: words in them (``'... this node'``) are not variables."""


def code_of(source: str) -> str:
    """``source`` with each string literal and comment emptied to ``""``: what is left can name facts."""
    return _TEXT.sub('""', source)


def access_spec(sources: Iterable[str]) -> AccessSpec:
    """What of each top-level variable the expressions in ``sources`` may read (unused ones are absent)."""
    texts = [code_of(s) for s in sources if s]
    spec: AccessSpec = {}
    for var, pattern in _PATTERNS.items():
        keys: set[str] = set()
        used = whole = False
        for text in texts:
            for match in pattern.finditer(text):
                used = True
                key = match.group(1)
                if key is not None:
                    keys.add(key)
                elif not _null_test(text, match):
                    whole = True
        if used:
            spec[var] = None if whole else frozenset(keys)
    return spec


def _null_test(text: str, match: re.Match[str]) -> bool:
    """``var == null`` / ``var != null`` (either way round) only asks whether the value is there, which a
    trimmed map answers the same way as the whole one (a map, even emptied, is not null; null stays null),
    so such a use does not need the whole value — the common ``worker_cert == null ? ... : ...`` guard
    would otherwise convert a whole certificate per node."""
    return bool(_NULL_AFTER.match(text, match.end()) or _NULL_BEFORE.search(text, 0, match.start()))


def merge(specs: Iterable[AccessSpec]) -> AccessSpec:
    merged: AccessSpec = {}
    for spec in specs:
        for var, keys in spec.items():
            if var not in merged:
                merged[var] = keys
            else:
                known = merged[var]
                merged[var] = None if known is None or keys is None else known | keys
    return merged


def trim(values: Mapping[str, Any], spec: AccessSpec) -> dict[str, Any]:
    """``values`` restricted to ``spec``; maps keep only the keys read, anything else stays whole."""
    out: dict[str, Any] = {}
    for var, keys in spec.items():
        if var not in values:
            continue
        value = values[var]
        if keys is not None and isinstance(value, dict):
            value = {k: value[k] for k in keys if k in value}
        out[var] = value
    return out
