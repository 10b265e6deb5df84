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
from collections import Counter, defaultdict

from scaleguard.findings.model import Finding, Status
from scaleguard.reports.base import ReportContext
from scaleguard.reports.fixsteps import fix_step

# Every character XML 1.0 cannot carry (its ``Char`` production, complemented): listed directly, because the
# complement of the allowed ranges takes the regex compiler a large share of the import's time.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


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
        stamp = _attr(ctx.findings.generated_at.isoformat(timespec="seconds"))

        suites: list[str] = []
        names: dict[str, str] = {}  # testcase name → escaped; a node is named by every policy it ran
        totals: Counter[str] = Counter()
        for policy in sorted(per_policy):
            cases = sorted(per_policy[policy], key=lambda f: (f.cluster, f.node.casefold(), f.subject or ""))
            counts = _counts(cases)
            totals.update(counts)
            title = titles.get(policy) or cases[0].title
            repeated = Counter((f.cluster, f.node.casefold()) for f in cases)
            suites.append(
                f'  <testsuite name="{_attr(xml_text(f"{policy}: {title}" if title else policy))}" '
                f'timestamp="{stamp}" tests="{len(cases)}" failures="{counts["failures"]}" '
                f'errors="{counts["errors"]}" skipped="{counts["skipped"]}" time="0">\n'
            )
            classname = _attr(xml_text(policy))
            suites.extend(
                _testcase(
                    f, classname, names, multi_cluster=multi_cluster,
                    repeated=repeated[(f.cluster, f.node.casefold())] > 1,
                )
                for f in cases
            )
            suites.append("  </testsuite>\n")
        head = (
            f'<testsuites name="scaleguard" timestamp="{stamp}" tests="{len(findings)}" '
            f'failures="{totals["failures"]}" errors="{totals["errors"]}" skipped="{totals["skipped"]}" time="0"'
        )
        body = f"{head}>\n{''.join(suites)}</testsuites>" if suites else f"{head} />"
        return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8")


# The XML is built as text rather than through ElementTree, which costs several times as much for tens of
# thousands of elements. The output is what ElementTree wrote
# (``ET.indent`` with two spaces, ``short_empty_elements``): the same bytes, checked by the tests.


def _attr(value: str) -> str:
    """An attribute value escaped as ElementTree escapes it (``&<>"`` and CR, LF, TAB as references)."""
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "\r" in value:
        value = value.replace("\r", "&#13;")
    if "\n" in value:
        value = value.replace("\n", "&#10;")
    if "\t" in value:
        value = value.replace("\t", "&#09;")
    return value


def _text(value: str) -> str:
    """Element text escaped as ElementTree escapes it (``&<>``)."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _counts(findings: list[Finding]) -> Counter[str]:
    kinds = {
        Status.FAIL: "failures",
        Status.ERROR: "errors",
        Status.NOT_ASSESSED: "skipped",
        Status.WAIVED: "skipped",
    }
    return Counter(kinds[f.status] for f in findings if f.status in kinds)


_FAIL, _ERROR, _NOT_ASSESSED, _WAIVED = Status.FAIL, Status.ERROR, Status.NOT_ASSESSED, Status.WAIVED


def _testcase(f: Finding, classname: str, names: dict[str, str], *, multi_cluster: bool, repeated: bool) -> str:
    """One ``<testcase>``; ``classname`` is the policy id escaped, ``names`` remembers escaped names."""
    name = f"{f.cluster}/{f.node}" if multi_cluster and f.cluster else f.node
    if repeated and f.subject:
        name += f" [{f.subject}]"
    escaped = names.get(name)
    if escaped is None:
        escaped = names[name] = _attr(xml_text(name))
    case = f'    <testcase classname="{classname}" name="{escaped}" time="0"'
    status = f.status
    if status is _FAIL or status is _ERROR:
        tag = "failure" if status is _FAIL else "error"
        inner = f'<{tag} message="{_attr(xml_text(f.message))}" type="{_attr(f.severity.value)}"'
        details = xml_text(_details(f))
        inner += f">{_text(details)}</{tag}>" if details else " />"
    elif status is _NOT_ASSESSED:
        why = "does not apply in this mode" if not f.applicable else "evidence missing"
        inner = f'<skipped message="{_attr(xml_text(f"not assessed ({why}): {f.message}"))}" />'
    elif status is _WAIVED:
        w = f.waiver or {}
        message = (
            f"waived until {w.get('expires', '?')} by {w.get('owner', '?')}: {w.get('reason', '')}"
            f" (was {w.get('original_status', '?')}: {f.message})"
        )
        inner = f'<skipped message="{_attr(xml_text(message))}" />'
    else:
        return case + " />\n"
    return f"{case}>\n      {inner}\n    </testcase>\n"


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
