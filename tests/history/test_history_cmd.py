"""``scaleguard history``: runs, counts, failing delta and the trend line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from scaleguard.cli import history_cmd
from scaleguard.cli.groups import app
from scaleguard.exitcodes import audit_exit_code
from scaleguard.findings.model import Finding, Severity, Status
from scaleguard.findings.postprocess import record_history

T0 = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
runner = CliRunner()


def record(history: Path, failing: int, passing: int, at: datetime, cluster: str = "prod") -> None:
    findings = [
        Finding(
            policy="SO-W02",
            cluster=cluster,
            node=f"WRK{i:02d}",
            status=Status.FAIL,
            severity=Severity.CRITICAL,
            message="m",
        )
        for i in range(failing)
    ]
    findings += [
        Finding(
            policy="SO-W03",
            cluster=cluster,
            node=f"WRK{i:02d}",
            status=Status.PASS,
            severity=Severity.CRITICAL,
            message="m",
        )
        for i in range(passing)
    ]
    code = audit_exit_code(findings, Severity.HIGH)
    record_history(findings, history, source=f"ev/{cluster}", mode="offline", exit_code=code, now=at)


def test_lists_runs_with_delta_and_trend(tmp_path: Path) -> None:
    history = tmp_path / "h.sqlite"
    record(history, 5, 10, T0)
    record(history, 3, 12, T0 + timedelta(days=1))
    record(history, 4, 1, T0 + timedelta(days=1, hours=1), cluster="staging")
    record(history, 1, 14, T0 + timedelta(days=2))
    result = runner.invoke(app, ["history", "--history", str(history)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "2026-05-03 02:00" in result.output
    assert "-2" in result.output  # 5 → 3 failing in prod
    assert "prod: failing 5 → 1 over 3 run(s)" in result.output and "(improving)" in result.output
    assert "staging: failing 4 → 4 over 1 run(s)" in result.output


def test_json_output_and_limit_keep_true_deltas(tmp_path: Path) -> None:
    history = tmp_path / "h.sqlite"
    record(history, 2, 0, T0)
    record(history, 6, 0, T0 + timedelta(days=1))
    result = runner.invoke(app, ["history", "--history", str(history), "--json", "--limit", "1"])
    assert result.exit_code == 0, result.output
    (only,) = json.loads(result.output)
    assert only["run"] == 2 and only["failing"] == 6 and only["failing_delta"] == 4
    assert only["new"] == 4 and only["resolved"] == 0 and only["exit_code"] == 1
    assert only["counts"]["fail"] == 6


def test_empty_and_invalid_history_files(tmp_path: Path) -> None:
    empty = runner.invoke(app, ["history", "--history", str(tmp_path / "none.sqlite")])
    assert empty.exit_code == 0 and "no audit runs recorded" in empty.output
    bogus = tmp_path / "bogus.sqlite"
    bogus.write_bytes(b"not a database" * 200)
    bad = runner.invoke(app, ["history", "--history", str(bogus)])
    assert bad.exit_code == 2
    assert "not a scaleguard history file" in bad.output


def test_sparkline_scales_to_the_largest_value() -> None:
    assert history_cmd.sparkline([0, 4, 8]) == "▁▅█"
    assert history_cmd.sparkline([0, 0]) == "▁▁"
