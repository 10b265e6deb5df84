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


def access_spec(sources: Iterable[str]) -> AccessSpec:
    """What of each top-level variable the expressions in ``sources`` may read (unused ones are absent)."""
    texts = [s for s in sources if s]
    spec: AccessSpec = {}
    for var, pattern in _PATTERNS.items():
        keys: set[str] = set()
        used = whole = False
        for text in texts:
            for match in pattern.finditer(text):
                used = True
                key = match.group(1)
                if key is None:
                    whole = True
                else:
                    keys.add(key)
        if used:
            spec[var] = None if whole else frozenset(keys)
    return spec


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
