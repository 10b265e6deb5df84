"""Every report format the audit writes, in one explicit list.

Adding a format is one line: append an instance to ``REPORTERS`` (anything with a ``filename`` and a
pure ``render(ctx) -> bytes``; see :class:`scaleguard.reports.base.Reporter`). The list is explicit on
purpose — no import-time self-registration — so what an audit writes can be read right here.
``findings.json`` and ``snapshot.json`` are written by the pipeline itself and are not reporters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from pathlib import Path

from scaleguard import parallel
from scaleguard.findings.model import FindingsFile
from scaleguard.reports.base import ReportContext, Reporter
from scaleguard.reports.csv_report import CsvReporter
from scaleguard.reports.expiry import ExpiryCsvReporter
from scaleguard.reports.html import HtmlReporter
from scaleguard.reports.junit import JunitReporter
from scaleguard.reports.sarif import SarifReporter
from scaleguard.snapshot.model import Snapshot

REPORTERS: list[Reporter] = [
    HtmlReporter(),
    CsvReporter(),
    JunitReporter(),
    SarifReporter(),
    ExpiryCsvReporter(),
]


SNAPSHOT_ONLY = frozenset({ExpiryCsvReporter.filename})
"""Reports that read only the snapshot and the clock, never the findings: the pipeline writes them
(:func:`write_snapshot_reports`) while the policies are still being evaluated, on the CPU that
evaluation leaves idle, instead of adding them to the report stage."""

PARALLEL_MIN_FINDINGS = 2000
"""Below this many findings every report renders in milliseconds: not worth a fork each."""


def write_reports(
    out_dir: Path,
    snapshot: Snapshot,
    findings: FindingsFile,
    *,
    now: datetime,
    also: Sequence[Callable[[], None]] = (),
    skip: Collection[str] = (),
) -> dict[str, Path]:
    """Render every registered report into ``out_dir``; returns file name → path.

    Each file is written next to its final name and renamed into place, so a reader never sees half a
    report (CI jobs often pick up ``report.html`` while a previous run is still being replaced).

    The reports only read the snapshot and findings, so for a large audit each renders in its own forked
    child (:mod:`scaleguard.parallel`), inheriting both instead of receiving them pickled: on two CPUs
    the reports then take the time of the slowest pair instead of their sum. ``also`` are more writers
    of the same kind (the pipeline's ``findings.json``) to run alongside. Every writer runs even if one
    fails; the first failure is then raised. ``skip`` names files already written (the pipeline's
    :func:`write_snapshot_reports`); they are left alone but still listed in the result.
    """
    names = [r.filename for r in REPORTERS]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two reporters write the same file: {', '.join(duplicates)}")
    ctx = ReportContext(snapshot=snapshot, findings=findings, now=now)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {reporter.filename: out_dir / reporter.filename for reporter in REPORTERS}
    jobs = [
        functools.partial(_write, reporter, outputs[reporter.filename], ctx)
        for reporter in REPORTERS
        if reporter.filename not in skip
    ]
    # Longest first, so the processes taking jobs from the queue finish together: report.html and
    # findings.csv are the two longest renders of a large audit, ``also`` (findings.json) comes next.
    ordered: list[Callable[[], None]] = [*jobs[:2], *also, *jobs[2:]]
    parallel.run_all(ordered, fork=len(findings.findings) >= PARALLEL_MIN_FINDINGS)
    return outputs


def write_snapshot_reports(out_dir: Path, snapshot: Snapshot, *, now: datetime) -> dict[str, Path]:
    """Render the :data:`SNAPSHOT_ONLY` reports, before any finding exists; file name → path.

    Their context carries an empty findings file, which they never read (that is what puts them in
    ``SNAPSHOT_ONLY``); the output is the same as from :func:`write_reports`.
    """
    ctx = ReportContext(snapshot=snapshot, findings=FindingsFile(generated_at=now, source="", findings=[]), now=now)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for reporter in REPORTERS:
        if reporter.filename in SNAPSHOT_ONLY:
            outputs[reporter.filename] = out_dir / reporter.filename
            _write(reporter, outputs[reporter.filename], ctx)
    return outputs


def _write(reporter: Reporter, path: Path, ctx: ReportContext) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(reporter.render(ctx))
    partial.replace(path)
