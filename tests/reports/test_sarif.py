"""findings.sarif: SARIF 2.1.0 that code-scanning dashboards accept.

Validated against the official OASIS schema (``additionalProperties: false`` on every object, the
enumerations) so a typo'd key or a level like ``"critical"`` fails here, not in GitHub; and every result
carries the ``physicalLocation.artifactLocation.uri`` GitHub code scanning requires.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from scaleguard.findings.fingerprint import fingerprint
from scaleguard.findings.model import Finding, FindingsFile, Severity, SincePrevious, Status
from scaleguard.reports.base import ReportContext
from scaleguard.reports.fixsteps import fix_step
from scaleguard.reports.sarif import SarifReporter
from scaleguard.snapshot.model import Snapshot

NOW = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
REF = (
    "https://learn.microsoft.com/sql/integration-services/scale-out/deal-with-certificates-in-ssis-scale-out"
)

SCHEMA_FILE = Path(__file__).parent / "schemas" / "sarif-schema-2.1.0.json"
"""The OASIS SARIF 2.1.0 schema (errata 01), vendored from oasis-tcs/sarif-spec
``sarif-2.1/schema/sarif-schema-2.1.0.json`` (commit a560296), so the test needs no network."""
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def check(log: Any) -> list[str]:
    """Every violation of the official SARIF 2.1.0 schema, as 'path: problem'."""
    validator = jsonschema.Draft4Validator(SCHEMA, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    return sorted(
        "$" + "".join(f"[{p!r}]" for p in error.absolute_path) + ": " + error.message
        for error in validator.iter_errors(log)
    )


def f(
    policy: str, node: str, status: Status, severity: Severity = Severity.CRITICAL, **extra: object
) -> Finding:
    return Finding.model_validate(
        {
            "policy": policy,
            "cluster": "prod",
            "node": node,
            "status": status,
            "severity": severity,
            "message": f"{policy} on {node}",
            "title": f"{policy} holds",
            "remediation": "repin-worker-master-thumbprint",
            "references": [REF],
            **extra,
        }
    )


POLICIES = [
    {
        "id": "SO-W02",
        "name": "worker-pins-master-certificate",
        "title": "the worker pins the master certificate",
        "description": "MasterHttpsCertThumbprint equals the master's SSLCertThumbprint.",
        "severity": "critical",
        "scope": "worker",
        "references": [REF, "sql-docs: deal-with-certificates-in-ssis-scale-out.md"],
        "remediation": "repin-worker-master-thumbprint",
    },
    {
        "id": "SO-W13",
        "name": "no-stale-worker-certificates",
        "title": "no stale worker certificates",
        "description": "d",
        "severity": "low",
        "scope": "worker",
        "references": [],
        "remediation": "remove-stale-worker-certificates",
    },
]


def render(findings: list[Finding], **extras: Any) -> dict[str, Any]:
    ff = FindingsFile(generated_at=NOW, source="ev/prod", findings=findings, policies=POLICIES, **extras)
    data = SarifReporter().render(ReportContext(snapshot=Snapshot(clusters=[]), findings=ff, now=NOW))
    parsed: dict[str, Any] = json.loads(data, parse_constant=_not_json)  # strict: NaN/Infinity are not JSON
    return parsed


def _not_json(token: str) -> None:
    raise ValueError(f"{token} is not valid JSON")


FINDINGS = [
    f("SO-W02", "WRK01", Status.FAIL, subject="AB" * 20),
    f("SO-W02", "WRK02", Status.PASS),
    f("SO-C01", "WRK03", Status.ERROR, Severity.CRITICAL, remediation="manual", references=[]),
    f("SO-W09", "WRK01", Status.NOT_ASSESSED),
    f(
        "SO-W13",
        "WRK01",
        Status.WAIVED,
        Severity.LOW,
        remediation="remove-stale-worker-certificates",
        waiver={
            "reason": "CHG-1",
            "owner": "jane",
            "expires": "2026-06-01",
            "source": "w.yaml:3",
            "original_status": "fail",
        },
    ),
]


def test_log_validates_against_the_sarif_2_1_0_schema() -> None:
    log = render(FINDINGS)
    assert check(log) == []
    assert log["version"] == "2.1.0" and len(log["runs"]) == 1


def test_the_schema_check_itself_catches_violations() -> None:
    log = render(FINDINGS)
    log["runs"][0]["results"][0]["level"] = "critical"
    del log["runs"][0]["tool"]["driver"]["name"]
    log["runs"][0]["results"][0]["messages"] = {}
    problems = check(log)
    assert len(problems) == 3
    assert any("'critical' is not one of" in p and "['level']" in p for p in problems)
    assert any("'name' is a required property" in p for p in problems)
    assert any("'messages' was unexpected" in p for p in problems)


def test_rules_carry_title_description_fix_and_references() -> None:
    rules = {r["id"]: r for r in render(FINDINGS)["runs"][0]["tool"]["driver"]["rules"]}
    assert set(rules) == {"SO-W02", "SO-W13", "SO-C01", "SO-W09"}
    w02 = rules["SO-W02"]
    assert w02["name"] == "worker-pins-master-certificate"
    assert w02["shortDescription"]["text"] == "the worker pins the master certificate"
    assert (
        w02["fullDescription"]["text"] == "MasterHttpsCertThumbprint equals the master's SSLCertThumbprint."
    )
    assert fix_step("repin-worker-master-thumbprint") in w02["help"]["text"]
    assert REF in w02["help"]["text"] and "sql-docs: deal-with" in w02["help"]["text"]
    assert w02["helpUri"] == REF
    assert w02["defaultConfiguration"]["level"] == "error"
    assert rules["SO-W13"]["defaultConfiguration"]["level"] == "note"
    assert w02["properties"]["security-severity"] == "9.5"


def test_results_are_fail_and_error_plus_waived_as_suppressed() -> None:
    run = render(FINDINGS)["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    results = run["results"]
    assert [(r["ruleId"], r["properties"]["node"]) for r in results] == [
        ("SO-W02", "WRK01"),
        ("SO-C01", "WRK03"),
        ("SO-W13", "WRK01"),
    ]
    for r in results:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
    w02 = results[0]
    assert w02["level"] == "error" and w02["message"]["text"] == "SO-W02 on WRK01"
    assert w02["locations"][0]["logicalLocations"][0] == {"name": "WRK01", "fullyQualifiedName": "prod/WRK01"}
    assert w02["partialFingerprints"]["scaleguardFinding/v1"] == fingerprint(FINDINGS[0])
    assert w02["properties"]["subject"] == "AB" * 20 and w02["properties"]["status"] == "fail"
    assert results[1]["properties"]["status"] == "error"
    waived = results[2]
    assert (
        waived["suppressions"][0]["kind"] == "external" and waived["suppressions"][0]["status"] == "accepted"
    )
    assert "CHG-1" in waived["suppressions"][0]["justification"] and waived["level"] == "note"
    assert "baselineState" not in w02  # no history comparison in this run


def test_baseline_state_follows_the_history_comparison() -> None:
    since = SincePrevious(
        previous_run=7,
        previous_at=None,
        new=[{"fingerprint": fingerprint(FINDINGS[0]), "policy": "SO-W02"}],
        persisting=1,
        run=8,
        scope="prod",
        history_file="h.sqlite",
    )
    results = render(FINDINGS, since_previous=since)["runs"][0]["results"]
    assert [r["baselineState"] for r in results] == ["new", "unchanged", "unchanged"]


@pytest.mark.parametrize("value", [float("nan"), datetime(2026, 1, 1, tzinfo=UTC)])
def test_unusual_evidence_values_still_serialise(value: object) -> None:
    log = render([f("SO-W02", "WRK01", Status.FAIL, evidence={"v": value, "nested": [value]})])
    assert check(log) == []
    evidence = log["runs"][0]["results"][0]["properties"]["evidence"]
    assert isinstance(evidence["v"], str) and evidence["nested"] == [evidence["v"]]


def _audit_demo(evidence: Path, out: Path, *extra: str) -> dict[str, Any]:
    from typer.testing import CliRunner

    from scaleguard.cli.main import app

    result = CliRunner().invoke(app, ["audit", "--evidence", str(evidence), "--out", str(out), *extra])
    assert result.exit_code in (1, 3), result.stderr
    log: dict[str, Any] = json.loads((out / "findings.sarif").read_text(encoding="utf-8"))
    return log


def _demo_with_unusable_node(tmp_path: Path) -> Path:
    from scaleguard.lab.evidence import NodeEvidence
    from scaleguard.lab.scenario import demo_scenario

    scenario = demo_scenario(defects=True)
    scenario.nodes.append(NodeEvidence(name="WORKER09", services=[]))  # no settings file: SO-C01 error
    return scenario.write(tmp_path / "CONTOSO-SSIS")


def test_every_result_of_a_real_audit_names_an_existing_evidence_file(tmp_path: Path) -> None:
    evidence = _demo_with_unusable_node(tmp_path)
    log = _audit_demo(evidence, tmp_path / "out")
    assert check(log) == []
    run = log["runs"][0]
    base = run["originalUriBaseIds"]["EVIDENCE"]["uri"]
    assert base == evidence.resolve().as_uri() + "/"
    where = {}
    for result in run["results"]:
        artifact = result["locations"][0]["physicalLocation"]["artifactLocation"]
        assert artifact["uriBaseId"] == "EVIDENCE"
        assert not artifact["uri"].startswith("/")
        assert (evidence / artifact["uri"]).exists(), artifact["uri"]
        where[(result["ruleId"], result["properties"]["node"])] = artifact["uri"]
    assert where[("SO-W02", "WORKER02")] == "WORKER02/WorkerSettings.config"
    assert where[("SO-M06", "MASTER01")] == "MASTER01/sslcert.txt"
    assert where[("SO-W09", "WORKER03")] == "WORKER03/keys.json"
    thumbprint = next(r for r in run["results"] if r["ruleId"] == "SO-W10")["properties"]["subject"]
    assert where[("SO-W10", "WORKER03")] == f"WORKER03/certs/My/{thumbprint}.cer"
    assert where[("SO-C01", "WORKER09")] == "WORKER09/"


def test_a_relative_evidence_path_gives_repository_relative_uris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CI job that audits a committed folder: URIs GitHub resolves against the checkout."""
    _demo_with_unusable_node(tmp_path / "repo" / "evidence")
    monkeypatch.chdir(tmp_path / "repo")
    log = _audit_demo(Path("evidence/CONTOSO-SSIS"), tmp_path / "out")
    assert check(log) == []
    run = log["runs"][0]
    assert "originalUriBaseIds" not in run
    for result in run["results"]:
        artifact = result["locations"][0]["physicalLocation"]["artifactLocation"]
        assert artifact["uriBaseId"] == "%SRCROOT%"
        assert artifact["uri"].startswith("evidence/CONTOSO-SSIS/")
        assert (tmp_path / "repo" / artifact["uri"]).exists(), artifact["uri"]


def test_uris_are_percent_encoded() -> None:
    log = render([f("SO-W02", "WRK 01#a", Status.FAIL)])
    assert check(log) == []
    artifact = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert artifact["uri"] == "ev/prod/WRK%2001%23a/WorkerSettings.config"


def test_live_results_point_at_the_node_layout_under_a_described_base() -> None:
    log = render([f("SO-M06", "MST01", Status.FAIL, remediation="repair-master-binding")], mode="live")
    assert check(log) == []
    run = log["runs"][0]
    artifact = run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert artifact == {"uri": "MST01/sslcert.txt", "uriBaseId": "NODES"}
    assert "WinRM" in run["originalUriBaseIds"]["NODES"]["description"]["text"]
