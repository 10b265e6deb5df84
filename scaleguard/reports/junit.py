"""``junit.xml``: the audit as a test run, for CI systems that chart tests (Jenkins, GitLab, Azure DevOps).

Mapping: one ``<testsuite>`` per policy, one ``<testcase>`` per policy × node (classname = policy id,
name = node, with the cluster when the audit spans several and the subject when a policy reports one
node more than once). ``fail`` → ``<failure>``, ``error`` → ``<error>``, ``not_assessed`` and ``waived``
→ ``<skipped message=...>`` saying why — a CI tool counts a skip as "not green", which is what an
unknown is. Text from nodes is stripped of characters XML 1.0 cannot carry, so a stray control byte in
a certificate subject cannot make the whole file unreadable.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict

from scaleguard.findings.model import Finding, Status
from scaleguard.reports.base import ReportContext
from scaleguard.reports.fixsteps import fix_step

_XML_INVALID = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: object) -> str:
    return _XML_INVALID.sub("\ufffd", str(value))


class JunitReporter:
    filename = "junit.xml"

    def render(self, ctx: ReportContext) -> bytes:
        findings = ctx.findings.findings
        multi_cluster = len({f.cluster for f in findings}) > 1
        per_policy: dict[str, list[Finding]] = defaultdict(list)
        for f in findings:
            per_policy[f.policy].append(f)
        titles = {str(p.get("id")): str(p.get("title") or "") for p in ctx.findings.policies}
        stamp = ctx.findings.generated_at.isoformat(timespec="seconds")

        root = ET.Element("testsuites", name="scaleguard", timestamp=stamp)
        totals: Counter[str] = Counter()
        for policy in sorted(per_policy):
            cases = sorted(per_policy[policy], key=lambda f: (f.cluster, f.node.casefold(), f.subject or ""))
            counts = _counts(cases)
            totals.update(counts)
            title = titles.get(policy) or cases[0].title
            suite = ET.SubElement(
                root,
                "testsuite",
                name=xml_text(f"{policy}: {title}" if title else policy),
                timestamp=stamp,
                tests=str(len(cases)),
                failures=str(counts["failures"]),
                errors=str(counts["errors"]),
                skipped=str(counts["skipped"]),
                time="0",
            )
            repeated = Counter((f.cluster, f.node.casefold()) for f in cases)
            for f in cases:
                _testcase(
                    suite,
                    f,
                    multi_cluster=multi_cluster,
                    repeated=repeated[(f.cluster, f.node.casefold())] > 1,
                )
        root.set("tests", str(len(findings)))
        for key in ("failures", "errors", "skipped"):
            root.set(key, str(totals[key]))
        root.set("time", "0")
        ET.indent(root)
        body: bytes = ET.tostring(root, encoding="unicode").encode("utf-8")
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body + b"\n"


def _counts(findings: list[Finding]) -> Counter[str]:
    kinds = {
        Status.FAIL: "failures",
        Status.ERROR: "errors",
        Status.NOT_ASSESSED: "skipped",
        Status.WAIVED: "skipped",
    }
    return Counter(kinds[f.status] for f in findings if f.status in kinds)


def _testcase(suite: ET.Element, f: Finding, *, multi_cluster: bool, repeated: bool) -> None:
    name = f"{f.cluster}/{f.node}" if multi_cluster and f.cluster else f.node
    if repeated and f.subject:
        name += f" [{f.subject}]"
    case = ET.SubElement(suite, "testcase", classname=xml_text(f.policy), name=xml_text(name), time="0")
    if f.status is Status.FAIL:
        el = ET.SubElement(case, "failure", message=xml_text(f.message), type=f.severity.value)
        el.text = xml_text(_details(f))
    elif f.status is Status.ERROR:
        el = ET.SubElement(case, "error", message=xml_text(f.message), type=f.severity.value)
        el.text = xml_text(_details(f))
    elif f.status is Status.NOT_ASSESSED:
        why = "does not apply in this mode" if not f.applicable else "evidence missing"
        ET.SubElement(case, "skipped", message=xml_text(f"not assessed ({why}): {f.message}"))
    elif f.status is Status.WAIVED:
        w = f.waiver or {}
        ET.SubElement(
            case,
            "skipped",
            message=xml_text(
                f"waived until {w.get('expires', '?')} by {w.get('owner', '?')}: {w.get('reason', '')}"
                f" (was {w.get('original_status', '?')}: {f.message})"
            ),
        )


def _details(f: Finding) -> str:
    lines = [f"severity: {f.severity.value}", f"message: {f.message}"]
    if f.subject:
        lines.append(f"subject: {f.subject}")
    if f.evidence:
        lines.append("evidence: " + json.dumps(f.evidence, sort_keys=True, ensure_ascii=False, default=str))
    if f.remediation:
        lines.append(f"remediation: {f.remediation} — {fix_step(f.remediation)}")
    lines += [f"reference: {ref}" for ref in f.references]
    return "\n".join(lines)
