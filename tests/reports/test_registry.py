"""write_reports: every registered reporter writes its file, and nothing is left half-written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scaleguard.reports import registry
from scaleguard.reports.base import ReportContext
from scaleguard.reports.csv_report import CsvReporter


def test_every_registered_reporter_writes_its_file(context: ReportContext, tmp_path: Path) -> None:
    outputs = registry.write_reports(tmp_path / "out", context.snapshot, context.findings, now=context.now)
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
        registry.write_reports(tmp_path, context.snapshot, context.findings, now=context.now)
    assert not (tmp_path / "findings.csv").exists()


def test_a_reporter_is_one_line_to_add(
    context: ReportContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class CountReporter:
        filename = "count.txt"

        def render(self, ctx: ReportContext) -> bytes:
            return str(len(ctx.findings.findings)).encode()

    monkeypatch.setattr(registry, "REPORTERS", [*registry.REPORTERS, CountReporter()])
    outputs = registry.write_reports(tmp_path, context.snapshot, context.findings, now=context.now)
    assert outputs["count.txt"].read_text() == str(len(context.findings.findings))


def test_forked_reports_are_the_same_bytes_and_failures_surface(
    context: ReportContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALEGUARD_PARALLEL", "off")
    inline = registry.write_reports(tmp_path / "inline", context.snapshot, context.findings, now=context.now)
    monkeypatch.delenv("SCALEGUARD_PARALLEL")
    monkeypatch.setattr(registry, "PARALLEL_MIN_FINDINGS", 0)
    monkeypatch.setattr(registry.parallel, "enabled", lambda: os.name == "posix")  # even if a test left a thread
    extra = tmp_path / "forked" / "extra.txt"
    forked = registry.write_reports(
        tmp_path / "forked", context.snapshot, context.findings, now=context.now,
        also=[lambda: extra.write_text("also written")],
    )
    assert extra.read_text() == "also written"
    for name, path in inline.items():
        assert forked[name].read_bytes() == path.read_bytes(), name

    class Broken:
        filename = "broken.txt"

        def render(self, ctx: ReportContext) -> bytes:
            raise RuntimeError("renderer bug")

    monkeypatch.setattr(registry, "REPORTERS", [Broken(), *registry.REPORTERS])
    with pytest.raises(RuntimeError, match="renderer bug"):
        registry.write_reports(tmp_path / "broken", context.snapshot, context.findings, now=context.now)
    assert (tmp_path / "broken" / "report.html").stat().st_size > 0, "the other reports were still written"
    assert not (tmp_path / "broken" / "broken.txt").exists()


def test_snapshot_only_reports_written_early_are_the_same_file(context: ReportContext, tmp_path: Path) -> None:
    """The pipeline writes SNAPSHOT_ONLY reports before the findings exist; the bytes must not depend on it."""
    assert registry.SNAPSHOT_ONLY, "expiry.csv needs only the snapshot"
    late = registry.write_reports(tmp_path / "late", context.snapshot, context.findings, now=context.now)
    early = registry.write_snapshot_reports(tmp_path / "early", context.snapshot, now=context.now)
    assert set(early) == set(registry.SNAPSHOT_ONLY)
    for name, path in early.items():
        assert path.read_bytes() == late[name].read_bytes()
    skipped = registry.write_reports(
        tmp_path / "early", context.snapshot, context.findings, now=context.now, skip=registry.SNAPSHOT_ONLY
    )
    assert set(skipped) == set(late)
