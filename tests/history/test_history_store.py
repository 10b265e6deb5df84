"""The history store and the run comparison, with hand-built findings (no pipeline needed)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scaleguard.exitcodes import ExitCode, audit_exit_code
from scaleguard.findings.fingerprint import fingerprint
from scaleguard.findings.model import Finding, Severity, Status
from scaleguard.findings.postprocess import record_history
from scaleguard.history.compare import scope_of
from scaleguard.history.store import HistoryStore, default_history_path

T0 = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)


def f(
    policy: str, node: str, status: Status = Status.FAIL, cluster: str = "prod", subject: str | None = None
) -> Finding:
    return Finding(
        policy=policy,
        cluster=cluster,
        node=node,
        status=status,
        severity=Severity.HIGH,
        message=f"{policy} on {node}",
        subject=subject,
    )


def run(history: Path, findings: list[Finding], at: datetime, source: str = "ev/prod") -> dict[str, Any]:
    code = audit_exit_code(findings, Severity.HIGH)
    since, warnings = record_history(findings, history, source=source, mode="offline", exit_code=code, now=at)
    assert since is not None and warnings == []
    return since.model_dump()


def keys(entries: object) -> set[tuple[str, str]]:
    assert isinstance(entries, list)
    return {(e["policy"], e["node"]) for e in entries}


def test_first_run_has_nothing_to_compare(tmp_path: Path) -> None:
    since = run(tmp_path / "h.sqlite", [f("SO-W02", "WRK01")], T0)
    assert since["previous_run"] is None
    assert since["new"] == [] and since["resolved"] == [] and since["persisting"] == 0
    assert since["run"] == 1


def test_second_run_reports_exactly_new_resolved_and_persisting(tmp_path: Path) -> None:
    history = tmp_path / "h.sqlite"
    run(
        history,
        [
            f("SO-W02", "WRK01"),
            f("SO-W02", "WRK02"),
            f("SO-C01", "WRK03", Status.ERROR),
            f("SO-W13", "WRK04"),
            f("SO-W11", "WRK05", Status.NOT_ASSESSED),
            f("SO-W03", "WRK01", Status.PASS),
        ],
        T0,
    )
    waived = f("SO-W13", "WRK04", Status.WAIVED)
    since = run(
        history,
        [
            f("SO-W02", "wrk01"),  # persists (names compare case-insensitively)
            f("SO-W02", "WRK02", Status.PASS),  # fixed
            f("SO-C01", "WRK03", Status.FAIL),  # still a problem (error → fail)
            waived,  # accepted, not fixed
            f("SO-W11", "WRK05", Status.FAIL),  # not assessed → fail: new
            f("SO-W03", "WRK01", Status.FAIL),  # pass → fail: new
            f("SO-W07", "WRK06"),  # never seen: new
        ],
        T0 + timedelta(days=1),
    )
    assert since["previous_run"] == 1
    assert keys(since["new"]) == {("SO-W11", "WRK05"), ("SO-W03", "WRK01"), ("SO-W07", "WRK06")}
    assert keys(since["resolved"]) == {("SO-W02", "WRK02"), ("SO-W13", "WRK04")}
    now = {e["policy"]: e["now"] for e in since["resolved"]}  # type: ignore[union-attr]
    assert now == {"SO-W02": "pass", "SO-W13": "waived"}
    assert since["persisting"] == 2


def test_a_finding_no_longer_evaluated_is_resolved_as_absent(tmp_path: Path) -> None:
    history = tmp_path / "h.sqlite"
    run(history, [f("SO-W02", "WRK09")], T0)
    since = run(history, [f("SO-W02", "WRK01", Status.PASS)], T0 + timedelta(days=1))
    assert since["resolved"][0]["now"] == "absent"  # type: ignore[index]


def test_runs_compare_within_the_same_cluster_set_only(tmp_path: Path) -> None:
    history = tmp_path / "h.sqlite"
    run(history, [f("SO-W02", "WRK01")], T0, source="/evidence/2026-05-01/prod")
    staging = run(
        history, [f("SO-W02", "S1", cluster="staging")], T0 + timedelta(hours=1), source="ev/staging"
    )
    assert staging["previous_run"] is None  # staging never compares with prod
    # the next night's prod folder has another path but the same cluster: it compares with run 1
    prod = run(history, [f("SO-W02", "WRK01")], T0 + timedelta(days=1), source="/evidence/2026-05-02/prod")
    assert prod["previous_run"] == 1 and prod["persisting"] == 1 and prod["new"] == []


def test_store_keeps_runs_counts_and_only_non_passing_findings(tmp_path: Path) -> None:
    history = tmp_path / "h.sqlite"
    run(
        history,
        [f("SO-W02", "WRK01"), f("SO-W03", "WRK01", Status.PASS), f("SO-W04", "WRK01", Status.PASS)],
        T0,
    )
    store = HistoryStore(history)
    (record,) = store.runs()
    assert record.counts == {"pass": 2, "fail": 1, "error": 0, "not_assessed": 0, "waived": 0}
    assert record.problems == 1 and record.exit_code == 1 and record.scope == "prod"
    stored = store.findings(record.id)
    assert list(stored) == [fingerprint(f("SO-W02", "WRK01"))]


def test_duplicate_subjects_in_one_run_keep_the_worse(tmp_path: Path) -> None:
    history = tmp_path / "h.sqlite"
    run(
        history,
        [
            f("SO-W13", "WRK01", Status.NOT_ASSESSED, subject="A" * 40),
            f("SO-W13", "WRK01", Status.FAIL, subject="a" * 40),
        ],
        T0,
    )
    (stored,) = HistoryStore(history).findings(1).values()
    assert stored.status == "fail"


def test_history_env_override_and_off_switch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCALEGUARD_HISTORY", str(tmp_path / "x.sqlite"))
    assert default_history_path() == tmp_path / "x.sqlite"
    monkeypatch.setenv("SCALEGUARD_HISTORY", "off")
    assert default_history_path() is None
    monkeypatch.delenv("SCALEGUARD_HISTORY")
    default = default_history_path()
    assert default is not None and default.name == "history.sqlite" and "scaleguard" in str(default)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "h.sqlite"
    bogus.write_text("hello, I am not SQLite" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        HistoryStore(bogus).runs()


def test_scope_is_the_cluster_set() -> None:
    assert scope_of(["Prod", "staging", "prod"], "x") == "prod,staging"
    assert scope_of([], "ev/x") == "source:ev/x"


def test_a_fix_that_changes_the_subject_is_resolved_as_pass(tmp_path: Path) -> None:
    history = tmp_path / "h.sqlite"
    old, new, other = "AA" * 20, "BB" * 20, "CC" * 20
    run(history, [f("SO-W02", "WRK07", subject=old), f("SO-W02", "WRK08", subject=old)], T0)
    since = run(
        history,
        [f("SO-W02", "WRK07", Status.PASS, subject=new), f("SO-W02", "WRK08", Status.FAIL, subject=other)],
        T0 + timedelta(days=1),
    )
    now = {e["node"]: e["now"] for e in since["resolved"]}  # type: ignore[union-attr]
    assert now == {"WRK07": "pass", "WRK08": "fail"}  # WRK08 is re-pinned, but to another wrong thumbprint…
    assert keys(since["new"]) == {("SO-W02", "WRK08")}  # …which is then a new problem


def test_an_unusable_history_file_costs_the_comparison_not_the_audit(tmp_path: Path) -> None:
    bogus = tmp_path / "h.sqlite"
    bogus.write_bytes(b"definitely not SQLite " * 100)
    since, warnings = record_history(
        [f("SO-W02", "WRK01")], bogus, source="s", mode="offline", exit_code=ExitCode.FAILING, now=T0
    )
    assert since is None
    assert len(warnings) == 1 and "history not recorded" in warnings[0]
