"""Private-key facts (``keys.json``: Thumbprint, HasPrivateKey, PSParentPath, optional KeyReaders).

The rows say which certificate of which store has its private key on the node and, when the operator
exported the key ACL as a ``KeyReaders`` column, who may read it. An absent column means *unknown*
(``None``), not "nobody": SO-W09 must then say not assessed rather than fail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, NamedTuple

from scaleguard.collectors.parsers.psjson import as_bool, as_rows, ci_get
from scaleguard.rules.thumbprint import normalize_thumbprint
from scaleguard.snapshot.model import CertificateStore

_COLUMNS = frozenset({"Thumbprint", "HasPrivateKey", "PSParentPath", "PSPath", "KeyReaders"})
_COLUMN_BY_LOWER = {column.lower(): column for column in _COLUMNS}
_IDENTITY_SEPARATORS = re.compile(r"[;,\r\n]+")
_TRUNCATED_BY_DEPTH = ("System.Object[]", "System.Collections.Hashtable", "@{")


class KeyFact(NamedTuple):
    """One keys.json row; ``store`` is ``None`` when the row does not say which store it is from.
    (A named tuple: fleets have tens of thousands of rows and frozen dataclasses are slow to build.)"""

    thumbprint: str
    store: str | None
    has_private_key: bool | None
    key_readers: tuple[str, ...] | None


def key_facts_from_json(value: Any) -> tuple[list[KeyFact], list[str]]:
    facts: list[KeyFact] = []
    notes: list[str] = []
    for index, original in enumerate(as_rows(value), start=1):
        row = _canonical(original)
        raw_thumbprint = row.get("Thumbprint")
        thumbprint = normalize_thumbprint(raw_thumbprint if isinstance(raw_thumbprint, str) else None)
        if thumbprint is None:
            notes.append(f"row {index}: Thumbprint {raw_thumbprint!r} is not a thumbprint; skipped")
            continue
        readers = _readers(row, thumbprint, notes)
        facts.append(KeyFact(thumbprint, _store_of(row), as_bool(row.get("HasPrivateKey")), readers))
    return facts, notes


def apply_key_facts(facts: Iterable[KeyFact], stores: Iterable[CertificateStore | None]) -> list[KeyFact]:
    """Set ``has_private_key``/``key_readers`` on matching certificates; returns the facts that matched
    no certificate (the export and the certs/ folder disagree)."""
    by_store: dict[tuple[str, str | None], KeyFact] = {}
    for fact in facts:
        by_store.setdefault((fact.thumbprint, fact.store.lower() if fact.store else None), fact)
    used: set[tuple[str, str | None]] = set()
    for store in stores:
        if store is None:
            continue
        name = store.name.lower()
        for certificate in store.certificates:
            for key in ((certificate.thumbprint, name), (certificate.thumbprint, None)):
                match = by_store.get(key)
                if match is not None:
                    # both start as None (unknown): set only what the row knows (pydantic setattr is slow)
                    if match.has_private_key is not None:
                        certificate.has_private_key = match.has_private_key
                    if match.key_readers is not None:
                        certificate.key_readers = list(match.key_readers)
                    used.add(key)
                    break
    return [fact for key, fact in by_store.items() if key not in used]


def _canonical(row: dict[str, Any]) -> dict[str, Any]:
    """Column names as PowerShell spells them; hand-edited files may use any case (PowerShell ignores it)."""
    if row.keys() <= _COLUMNS:
        return row  # what ConvertTo-Json writes: no copy needed
    return {_COLUMN_BY_LOWER.get(str(key).lower(), str(key)): item for key, item in row.items()}


def _store_of(row: dict[str, Any]) -> str | None:
    """``...\\Certificate::LocalMachine\\My`` → ``My`` (from PSParentPath, else PSPath's parent)."""
    raw_parent = row.get("PSParentPath")
    parent: str | None = raw_parent if isinstance(raw_parent, str) else None
    if parent is None:
        path = row.get("PSPath")
        parent = path.rstrip("\\").rsplit("\\", 1)[0] if isinstance(path, str) else None
    return _store_name(parent) if parent else None


@lru_cache(maxsize=64)
def _store_name(parent: str) -> str:
    last = parent.rstrip("\\/").replace("/", "\\").rsplit("\\", 1)[-1]
    return {"my": "My", "root": "Root"}.get(last.lower(), last)


def _readers(row: dict[str, Any], thumbprint: str, notes: list[str]) -> tuple[str, ...] | None:
    """``None`` when the column is absent or null (unknown); a tuple (maybe empty) when exported."""
    raw = row.get("KeyReaders")
    if raw is None:
        return None
    items = raw if isinstance(raw, list) else [raw]
    readers: list[str] = []
    for item in items:
        identity = _identity(item)
        if identity is None:
            notes.append(f"{thumbprint}: KeyReaders entry {item!r} is not an identity; readers unknown")
            return None
        if identity.startswith(_TRUNCATED_BY_DEPTH):
            notes.append(f"{thumbprint}: KeyReaders was cut off by ConvertTo-Json (-Depth too small); "
                         "readers unknown")
            return None
        readers.extend(part.strip() for part in _IDENTITY_SEPARATORS.split(identity) if part.strip())
    return tuple(readers)


def _identity(item: object) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        nested: object = ci_get(item, "IdentityReference", "Identity", "Value", "Name")
        return _identity(nested)
    return None
