"""An evidence folder holding several clusters: one audit and report per cluster, and index.html linking each
with its verdict; the exit code is the worst of theirs."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from scaleguard.cli.main import app
from scaleguard.lab.scenario import demo_scenario


def test_several_clusters_get_a_report_each_and_one_index(tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"
    demo_scenario(defects=True).write(evidence / "CONTOSO-SSIS")
    healthy = demo_scenario(2, defects=False)
    healthy.cluster = "FABRIKAM-SSIS"
    healthy.write(evidence / "FABRIKAM-SSIS")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["audit", "--evidence", str(evidence), "--out", str(out)])
    assert result.exit_code == 1, result.stderr
    assert "Exit 1: the worst of the clusters' exit codes." in result.stderr
    for name in ("CONTOSO-SSIS", "FABRIKAM-SSIS"):
        assert (out / name / "report.html").is_file() and (out / name / "findings.sarif").is_file()
    index = (out / "index.html").read_text(encoding="utf-8")
    rows = dict(re.findall(r'<a href="([^"]+)">[^<]+</a></td><td>([a-z ]+) \(exit', index))
    assert rows == {"CONTOSO-SSIS/report.html": "failing", "FABRIKAM-SSIS/report.html": "clean"}
    assert "<script" not in index and "http" not in index.split("<body>")[1]


def test_a_single_cluster_folder_is_audited_as_before(tmp_path: Path) -> None:
    evidence = demo_scenario(defects=True).write(tmp_path / "CONTOSO-SSIS")
    result = CliRunner().invoke(app, ["audit", "--evidence", str(evidence), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert (tmp_path / "out" / "report.html").is_file() and not (tmp_path / "out" / "index.html").exists()


def test_a_linked_cluster_folder_is_refused_not_followed(tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"
    demo_scenario(defects=True).write(evidence / "CONTOSO-SSIS")
    elsewhere = demo_scenario(2, defects=False)
    elsewhere.cluster = "FABRIKAM-SSIS"
    elsewhere.write(tmp_path / "outside" / "FABRIKAM-SSIS")
    (evidence / "FABRIKAM-SSIS").symlink_to(tmp_path / "outside" / "FABRIKAM-SSIS", target_is_directory=True)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["audit", "--evidence", str(evidence), "--out", str(out)])
    assert result.exit_code == 2, result.stderr
    assert "FABRIKAM-SSIS: a symbolic link among the cluster folders; links are not followed" in result.stderr
    assert not out.exists() or not any(out.rglob("report.html"))
