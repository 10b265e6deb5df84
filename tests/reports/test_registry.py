"""write_reports: every registered reporter writes its file, and nothing is left half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaleguard.reports import registry
from scaleguard.reports.base import ReportContext
from scaleguard.reports.csv_report import CsvReporter


def test_every_registered_reporter_writes_its_file(context: ReportContext, tmp_path: Path) -> None:
    outputs = registry.write_reports(tmp_path / "out", context)
    assert {"report.html", "findings.csv"} <= set(outputs)
    assert set(outputs) == {r.filename for r in registry.REPORTERS}
    for name, path in outputs.items():
        assert path == tmp_path / "out" / name and path.stat().st_size > 0
    assert not list((tmp_path / "out").glob(".*partial")), "no partial file left behind"
    assert "findings.json" not in outputs, "the pipeline writes findings.json, not a reporter"


def test_two_reporters_for_one_file_is_refused(
    context: ReportContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "REPORTERS", [CsvReporter(), CsvReporter()])
    with pytest.raises(ValueError, match=r"findings\.csv"):
        registry.write_reports(tmp_path, context)
    assert not (tmp_path / "findings.csv").exists()


def test_a_reporter_is_one_line_to_add(
    context: ReportContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class CountReporter:
        filename = "count.txt"

        def render(self, ctx: ReportContext) -> bytes:
            return str(len(ctx.findings.findings)).encode()

    monkeypatch.setattr(registry, "REPORTERS", [*registry.REPORTERS, CountReporter()])
    outputs = registry.write_reports(tmp_path, context)
    assert outputs["count.txt"].read_text() == str(len(context.findings.findings))


def test_a_failing_report_does_not_cost_the_others(
    context: ReportContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        filename = "broken.txt"

        def render(self, ctx: ReportContext) -> bytes:
            raise RuntimeError("renderer bug")

    monkeypatch.setattr(registry, "REPORTERS", [Broken(), *registry.REPORTERS])
    with pytest.raises(RuntimeError, match="renderer bug"):
        registry.write_reports(tmp_path / "broken", context)
    assert (tmp_path / "broken" / "report.html").stat().st_size > 0, "the other reports were still written"
    assert not (tmp_path / "broken" / "broken.txt").exists()
