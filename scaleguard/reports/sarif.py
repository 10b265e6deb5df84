"""``findings.sarif``: SARIF 2.1.0 for code-scanning dashboards (GitHub, Azure DevOps, DefectDojo).

Mapping:

- ``tool.driver.rules``: one reporting descriptor per policy — ``id``, ``name`` (kebab-case),
  ``shortDescription`` = title, ``fullDescription`` = description, ``help`` = the documented manual fix
  and the references, ``defaultConfiguration.level`` from the severity (critical/high → error,
  medium → warning, low/info → note) and ``properties.security-severity`` for GitHub's ranking.
- ``results``: every ``fail`` and ``error`` finding (a pass is not a result, an unknown is not a
  defect), plus waived ones with a ``suppressions`` entry carrying the waiver, so dashboards show them
  as accepted instead of losing them. Each result has a *physical* location, the evidence or
  settings file it is about (:mod:`scaleguard.reports.sarif_locations`; GitHub code scanning rejects a
  result without one), and a *logical* one, ``cluster/node``. ``partialFingerprints`` carries the
  history fingerprint, so dashboards track one problem across nightly runs the same way
  ``scaleguard history`` does, and ``baselineState`` says new/unchanged when the run was compared with a previous one.
"""

from __future__ import annotations

import json
import math
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from scaleguard.findings.fingerprint import fingerprint
from scaleguard.findings.model import Finding, Severity, SincePrevious, Status
from scaleguard.reports.base import ReportContext
from scaleguard.reports.fixsteps import fix_step
from scaleguard.reports.sarif_locations import LocationBase, artifact
from scaleguard.reports.view import PolicyRow, policy_rows

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}
FINGERPRINT_KEY = "scaleguardFinding/v1"


class SarifReporter:
    filename = "findings.sarif"

    def render(self, ctx: ReportContext) -> bytes:
        text = json.dumps(sarif_log(ctx), indent=1, ensure_ascii=False, allow_nan=False)
        return (text + "\n").encode("utf-8")


def sarif_log(ctx: ReportContext) -> dict[str, Any]:
    ff = ctx.findings
    rows = policy_rows(ff)
    names = _policy_names(ff.policies, ff.findings)
    index = {row.id: i for i, row in enumerate(rows)}
    baseline = _baseline_states(ff.since_previous)
    clusters = {c.cluster: c for c in ctx.snapshot.clusters}
    bases = {
        name: LocationBase(cluster, ff.source, cluster.mode, ordinal=i)
        for i, (name, cluster) in enumerate(clusters.items())
    }
    default_base = LocationBase(None, ff.source, ff.mode)
    policies = {str(p.get("id")): p for p in ff.policies}
    results = []
    fail, error, waived = Status.FAIL, Status.ERROR, Status.WAIVED  # by identity: one test per finding
    for f in ff.findings:
        if (status := f.status) is fail or status is error or (status is waived and _was_open(f)):
            base = bases.get(f.cluster, default_base)
            where = base.location(artifact(f, policies.get(f.policy, {}), clusters.get(f.cluster)))
            results.append(_result(f, index[f.policy], baseline, where))
    original: dict[str, Any] = {}
    for base in list(bases.values()) or [default_base]:
        original.update(base.original)
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "scaleguard",
                "version": _version(),
                "informationUri": "https://learn.microsoft.com/sql/integration-services/scale-out/"
                "deal-with-certificates-in-ssis-scale-out",
                "rules": [_rule(row, names.get(row.id, "")) for row in rows],
            }
        },
        "invocations": [
            {
                "executionSuccessful": True,
                "endTimeUtc": ff.generated_at.isoformat().replace("+00:00", "Z"),
            }
        ],
        "automationDetails": {"id": f"scaleguard/{ff.mode}/"},
        **({"originalUriBaseIds": original} if original else {}),
        "results": results,
        "properties": {"source": ff.source, "mode": ff.mode, "insecure": ff.insecure},
    }
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


def _version() -> str:
    try:
        return version("scaleguard")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


def _policy_names(policies: list[dict[str, Any]], findings: list[Finding]) -> dict[str, str]:
    names = {str(p.get("id")): str(p.get("name") or "") for p in policies}
    for f in findings:
        if not names.get(f.policy) and f.name:
            names[f.policy] = f.name
    return names


def _rule(row: PolicyRow, name: str) -> dict[str, Any]:
    try:
        severity = Severity(row.severity)
    except ValueError:  # a user pack with a typo'd severity still gets a rule, at the middle level
        severity = Severity.MEDIUM
    fix = row.fix_step or fix_step(row.remediation)
    text_lines = [row.description or row.title]
    md_lines = [row.description or row.title]
    if row.remediation:
        text_lines.append(f"Fix ({row.remediation}): {fix}")
        md_lines.append(f"**Fix** (`{row.remediation}`): {fix}")
    if row.references:
        text_lines.append("References: " + "; ".join(row.references))
        md_lines.append("**References**\n\n" + "\n".join(f"- {_md_link(r)}" for r in row.references))
    rule: dict[str, Any] = {
        "id": row.id,
        "name": name or row.id,
        "shortDescription": {"text": row.title or row.id},
        "fullDescription": {"text": row.description or row.title or row.id},
        "help": {"text": "\n\n".join(text_lines), "markdown": "\n\n".join(md_lines)},
        "defaultConfiguration": {"level": LEVELS[severity]},
        "properties": {
            "severity": severity.value,
            "security-severity": SECURITY_SEVERITY[severity],
            "scope": row.scope,
            "remediation": row.remediation,
            "tags": ["scaleguard", "ssis-scale-out", "certificates"],
        },
    }
    web = next((r for r in row.references if r.startswith(("https://", "http://"))), None)
    if web:
        rule["helpUri"] = web
    return rule


def _md_link(ref: str) -> str:
    return f"<{ref}>" if ref.startswith(("https://", "http://")) else ref


def _was_open(f: Finding) -> bool:
    return (f.waiver or {}).get("original_status") in (Status.FAIL.value, Status.ERROR.value)


def _baseline_states(since: SincePrevious | None) -> dict[str, str]:
    """fingerprint → new/unchanged, when this run was compared with a previous one."""
    if since is None or since.previous_run is None:
        return {}
    return {str(e.get("fingerprint")): "new" for e in since.new}


def _plain_json(value: Any) -> Any:
    """Evidence as strict JSON: NaN/Infinity and non-JSON types become text (consumers reject ``NaN``)."""
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _result(f: Finding, rule_index: int, baseline: dict[str, str], where: dict[str, Any]) -> dict[str, Any]:
    fp = fingerprint(f)
    severity_level = LEVELS[f.severity]
    result: dict[str, Any] = {
        "ruleId": f.policy,
        "ruleIndex": rule_index,
        "kind": "fail",
        "level": severity_level,
        "message": {"text": f.message or f.title or f.policy},
        "locations": [
            {
                "physicalLocation": {"artifactLocation": where},
                "logicalLocations": [
                    {
                        "name": f.node,
                        "fullyQualifiedName": f"{f.cluster}/{f.node}" if f.cluster else f.node,
                    }
                ],
            }
        ],
        "partialFingerprints": {FINGERPRINT_KEY: fp},
        "properties": {
            "status": f.status.value,
            "severity": f.severity.value,
            "cluster": f.cluster,
            "node": f.node,
            "subject": f.subject,
            "remediation": f.remediation,
            "evidence": _plain_json(f.evidence),
        },
    }
    if baseline:
        result["baselineState"] = baseline.get(fp, "unchanged")
    if f.status is Status.WAIVED and f.waiver:
        w = f.waiver
        result["properties"]["status"] = str(w.get("original_status"))
        result["suppressions"] = [
            {
                "kind": "external",
                "status": "accepted",
                "justification": f"{w.get('reason', '')} (owner {w.get('owner', '?')}, "
                f"until {w.get('expires', '?')}, {w.get('source', '')})",
            }
        ]
    return result
