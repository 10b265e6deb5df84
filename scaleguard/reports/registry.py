"""Every report format the audit writes, in one explicit list.

Adding a format is one line: append an instance to ``REPORTERS`` (anything with a ``filename`` and a
pure ``render(ctx) -> bytes``; see :class:`scaleguard.reports.base.Reporter`). The list is explicit on
purpose — no import-time self-registration — so what an audit writes can be read right here.
``findings.json`` and ``snapshot.json`` are written by the pipeline itself and are not reporters.
"""

from __future__ import annotations

from pathlib import Path

from scaleguard.reports.base import ReportContext, Reporter, write_atomic
from scaleguard.reports.csv_report import CsvReporter
from scaleguard.reports.expiry import ExpiryCsvReporter
from scaleguard.reports.html import HtmlReporter
from scaleguard.reports.junit import JunitReporter
from scaleguard.reports.sarif import SarifReporter

REPORTERS: list[Reporter] = [
    HtmlReporter(),
    CsvReporter(),
    JunitReporter(),
    SarifReporter(),
    ExpiryCsvReporter(),
]


def write_reports(out_dir: Path, ctx: ReportContext) -> dict[str, Path]:
    """Render every registered report into ``out_dir``; returns file name → path.

    Each file is written with :func:`write_atomic`. A format that fails does not cost the others: every one
    is attempted, then the first failure raised.
    """
    names = [r.filename for r in REPORTERS]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two reporters write the same file: {', '.join(duplicates)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {reporter.filename: out_dir / reporter.filename for reporter in REPORTERS}
    failure: Exception | None = None
    for reporter in REPORTERS:
        try:
            write_atomic(outputs[reporter.filename], reporter.render(ctx))
        except Exception as exc:  # noqa: BLE001 - raised below, once the other formats are written
            failure = failure or exc
    if failure is not None:
        raise failure
    return outputs

