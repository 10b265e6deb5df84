"""``findings.csv``: one row per finding, for spreadsheets and ticket imports.

Spreadsheet formula injection: cells hold strings collected from nodes (subjects, config values, service
accounts), which whoever administers a node controls. A cell that starts with ``=``, ``+``, ``-``, ``@``,
TAB or CR — after any leading whitespace, which Excel skips — would run as a formula, so it gets a leading
apostrophe (the c7n ``sanitize_csv_value`` rule). One deliberate exception: a cell that is just a number
(``-12``, ``+3.5``) stays as it is; Excel reads it as that number, not as a formula, and neutralising it
would turn "-12 days left" into text that no longer sorts.

The file is UTF-8 with a BOM (Excel on Windows otherwise guesses ANSI and garbles non-ASCII subjects)
and CRLF line ends (RFC 4180). Fields are quoted as the ``csv`` module quotes them (only where needed, quotes
doubled) but with ``str`` methods, as the writer tests every character of every field one call at a time.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from scaleguard.reports.base import ReportContext
from scaleguard.reports.view import ENUM_TEXT, sorted_findings

COLUMNS = ["policy", "node", "cluster", "status", "severity", "title", "message", "remediation", "evidence"]
INJECTION_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


_RISKY_FIRST = frozenset(" \n\u00a0" + "".join(INJECTION_PREFIXES))
"""A cell whose first character is none of these cannot be a formula (nearly every cell), so it is
returned before any stripping or matching."""


def neutralise(value: str) -> str:
    """``value`` made inert for spreadsheets (see the module docstring for the rule and its exception)."""
    if not value or value[0] not in _RISKY_FIRST:
        return value
    stripped = value.lstrip(" \n\u00a0")
    if stripped.startswith(INJECTION_PREFIXES) and not _PLAIN_NUMBER.fullmatch(stripped):
        return "'" + value
    return value


def field(value: str) -> str:
    """``value`` as one CSV field: quoted when it holds a comma, a quote or a line break, quotes doubled."""
    if '"' in value:
        return '"' + value.replace('"', '""') + '"'
    if "," in value or "\n" in value or "\r" in value:
        return '"' + value + '"'
    return value


def csv_bytes(header: list[str], rows: list[str]) -> bytes:
    """The file: BOM, header, then the rows (each already joined fields ending in CRLF). The BOM comes from
    the codec: in the text it would make the whole string wide (four bytes a character)."""
    return (",".join(map(field, header)) + "\r\n" + "".join(rows)).encode("utf-8-sig")


def _evidence_json(evidence: dict[str, Any]) -> str:
    """Compact JSON, keys sorted, non-ASCII kept as is; orjson because json.dumps was a large part of the
    whole file's cost (one evidence cell per finding)."""
    return orjson.dumps(evidence, option=orjson.OPT_SORT_KEYS, default=str).decode("utf-8")


class CsvReporter:
    filename = "findings.csv"

    def render(self, ctx: ReportContext) -> bytes:
        # Cells that cannot start a formula are not neutralised: a policy id (it matches ``ID_PATTERN``,
        # a capital letter first), a status or severity (enum words) and the evidence (a JSON object, "{").
        # The rest come from nodes or from users' policy packs and always are.
        rows = [
            f"{field(f.policy)},{field(neutralise(f.node))},{field(neutralise(f.cluster))},{ENUM_TEXT[f.status]},"
            f"{ENUM_TEXT[f.severity]},{field(neutralise(f.title))},{field(neutralise(f.message))},"
            f"{field(neutralise(f.remediation or ''))},{field(_evidence_json(f.evidence))}\r\n"
            for f in sorted_findings(ctx.findings.findings)
        ]
        return csv_bytes(COLUMNS, rows)
