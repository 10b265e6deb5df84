"""report.html: the trend of failing findings over the recorded nights (inline SVG from the history), and one
node count for the header and the Nodes tab."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from scaleguard.cli.main import app
from scaleguard.lab.scenario import demo_scenario

runner = CliRunner()


def _audit(evidence: Path, out: Path, history: Path) -> dict[str, object]:
    result = runner.invoke(
        app, ["audit", "--evidence", str(evidence), "--out", str(out), "--history", str(history)]
    )
    assert result.exit_code in (0, 1), result.stderr
    findings: dict[str, object] = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    return findings


def _failing(findings: dict[str, object]) -> int:
    return sum(1 for f in findings["findings"] if f["status"] in ("fail", "error"))  # type: ignore[attr-defined,index]


def test_the_report_draws_failing_findings_over_the_recorded_runs(tmp_path: Path) -> None:
    history = tmp_path / "history.sqlite"
    scenario = demo_scenario(defects=True)
    first = _audit(scenario.write(tmp_path / "n1" / "CONTOSO-SSIS"), tmp_path / "o1", history)
    report = (tmp_path / "o1" / "report.html").read_text(encoding="utf-8")
    assert '<svg class="trend"' not in report  # one run is not a trend
    master = next(n for n in scenario.nodes if n.name == "MASTER01")
    master.services = []  # one more problem the second night
    second = _audit(scenario.write(tmp_path / "n2" / "CONTOSO-SSIS"), tmp_path / "o2", history)
    third = _audit(demo_scenario(2, defects=False).write(tmp_path / "n3" / "CONTOSO-SSIS"), tmp_path / "o3", history)
    expected = [_failing(first), _failing(second), _failing(third)]
    assert expected[1] > expected[0] > expected[2] == 0
    trend = third["since_previous"]["trend"]  # type: ignore[index]
    assert [p["failing"] for p in trend] == expected
    report = (tmp_path / "o3" / "report.html").read_text(encoding="utf-8")
    svg = re.search(r'<svg class="trend".*?</svg>', report, re.DOTALL)
    assert svg is not None
    titles = re.findall(r"<title>[0-9-]+: ([0-9]+) failing</title>", svg.group(0))
    assert [int(t) for t in titles] == expected
    assert "https://" not in svg.group(0).replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    assert ", ".join(map(str, expected)) in svg.group(0)  # the aria-label says the series in words


def test_header_and_nodes_tab_count_the_same_nodes(tmp_path: Path) -> None:
    evidence = demo_scenario(defects=True).write(tmp_path / "CONTOSO-SSIS")
    _audit(evidence, tmp_path / "out", tmp_path / "h.sqlite")
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    header = re.search(r"<dt>Nodes</dt><dd>([0-9]+)</dd>", report)
    tab = re.search(r'data-tab="nodes">Nodes \(([0-9]+)\)', report)
    assert header is not None and tab is not None
    assert header.group(1) == tab.group(1) == "4"  # the cluster's own row (SO-C03) is not a node
