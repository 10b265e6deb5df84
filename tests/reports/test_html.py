"""report.html: escaping of hostile node/user strings, self-containment, and summary figures."""

from __future__ import annotations

import json
import re
from collections import Counter
from html.parser import HTMLParser
from typing import Any

from report_samples import HOSTILE

from scaleguard.findings.model import FindingsFile
from scaleguard.reports.base import ReportContext
from scaleguard.reports.html import HtmlReporter, script_json

ISLAND = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def render(ctx: ReportContext) -> str:
    return HtmlReporter().render(ctx).decode("utf-8")


def island(html: str) -> dict[str, Any]:
    match = ISLAND.search(html)
    assert match, "the JSON data island is missing"
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def test_hostile_strings_never_appear_raw(context: ReportContext) -> None:
    html = render(context)
    assert HOSTILE not in html
    assert "<script>alert" not in html
    # escaped for HTML where the server renders it (worst problems, policy description) ...
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # ... and JSON-escaped in the data island, so it cannot close the <script> element
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in html
    assert html.count("<script") == 2  # the data island and the report's own code, nothing else


def test_hostile_strings_survive_the_round_trip_as_text(context: ReportContext) -> None:
    data = island(render(context))
    messages = {row[4] for row in data["findings"]}
    assert f"stale certificate {HOSTILE} left in My" in messages
    evidence = next(row[5] for row in data["findings"] if row[4].startswith("worker certificate expires"))
    assert evidence["display_name"] == HOSTILE
    assert f"CN={HOSTILE}" in {cert[0] for cert in data["certs"]}


def test_script_json_cannot_break_out_of_its_element() -> None:
    text = str(script_json({"a": "</script><!-- & \u2028 \u2029 >"}))
    for raw in ("<", ">", "&", "\u2028", "\u2029"):
        assert raw not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028 \u2029 >"}


def test_only_documentation_links_and_no_external_assets(context: ReportContext) -> None:
    html = render(context)
    parser = _Tags()
    parser.feed(html)
    assert not [t for t, attrs in parser.tags if "src" in attrs], "no src= at all: everything is inline"
    assert not [t for t, _ in parser.tags if t in ("link", "iframe", "img", "object", "embed")]
    assert "@import" not in html and "url(" not in html
    hrefs = [(t, attrs["href"]) for t, attrs in parser.tags if "href" in attrs]
    assert hrefs, "the policy references should be linked"
    for tag, href in hrefs:
        assert tag == "a" and href is not None and href.startswith("https://learn.microsoft.com/")
    assert "javascript:alert(2)" in html  # shown as text ...
    assert 'href="javascript' not in html  # ... never as a link


def test_summary_counts_match_the_findings(context: ReportContext) -> None:
    html = render(context)
    expected = Counter(f.status.value for f in context.findings.findings)
    shown = {s: int(n) for s, n in re.findall(r'id="count-(\w+)">\s*<span class="n">(\d+)</span>', html)}
    assert shown == {"error": 1, "fail": 2, "not_assessed": 1, "waived": 1, "pass": 3}
    assert shown == {s: expected.get(s, 0) for s in shown}
    cell = re.search(r'data-severity="high" data-status="fail" class="[^"]*">(\d+)<', html)
    assert cell and int(cell.group(1)) == 1
    assert "Incomplete audit: 1 check could not run." in html


def test_problems_come_first_and_every_finding_is_in_the_data(context: ReportContext) -> None:
    data = island(render(context))
    statuses = [row[2] for row in data["findings"]]
    assert len(statuses) == len(context.findings.findings)
    assert statuses == ["error", "fail", "fail", "not_assessed", "waived", "pass", "pass", "pass"]
    severities_of_fails = [row[3] for row in data["findings"] if row[2] == "fail"]
    assert severities_of_fails == ["high", "low"]


def test_certificate_inventory_lists_every_store_entry_with_days_left(context: ReportContext) -> None:
    data = island(render(context))
    nodes = [n["name"] for n in data["nodes"]]
    held = sorted((nodes[node], store, data["certs"][cert][2]) for node, store, cert, _ in data["holdings"])
    assert held == sorted([
        ("MASTER01", "Root", "A" * 40), ("MASTER01", "Root", "B" * 40), ("WORKER01", "Root", "A" * 40),
        ("WORKER01", "Root", "C" * 40), ("WORKER01", "My", "B" * 40),
    ])
    by_thumbprint = {c[2]: c for c in data["certs"]}
    assert (by_thumbprint["C" * 40][4], by_thumbprint["C" * 40][5]) == (-3, "expired")
    assert (by_thumbprint["B" * 40][4], by_thumbprint["B" * 40][5]) == (20, "soon")
    assert (by_thumbprint["A" * 40][4], by_thumbprint["A" * 40][5]) == (400, "ok")
    assert len(data["certs"]) == 3, "a certificate held by several nodes is stored once"


def test_uncollected_node_is_shown_as_unknown_not_as_empty(context: ReportContext) -> None:
    data = island(render(context))
    gone = next(n for n in data["nodes"] if n["name"] == "WORKER02")
    assert gone["state"] == "no_config" and gone["certs"] is None


def test_insecure_banner_only_when_tls_was_not_validated(context: ReportContext) -> None:
    assert "TLS validation was disabled" not in render(context)
    insecure = context.findings.model_copy(update={"insecure": True})
    html = render(ReportContext(context.snapshot, insecure, context.now))
    assert 'class="banner insecure" role="alert"' in html and "TLS validation was disabled" in html


def test_an_empty_audit_still_renders(context: ReportContext) -> None:
    empty = FindingsFile(generated_at=context.now, source="nowhere", findings=[])
    html = render(ReportContext(context.snapshot.model_copy(update={"clusters": []}), empty, context.now))
    assert "Every evaluated check passed (0 findings)." in html
    assert island(html)["findings"] == []
