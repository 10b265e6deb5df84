"""`scaleguard audit`: exit codes 0/1/2/3 on real evidence folders (written by scaleguard.lab), and the
usage errors a person makes."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from scaleguard.cli.main import app
from scaleguard.lab.evidence import NodeEvidence
from scaleguard.lab.scenario import Scenario, demo_scenario

runner = CliRunner()


def lab(tmp_path: Path, *, defects: bool, change: Callable[[Scenario], None] | None = None) -> Path:
    scenario = demo_scenario(2 if not defects else 3, defects=defects)
    if change is not None:
        change(scenario)
    return scenario.write(tmp_path / "CONTOSO-SSIS")


def audit(*args: str | Path) -> tuple[int, str, dict[str, Any] | None]:
    result = runner.invoke(app, ["audit", *map(str, args)])
    out = Path(str(args[list(map(str, args)).index("--out") + 1])) if "--out" in map(str, args) else None
    findings = out / "findings.json" if out is not None else None
    data = json.loads(findings.read_text()) if findings is not None and findings.exists() else None
    return result.exit_code, result.stderr, data


def failing(data: dict[str, Any] | None) -> set[tuple[str, str]]:
    assert data is not None
    return {(f["policy"], f["node"]) for f in data["findings"] if f["status"] == "fail"}


def node(scenario: Scenario, name: str) -> NodeEvidence:
    return next(n for n in scenario.nodes if n.name == name)


def test_healthy_cluster_exits_0_and_writes_every_report(tmp_path: Path) -> None:
    evidence = lab(tmp_path, defects=False)
    code, err, data = audit("--evidence", evidence, "--out", tmp_path / "out", "--fail-on", "info")
    assert code == 0, err
    assert failing(data) == set()
    for name in ("report.html", "findings.csv", "findings.json", "snapshot.json"):
        assert (tmp_path / "out" / name).is_file()
    assert "Exit 0: nothing failing at or above info." in err
    assert f"Report: {(tmp_path / 'out' / 'report.html').resolve()}" in err


def test_planted_defects_fail_exactly_and_exit_1(tmp_path: Path) -> None:
    scenario = demo_scenario(defects=True)
    evidence = scenario.write(tmp_path / "CONTOSO-SSIS")
    code, err, data = audit("--evidence", evidence, "--out", tmp_path / "out")
    assert code == 1, err
    assert failing(data) == scenario.expected_failures()
    assert "fail 5" in err and "critical 2" in err and "high 3" in err
    assert "SO-W02 WORKER02" in err and "Exit 1: failing findings at or above high." in err


def test_fail_on_sets_the_gate(tmp_path: Path) -> None:
    def only_binding_store(s: Scenario) -> None:
        bindings = node(s, "MASTER01").bindings
        assert bindings
        bindings[0].store = None  # SO-M06 is high

    evidence = lab(tmp_path, defects=False, change=only_binding_store)
    code_high, err, data = audit("--evidence", evidence, "--out", tmp_path / "high")
    assert (code_high, failing(data)) == (1, {("SO-M06", "MASTER01")}), err
    code_critical, err, _ = audit("--evidence", evidence, "--out", tmp_path / "crit", "--fail-on", "CRITICAL")
    assert code_critical == 0, err
    code_warn, _, _ = audit("--evidence", evidence, "--out", tmp_path / "warn", "--warn-only")
    assert code_warn == 0


def test_a_node_without_config_makes_the_audit_incomplete(tmp_path: Path) -> None:
    def add_unusable_node(s: Scenario) -> None:
        s.nodes.append(NodeEvidence(name="WORKER09", services=[]))  # certs and sslcert.txt, no config

    evidence = lab(tmp_path, defects=False, change=add_unusable_node)
    code, err, data = audit("--evidence", evidence, "--out", tmp_path / "out")
    assert code == 3, err
    assert data is not None
    errors = [(f["policy"], f["node"]) for f in data["findings"] if f["status"] == "error"]
    assert errors == [("SO-C01", "WORKER09")]
    assert "Exit 3: the audit is incomplete" in err
    code, err, _ = audit("--evidence", evidence, "--out", tmp_path / "out2", "--allow-incomplete")
    assert code == 0, err


def test_missing_evidence_is_incomplete_not_clean(tmp_path: Path) -> None:
    def drop_keys(s: Scenario) -> None:
        node(s, "WORKER01").keys = None  # nobody exported keys.json: SO-W06/SO-W09 cannot be judged

    evidence = lab(tmp_path, defects=False, change=drop_keys)
    code, err, data = audit("--evidence", evidence, "--out", tmp_path / "out")
    assert code == 3, err
    assert data is not None
    unassessed = {(f["policy"], f["node"]) for f in data["findings"]
                  if f["status"] == "not_assessed" and f["applicable"]}
    assert ("SO-W09", "WORKER01") in unassessed
    assert {n for _, n in unassessed} == {"WORKER01"}


def test_incomplete_outranks_failing_unless_allowed(tmp_path: Path) -> None:
    def defect_and_gap(s: Scenario) -> None:
        node(s, "WORKER03").keys = None

    evidence = lab(tmp_path, defects=True, change=defect_and_gap)
    assert audit("--evidence", evidence, "--out", tmp_path / "a")[0] == 3
    assert audit("--evidence", evidence, "--out", tmp_path / "b", "--allow-incomplete")[0] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one of --evidence DIR (offline) or --inventory FILE (live)"),
        (["--evidence", "{ev}", "--inventory", "{inv}"], "give exactly one of"),
        (["--evidence", "{tmp}/nope"], "no such folder"),
        (["--inventory", "{tmp}/nope.yaml"], "no such file"),
        (["--evidence", "{ev}", "--policies", "{tmp}/nope"], "no such folder"),
        (["--evidence", "{ev}", "--waivers", "{tmp}/nope.yaml"], "no such file"),
        (["--evidence", "{ev}", "--notify-webhook", "ftp://x"], "expected an http(s):// URL"),
        (["--evidence", "{ev}", "--notify-webhook", "ftp://bob:s3cret@hooks.example/x"], "hooks.example"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(tmp_path: Path, args: list[str], message: str) -> None:
    evidence = tmp_path / "ev"
    evidence.mkdir()
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("clusters: []\n")
    filled = [a.format(ev=evidence, inv=inventory, tmp=tmp_path) for a in args]
    code, err, _ = audit(*filled, "--out", tmp_path / "out")
    assert code == 2
    assert "scaleguard audit: error: " in err and message in err
    assert "s3cret" not in err


def test_bad_severity_and_missing_out_are_usage_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "--evidence", str(tmp_path), "--out", str(tmp_path / "o"),
                                 "--fail-on", "severe"])
    assert result.exit_code == 2 and "severe" in result.stderr
    result = runner.invoke(app, ["audit", "--evidence", str(tmp_path)])
    assert result.exit_code == 2 and "--out" in result.stderr


def test_unreadable_inventory_exits_2_with_its_reason(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("clusters:\n  - name: [unclosed\n", encoding="utf-8")
    code, err, _ = audit("--inventory", inventory, "--out", tmp_path / "out")
    assert code == 2
    assert f"scaleguard audit: error: {inventory}:3: not valid YAML" in err


def test_invalid_policy_file_exits_2_with_the_policy_error(tmp_path: Path) -> None:
    evidence = lab(tmp_path, defects=False)
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "broken.yaml").write_text("id: CUSTOM-01\nname: [oops\n", encoding="utf-8")
    code, err, _ = audit("--evidence", evidence, "--out", tmp_path / "out", "--policies", pack)
    assert code == 2
    assert f"scaleguard audit: error: {pack / 'broken.yaml'}:3: YAML syntax error" in err


def _verdict(data: dict[str, Any] | None, policy: str, node_name: str) -> tuple[str, str]:
    assert data is not None
    finding = next(f for f in data["findings"] if f["policy"] == policy and f["node"] == node_name)
    return finding["status"], finding["severity"]


def test_expiry_thresholds_are_configurable(tmp_path: Path) -> None:
    evidence = demo_scenario(defects=True).write(tmp_path / "CONTOSO-SSIS")  # WORKER03 expires in ~20 days
    _, err, data = audit("--evidence", evidence, "--out", tmp_path / "default")
    assert _verdict(data, "SO-W10", "WORKER03") == ("fail", "high"), err
    _, err, data = audit("--evidence", evidence, "--out", tmp_path / "medium",
                         "--expiry-high-days", "10", "--expiry-medium-days", "25")
    assert _verdict(data, "SO-W10", "WORKER03") == ("fail", "medium"), err
    # the report's expiry bands are the same limits: WORKER03's certificate is in the medium band
    html = (tmp_path / "medium" / "report.html").read_text(encoding="utf-8")
    assert "≤ 10 days" in html and "≤ 25 days" in html and "≤ 30 days" not in html
    rows = list(csv.DictReader(io.StringIO((tmp_path / "medium" / "expiry.csv").read_text(encoding="utf-8-sig"))))
    assert {r["bucket"] for r in rows if r["certificate_owner"] == "WORKER03"} == {"medium"}
    _, err, data = audit("--evidence", evidence, "--out", tmp_path / "relaxed",
                         "--expiry-high-days", "5", "--expiry-medium-days", "10")
    assert _verdict(data, "SO-W10", "WORKER03")[0] == "pass", err


def test_inverted_expiry_thresholds_are_a_usage_error(tmp_path: Path) -> None:
    evidence = lab(tmp_path, defects=False)
    code, err, _ = audit("--evidence", evidence, "--out", tmp_path / "out",
                         "--expiry-high-days", "40", "--expiry-medium-days", "30")
    assert code == 2
    assert "expiry thresholds need 0 <= high days <= medium days" in err


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The installed entry point's code in a real process: what cron would see on stdout and stderr."""
    code = "import sys; from scaleguard.cli.main import app; sys.argv[0] = 'scaleguard'; app()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def test_quiet_prints_nothing_on_success(tmp_path: Path) -> None:
    evidence = lab(tmp_path, defects=False)
    done = _cli("audit", "--quiet", "--evidence", evidence, "--out", tmp_path / "out", "--fail-on", "info")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert (tmp_path / "out" / "report.html").is_file()


def test_quiet_still_explains_a_failing_audit(tmp_path: Path) -> None:
    evidence = lab(tmp_path, defects=True)
    done = _cli("audit", "-q", "--evidence", evidence, "--out", tmp_path / "out")
    assert done.returncode == 1 and done.stdout == ""
    assert "Exit 1: failing findings at or above high." in done.stderr
