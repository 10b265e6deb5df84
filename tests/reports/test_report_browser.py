"""report.html in a real browser: the filters, sorting and views work, offline, and nothing executes.

Needs Chromium (CI installs it); skipped without it unless SCALEGUARD_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scaleguard.reports.base import ReportContext
from scaleguard.reports.html import HtmlReporter

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser: Any, context: ReportContext, tmp_path: Path) -> Iterator[Any]:
    path = tmp_path / "report.html"
    path.write_bytes(HtmlReporter().render(context))
    tab = browser.new_page()
    events: dict[str, list[str]] = {"errors": [], "dialogs": [], "requests": []}
    tab.on("pageerror", lambda exc: events["errors"].append(str(exc)))
    tab.on("dialog", lambda dialog: (events["dialogs"].append(dialog.message), dialog.dismiss()))
    tab.on("request", lambda request: events["requests"].append(request.url))
    tab.goto(path.as_uri())
    tab.events = events
    yield tab
    tab.close()


def rows(page: Any, table: str) -> list[list[str]]:
    result: list[list[str]] = page.eval_on_selector_all(
        f"#{table} tbody tr.row", "trs => trs.map(tr => Array.from(tr.cells, td => td.textContent))"
    )
    return result


def test_loads_offline_without_errors_or_executing_hostile_strings(page: Any) -> None:
    assert page.events["errors"] == [] and page.events["dialogs"] == []
    assert all(url.startswith("file://") for url in page.events["requests"]), page.events["requests"]
    messages = [r[5] for r in rows(page, "findings-table")]
    assert "stale certificate <script>alert(1)</script> left in My" in messages  # shown as text
    assert page.eval_on_selector_all("#findings-table script", "s => s.length") == 0


def test_filters_by_status_severity_node_policy_and_text(page: Any) -> None:
    assert len(rows(page, "findings-table")) == 8
    page.select_option("#findings-filters select[name=status]", "problems")
    assert {r[0] for r in rows(page, "findings-table")} == {"error", "fail", "not assessed"}
    page.select_option("#findings-filters select[name=severity]", "critical")
    shown = [(r[2], r[3]) for r in rows(page, "findings-table")]
    assert shown == [("SO-C01", "WORKER02"), ("SO-W09", "WORKER01")]
    page.click("#findings-filters button[type=reset]")
    page.fill("#findings-filters input[name=node]", "master01")
    page.wait_for_timeout(300)
    assert {r[3] for r in rows(page, "findings-table")} == {"MASTER01"}
    page.fill("#findings-filters input[name=node]", "")
    page.select_option("#findings-filters select[name=policy]", "SO-W10")
    assert [r[2] for r in rows(page, "findings-table")] == ["SO-W10"]
    page.select_option("#findings-filters select[name=policy]", "")
    page.fill("#findings-filters input[name=text]", "decommissioning")  # only in the waiver...
    page.wait_for_timeout(300)
    assert rows(page, "findings-table") == []
    page.fill("#findings-filters input[name=text]", "2025-03-21")  # ...but evidence is searched
    page.wait_for_timeout(300)
    assert [r[2] for r in rows(page, "findings-table")] == ["SO-W10"]


def test_clicking_a_header_sorts_and_a_row_shows_evidence_and_fix(page: Any) -> None:
    page.click("#findings-table thead th:nth-child(3)")  # policy
    policies = [r[2] for r in rows(page, "findings-table")]
    assert policies == sorted(policies)
    page.click("#findings-table thead th:nth-child(3)")
    assert [r[2] for r in rows(page, "findings-table")] == sorted(policies, reverse=True)
    page.click("#findings-table tbody tr.row:has-text('SO-W10')")
    detail = page.inner_text("#findings-table tr.detail")
    assert "display_name" in detail and "<script>alert(1)</script>" in detail
    assert "Fix: import-root-certificate" in detail and "LocalMachine\\Root" in detail


def test_summary_cards_nodes_and_certificates_views(page: Any) -> None:
    page.click("#count-fail")
    assert {r[0] for r in rows(page, "findings-table")} == {"fail"}
    page.click("#tabs button[data-tab=nodes]")
    assert page.is_visible("#nodes-table") and not page.is_visible("#findings-table")
    page.click("#nodes-table tbody tr.row:has-text('WORKER01')")
    page.click("text=Show this node's certificates")
    certs = rows(page, "certs-table")
    assert {r[0] for r in certs} == {"WORKER01"} and len(certs) == 3
    days = [int(r[5]) for r in certs]
    assert days == sorted(days), "certificates open sorted by days left"
    first_days = page.eval_on_selector("#certs-table tbody tr.row td:nth-child(6) span", "s => s.className")
    assert first_days == "exp-expired"
