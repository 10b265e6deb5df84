"""findings.json as written: the same document pydantic's own serialisation gives, and it reads back."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

from scaleguard.findings.model import CauseSummary, CauseSymptom, Finding, FindingsFile, Severity, Status


def _file() -> FindingsFile:
    waived = Finding(
        policy="SO-W05", node="WORKER01", status=Status.WAIVED, severity=Severity.HIGH, message="expires soon",
        evidence={"days_left": 12, "names": ["a", "b"], "nested": {"ok": True, "ratio": 0.25, "none": None}},
        waiver={"owner": "dba", "expires": date(2027, 1, 31), "original_status": "fail"},
        subject="AB" * 20,
    )
    passing = Finding(
        policy="SO-M01", node="MASTER01", status=Status.PASS, severity=Severity.CRITICAL,
        message="<script>alert(1)</script> é \u2028", references=["https://learn.microsoft.com/x"],
    )
    ff = FindingsFile(
        generated_at=datetime(2026, 11, 29, 3, 4, 5, tzinfo=UTC), source="evidence/", policies=[{"id": "SO-M01"}],
        findings=[waived, passing],
    )
    ff.causes = [
        CauseSummary(
            id="c-1", kind="stale-master-pin", title="t", fix="repin", cluster="c", severity="high",
            nodes=["WORKER01"], count=1,
            symptoms=[CauseSymptom(policy="SO-W02", node="WORKER01", status="fail", severity="high")],
        )
    ]
    ff.warnings = ["history not recorded in h.sqlite: locked"]
    return ff


def test_written_document_equals_pydantics(tmp_path: Path) -> None:
    ff = _file()
    path = tmp_path / "findings.json"
    ff.write(path)
    assert json.loads(path.read_bytes()) == json.loads(ff.model_dump_json())
    assert b'"generated_at": "2026-11-29T03:04:05Z"' in path.read_bytes()


def test_written_file_reads_back(tmp_path: Path) -> None:
    ff = _file()
    path = tmp_path / "findings.json"
    ff.write(path)
    again = FindingsFile.read(path)
    # as pydantic reads back its own output: a date comes back as text
    assert again.findings == FindingsFile.model_validate_json(ff.model_dump_json()).findings
    assert again.generated_at == ff.generated_at
    assert again.causes == ff.causes and again.warnings == ff.warnings
    assert again.waivers is None and again.since_previous is None
