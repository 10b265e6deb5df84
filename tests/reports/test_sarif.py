"""findings.sarif: SARIF 2.1.0 that code-scanning dashboards accept, checked against the schema's rules.

The structural check below encodes, for every SARIF object the file uses, the schema's required
properties, the properties it allows (the 2.1.0 schema sets ``additionalProperties: false`` on them),
and its enumerations — so a typo'd key or a level like ``"critical"`` fails here, not in GitHub.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from scaleguard.findings.fingerprint import fingerprint
from scaleguard.findings.model import Finding, FindingsFile, Severity, Status
from scaleguard.reports.base import ReportContext
from scaleguard.reports.fixsteps import fix_step
from scaleguard.reports.sarif import SarifReporter
from scaleguard.snapshot.model import Snapshot

NOW = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
REF = (
    "https://learn.microsoft.com/sql/integration-services/scale-out/deal-with-certificates-in-ssis-scale-out"
)

# object → (required, allowed, {property: enum}, {property: child object or [child object]})
SARIF_2_1_0: dict[str, tuple[set[str], set[str], dict[str, set[str]], dict[str, str]]] = {
    "sarifLog": (
        {"version", "runs"},
        {"$schema", "version", "runs", "inlineExternalProperties", "properties"},
        {"version": {"2.1.0"}},
        {"runs": "[run]"},
    ),
    "run": (
        {"tool"},
        {
            "tool",
            "invocations",
            "conversion",
            "language",
            "versionControlProvenance",
            "originalUriBaseIds",
            "artifacts",
            "logicalLocations",
            "graphs",
            "results",
            "automationDetails",
            "runAggregates",
            "baselineGuid",
            "redactionTokens",
            "defaultEncoding",
            "defaultSourceLanguage",
            "newlineSequences",
            "columnKind",
            "externalPropertyFileReferences",
            "threadFlowLocations",
            "taxonomies",
            "addresses",
            "translations",
            "policies",
            "webRequests",
            "webResponses",
            "specialLocations",
            "properties",
        },
        {},
        {
            "tool": "tool",
            "invocations": "[invocation]",
            "results": "[result]",
            "automationDetails": "runAutomationDetails",
        },
    ),
    "tool": ({"driver"}, {"driver", "extensions", "properties"}, {}, {"driver": "toolComponent"}),
    "toolComponent": (
        {"name"},
        {
            "guid",
            "name",
            "organization",
            "product",
            "productSuite",
            "shortDescription",
            "fullDescription",
            "fullName",
            "version",
            "semanticVersion",
            "dottedQuadFileVersion",
            "releaseDateUtc",
            "downloadUri",
            "informationUri",
            "globalMessageStrings",
            "notifications",
            "rules",
            "taxa",
            "locations",
            "language",
            "contents",
            "isComprehensive",
            "localizedDataSemanticVersion",
            "minimumRequiredLocalizedDataSemanticVersion",
            "associatedComponent",
            "translationMetadata",
            "supportedTaxonomies",
            "properties",
        },
        {},
        {"rules": "[reportingDescriptor]"},
    ),
    "reportingDescriptor": (
        {"id"},
        {
            "id",
            "deprecatedIds",
            "guid",
            "deprecatedGuids",
            "name",
            "deprecatedNames",
            "shortDescription",
            "fullDescription",
            "messageStrings",
            "defaultConfiguration",
            "helpUri",
            "help",
            "relationships",
            "properties",
        },
        {},
        {
            "shortDescription": "multiformatMessageString",
            "fullDescription": "multiformatMessageString",
            "help": "multiformatMessageString",
            "defaultConfiguration": "reportingConfiguration",
        },
    ),
    "reportingConfiguration": (
        set(),
        {"enabled", "level", "rank", "parameters", "properties"},
        {"level": {"none", "note", "warning", "error"}},
        {},
    ),
    "multiformatMessageString": ({"text"}, {"text", "markdown", "properties"}, {}, {}),
    "invocation": (
        {"executionSuccessful"},
        {
            "commandLine",
            "arguments",
            "responseFiles",
            "startTimeUtc",
            "endTimeUtc",
            "exitCode",
            "ruleConfigurationOverrides",
            "notificationConfigurationOverrides",
            "toolExecutionNotifications",
            "toolConfigurationNotifications",
            "exitCodeDescription",
            "exitSignalName",
            "exitSignalNumber",
            "processStartFailureMessage",
            "executionSuccessful",
            "machine",
            "account",
            "processId",
            "executableLocation",
            "workingDirectory",
            "environmentVariables",
            "stdin",
            "stdout",
            "stderr",
            "stdoutStderr",
            "properties",
        },
        {},
        {},
    ),
    "runAutomationDetails": (set(), {"description", "id", "guid", "correlationGuid", "properties"}, {}, {}),
    "result": (
        {"message"},
        {
            "ruleId",
            "ruleIndex",
            "rule",
            "kind",
            "level",
            "message",
            "analysisTarget",
            "locations",
            "guid",
            "correlationGuid",
            "occurrenceCount",
            "partialFingerprints",
            "fingerprints",
            "stacks",
            "codeFlows",
            "graphs",
            "graphTraversals",
            "relatedLocations",
            "suppressions",
            "baselineState",
            "rank",
            "attachments",
            "hostedViewerUri",
            "workItemUris",
            "provenance",
            "fixes",
            "taxa",
            "webRequest",
            "webResponse",
            "properties",
        },
        {
            "kind": {"notApplicable", "pass", "fail", "review", "open", "informational"},
            "level": {"none", "note", "warning", "error"},
            "baselineState": {"new", "unchanged", "updated", "absent"},
        },
        {"message": "message", "locations": "[location]", "suppressions": "[suppression]"},
    ),
    "message": (set(), {"text", "markdown", "id", "arguments", "properties"}, {}, {}),
    "location": (
        set(),
        {
            "id",
            "physicalLocation",
            "logicalLocations",
            "message",
            "annotations",
            "relationships",
            "properties",
        },
        {},
        {"logicalLocations": "[logicalLocation]"},
    ),
    "logicalLocation": (
        set(),
        {"name", "index", "fullyQualifiedName", "decoratedName", "parentIndex", "kind", "properties"},
        {},
        {},
    ),
    "suppression": (
        {"kind"},
        {"guid", "kind", "status", "justification", "location", "properties"},
        {"kind": {"inSource", "external"}, "status": {"accepted", "underReview", "rejected"}},
        {},
    ),
}


def check(obj: Any, kind: str, path: str = "$") -> list[str]:
    """Every violation of the SARIF 2.1.0 object rules above, as 'path: problem'."""
    if not isinstance(obj, dict):
        return [f"{path}: {kind} must be an object"]
    required, allowed, enums, children = SARIF_2_1_0[kind]
    problems = [f"{path}: missing required '{key}'" for key in sorted(required - obj.keys())]
    problems += [f"{path}: '{key}' is not a {kind} property" for key in sorted(obj.keys() - allowed)]
    problems += [
        f"{path}.{key}: {obj[key]!r} not in {sorted(values)}"
        for key, values in enums.items()
        if key in obj and obj[key] not in values
    ]
    if kind == "message" and "text" not in obj and "id" not in obj:
        problems.append(f"{path}: a message needs 'text' or 'id'")
    if "properties" in obj and not isinstance(obj["properties"], dict):
        problems.append(f"{path}.properties: a property bag is an object")
    for key, child in children.items():
        if key not in obj:
            continue
        if child.startswith("["):
            if not isinstance(obj[key], list):
                problems.append(f"{path}.{key}: must be an array")
                continue
            for i, item in enumerate(obj[key]):
                problems += check(item, child.strip("[]"), f"{path}.{key}[{i}]")
        else:
            problems += check(obj[key], child, f"{path}.{key}")
    return problems


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


def test_log_satisfies_the_sarif_2_1_0_object_rules() -> None:
    log = render(FINDINGS)
    assert check(log, "sarifLog") == []
    assert log["version"] == "2.1.0" and len(log["runs"]) == 1


def test_the_checker_itself_catches_violations() -> None:
    log = render(FINDINGS)
    log["runs"][0]["results"][0]["level"] = "critical"
    del log["runs"][0]["tool"]["driver"]["name"]
    log["runs"][0]["results"][0]["messages"] = {}
    assert sorted(check(log, "sarifLog")) == sorted(
        [
            "$.runs[0].results[0]: 'messages' is not a result property",
            "$.runs[0].results[0].level: 'critical' not in ['error', 'none', 'note', 'warning']",
            "$.runs[0].tool.driver: missing required 'name'",
        ]
    )


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
    since = {
        "previous_run": 7,
        "new": [{"fingerprint": fingerprint(FINDINGS[0]), "policy": "SO-W02"}],
        "resolved": [],
        "persisting": 1,
    }
    results = render(FINDINGS, since_previous=since)["runs"][0]["results"]
    assert [r["baselineState"] for r in results] == ["new", "unchanged", "unchanged"]


@pytest.mark.parametrize("value", [float("nan"), datetime(2026, 1, 1, tzinfo=UTC)])
def test_unusual_evidence_values_still_serialise(value: object) -> None:
    log = render([f("SO-W02", "WRK01", Status.FAIL, evidence={"v": value, "nested": [value]})])
    assert check(log, "sarifLog") == []
    evidence = log["runs"][0]["results"][0]["properties"]["evidence"]
    assert isinstance(evidence["v"], str) and evidence["nested"] == [evidence["v"]]
