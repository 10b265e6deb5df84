"""Several clusters in one evidence folder: one audit per cluster and an ``index.html`` linking their reports.

An evidence folder is one cluster (a sub-folder per node). A folder whose sub-folders are themselves
clusters (``evidence/CONTOSO-SSIS/MASTER01/...``, ``evidence/FABRIKAM-SSIS/...``), as a shop collects them
night after night, is audited cluster by cluster into ``--out/<cluster>/`` and summarised in
``--out/index.html``: each cluster's verdict, counts and a link to its report. The page is static HTML
(no script, no network), every value escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from urllib.parse import quote

from scaleguard.exitcodes import ExitCode
from scaleguard.reports.base import write_atomic

VERDICTS = {ExitCode.OK: "clean", ExitCode.FAILING: "failing", ExitCode.INCOMPLETE: "incomplete",
            ExitCode.USAGE: "usage error"}


@dataclass(frozen=True)
class ClusterEntry:
    name: str
    exit_code: ExitCode
    failing: int
    errors: int
    not_assessed: int
    nodes: int
    report: Path


def combined_exit(codes: list[ExitCode]) -> ExitCode:
    """Incomplete outranks failing outranks clean, as within one audit."""
    for code in (ExitCode.USAGE, ExitCode.INCOMPLETE, ExitCode.FAILING):
        if code in codes:
            return code
    return ExitCode.OK


def write_index(out: Path, entries: list[ClusterEntry], *, generated_at: datetime) -> Path:
    rows = "\n".join(
        f'<tr class="{VERDICTS[e.exit_code].replace(" ", "-")}"><td><a href="{escape(_relative(out, e.report))}">'
        f"{escape(e.name)}</a></td><td>{escape(VERDICTS[e.exit_code])} (exit {int(e.exit_code)})</td>"
        f"<td>{e.nodes}</td><td>{e.failing}</td><td>{e.errors}</td><td>{e.not_assessed}</td></tr>"
        for e in entries
    )
    overall = combined_exit([e.exit_code for e in entries])
    when = generated_at.isoformat(timespec="seconds")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>scaleguard: {len(entries)} clusters</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:14px/1.4 system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}
.failing td:nth-child(2){{color:#b3261e;font-weight:600}}
.incomplete td:nth-child(2){{color:#7a4d00;font-weight:600}}.clean td:nth-child(2){{color:#1b6e20}}</style></head>
<body><h1>scaleguard audit: {len(entries)} clusters</h1>
<p>Overall: <strong>{escape(VERDICTS[overall])}</strong> (exit {int(overall)}), {escape(when)}</p>
<table><thead><tr><th>cluster</th><th>verdict</th><th>nodes</th><th>failing</th><th>errors</th>
<th>not assessed</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
    return write_atomic(out / "index.html", page.encode("utf-8"))


def _relative(out: Path, report: Path) -> str:
    try:
        return quote(report.relative_to(out).as_posix())
    except ValueError:
        return report.resolve().as_uri()
