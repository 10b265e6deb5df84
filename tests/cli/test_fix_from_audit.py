"""`scaleguard fix --findings`: a plan made from an offline audit's artefacts alone (findings.json and the
snapshot.json next to it, schema 1.1 with each certificate's DER written once per cluster)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from scaleguard.cli.main import app
from scaleguard.lab.scenario import Scenario, demo_scenario

runner = CliRunner()


def _master_lacks_worker_cert(tmp_path: Path) -> tuple[Scenario, Path, bytes]:
    """A healthy lab, except that MASTER01's Root no longer holds WORKER02's certificate (SO-W08)."""
    scenario = demo_scenario(2, defects=False)
    master = next(n for n in scenario.nodes if n.name == "MASTER01")
    worker = next(n for n in scenario.nodes if n.name == "WORKER02")
    [own] = worker.my
    master.root = [c for c in master.root if c.thumbprint != own.thumbprint]
    return scenario, scenario.write(tmp_path / "CONTOSO-SSIS"), own.der


def test_a_plan_from_the_audit_imports_the_worker_certificate_from_snapshot_json(tmp_path: Path) -> None:
    _scenario, evidence, worker_der = _master_lacks_worker_cert(tmp_path)
    audit_out = tmp_path / "audit"
    audited = runner.invoke(app, ["audit", "--evidence", str(evidence), "--out", str(audit_out)])
    assert audited.exit_code == 1, audited.stderr
    findings = json.loads((audit_out / "findings.json").read_text(encoding="utf-8"))
    assert {(f["policy"], f["node"]) for f in findings["findings"] if f["status"] == "fail"} == {
        ("SO-W08", "WORKER02")
    }
    snapshot = json.loads((audit_out / "snapshot.json").read_text(encoding="utf-8"))
    assert snapshot["schema_version"] == "1.1" and snapshot["clusters"][0]["certificates"]

    planned = runner.invoke(app, ["fix", "--findings", str(audit_out / "findings.json"), "--out",
                                  str(tmp_path / "fix")])
    assert planned.exit_code == 0, planned.stderr
    plan: dict[str, Any] = json.loads((tmp_path / "fix" / "plan.json").read_text(encoding="utf-8"))
    imports = [s for s in plan["steps"] if s["action"] == "import_certificate"]
    assert [(s["node"], s["params"]["store"]) for s in imports] == [("MASTER01", "Root")]
    assert base64.b64decode(imports[0]["params"]["der_b64"]) == worker_der, "the DER the worker exported"


def test_a_node_folder_name_no_plan_may_carry_is_a_usage_error_not_a_crash(tmp_path: Path) -> None:
    """A folder name Linux allows but a plan step refuses (a backslash): the audit reports the node, and
    fix refuses to plan (exit 2, naming it) instead of stopping half-way with a traceback."""
    _scenario, evidence, _der = _master_lacks_worker_cert(tmp_path)
    (evidence / "WORKER02").rename(evidence / "WORKER\\02")
    audit_out = tmp_path / "audit"
    audited = runner.invoke(app, ["audit", "--evidence", str(evidence), "--out", str(audit_out)])
    assert audited.exit_code == 1, audited.stderr
    planned = runner.invoke(app, ["fix", "--findings", str(audit_out / "findings.json"), "--out",
                                  str(tmp_path / "fix")])
    assert planned.exit_code == 2, planned.stderr
    assert "no plan step may carry" in planned.stderr and "'WORKER\\\\02'" in planned.stderr
    assert not (tmp_path / "fix" / "plan.json").exists()
