"""junit.xml: one testcase per policy × node, statuses mapped to failure / error / skipped."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import defusedxml.ElementTree as SafeET

from scaleguard.findings.model import Finding, FindingsFile, Severity, Status
from scaleguard.reports.base import ReportContext
from scaleguard.reports.junit import JunitReporter, xml_text
from scaleguard.snapshot.model import Snapshot

NOW = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)


def f(policy: str, node: str, status: Status, cluster: str = "prod", **extra: object) -> Finding:
    return Finding.model_validate(
        {
            "policy": policy,
            "cluster": cluster,
            "node": node,
            "status": status,
            "severity": Severity.CRITICAL,
            "message": f"{policy} says {status.value}",
            "remediation": "import-root-certificate",
            **extra,
        }
    )


def render(findings: list[Finding]) -> bytes:
    ff = FindingsFile(
        generated_at=NOW,
        source="ev/prod",
        findings=findings,
        policies=[{"id": "SO-W03", "title": "master certificate is trusted by the worker"}],
    )
    return JunitReporter().render(ReportContext(snapshot=Snapshot(clusters=[]), findings=ff, now=NOW))


def test_statuses_map_to_junit_elements_with_counts() -> None:
    findings = [
        f("SO-W03", "WRK01", Status.PASS),
        f("SO-W03", "WRK02", Status.FAIL, evidence={"root": ["AB" * 20]}),
        f("SO-C01", "WRK03", Status.ERROR),
        f("SO-W09", "WRK01", Status.NOT_ASSESSED),
        f(
            "SO-W13",
            "WRK01",
            Status.WAIVED,
            waiver={
                "reason": "change CHG-1",
                "owner": "jane",
                "expires": "2026-06-01",
                "original_status": "fail",
            },
        ),
    ]
    root = SafeET.fromstring(render(findings))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "5",
        "1",
        "1",
        "2",
    )
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {
        "SO-W03: master certificate is trusted by the worker",
        "SO-C01",
        "SO-W09",
        "SO-W13",
    }
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert len(cases) == 5
    assert list(cases[("SO-W03", "WRK01")]) == []  # a pass has no child
    failure = cases[("SO-W03", "WRK02")].find("failure")
    assert (
        failure is not None
        and failure.get("message") == "SO-W03 says fail"
        and failure.get("type") == "critical"
    )
    assert "import-root-certificate" in (failure.text or "") and "ABAB" in (failure.text or "")
    error = cases[("SO-C01", "WRK03")].find("error")
    assert error is not None and error.get("message") == "SO-C01 says error"
    skipped = cases[("SO-W09", "WRK01")].find("skipped")
    assert skipped is not None and (skipped.get("message") or "").startswith(
        "not assessed (evidence missing)"
    )
    waived = cases[("SO-W13", "WRK01")].find("skipped")
    assert waived is not None
    assert (
        waived.get("message")
        == "waived until 2026-06-01 by jane: change CHG-1 (was fail: SO-W13 says waived)"
    )
    w03 = suites["SO-W03: master certificate is trusted by the worker"]
    assert (w03.get("tests"), w03.get("failures"), w03.get("errors")) == ("2", "1", "0")


def test_control_characters_from_nodes_cannot_break_the_xml() -> None:
    root = SafeET.fromstring(render([f("SO-W03", "WRK\x0001", Status.FAIL, message="bad \x1b[31m <&> ]]>")]))
    (case,) = root.iter("testcase")
    failure = case.find("failure")
    assert failure is not None and failure.get("message") == "bad \ufffd[31m <&> ]]>"
    assert case.get("name") == "WRK\ufffd01"


def test_exactly_the_characters_outside_xml_char_are_replaced() -> None:
    # XML 1.0 Char: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
    def allowed(cp: int) -> bool:
        return cp in (0x9, 0xA, 0xD) or 0x20 <= cp <= 0xD7FF or 0xE000 <= cp <= 0xFFFD or cp >= 0x10000

    every = "".join(map(chr, range(sys.maxunicode + 1)))
    expected = "".join(ch if allowed(ord(ch)) else "\ufffd" for ch in every)
    assert xml_text(every) == expected


def test_several_clusters_and_repeated_subjects_stay_distinguishable() -> None:
    root = SafeET.fromstring(
        render(
            [
                f("SO-W13", "WRK01", Status.FAIL, cluster="prod", subject="A" * 40),
                f("SO-W13", "WRK01", Status.FAIL, cluster="prod", subject="B" * 40),
                f("SO-W13", "WRK01", Status.PASS, cluster="dr"),
            ]
        )
    )
    names = sorted(c.get("name") or "" for c in root.iter("testcase"))
    assert names == ["dr/WRK01", f"prod/WRK01 [{'A' * 40}]", f"prod/WRK01 [{'B' * 40}]"]


def test_text_output_is_what_elementtree_writes_for_hostile_values() -> None:
    """junit.xml is built as text for speed; it must stay the bytes ElementTree + ET.indent produced."""
    import xml.etree.ElementTree as ET

    odd = 'a&b <c> "d" \'e\'\r\n\tf\x00]]>'
    findings = [
        # element text keeps a raw CR, which a parser reads back as LF: no CR where the text goes
        f("SO-W03", "w1", Status.FAIL, message=odd.replace("\r", ""), subject="s", evidence={"k": "<&>"}),
        f("SO-W03", "W1", Status.ERROR, subject="x"),
        f("SO-W03", "w2", Status.NOT_ASSESSED, applicable=False, message=odd),
        f("SO-W03", "w3", Status.WAIVED, waiver={"owner": odd, "reason": "r", "expires": "2026-06-01"}),
        f("SO-M01", odd, Status.PASS, cluster="other"),
    ]
    root = ET.fromstring(render(findings))
    ET.indent(root)
    expected = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode").encode() + b"\n"
    assert render(findings) == expected
    assert render([]).endswith(b' time="0" />\n')
