"""report.html from a real nightly audit, opened in headless Chromium.

Two audits of the demo cluster against one history file (the second after a worker was re-pinned), so
the report has something in every nightly section; then the page must load without console errors,
show the summary, the since-last-run section and the expiry chart, and filter findings by severity.
A screenshot is kept in test-artifacts/ for a human to look at.

Needs Chromium (Debian's ``chromium``; CI installs it); skipped without it unless
SCALEGUARD_REQUIRE_BROWSER=1, which turns the skip into a failure.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scaleguard.lab.scenario import demo_scenario
from scaleguard.pipeline import AuditOptions, run_audit

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("nightly")
    history = base / "history.sqlite"
    scenario = demo_scenario(3)
    run_audit(
        AuditOptions(
            out_dir=base / "night1",
            evidence=scenario.write(base / "ev1" / "CONTOSO-SSIS"),
            history=history,
            progress=False,
        )
    )
    fixed = copy.deepcopy(scenario)
    nodes = {n.name: n for n in fixed.nodes}
    assert nodes["WORKER01"].worker_settings and nodes["WORKER02"].worker_settings
    nodes["WORKER02"].worker_settings["MasterHttpsCertThumbprint"] = nodes["WORKER01"].worker_settings[
        "MasterHttpsCertThumbprint"
    ]
    result = run_audit(
        AuditOptions(
            out_dir=base / "night2",
            evidence=fixed.write(base / "ev2" / "CONTOSO-SSIS"),
            history=history,
            progress=False,
        )
    )
    return result.outputs["report.html"]


@pytest.fixture(scope="module")
def page(browser: Any, report: Path) -> Iterator[Any]:
    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    requests: list[str] = []
    tab.on(
        "console",
        lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None,
    )
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on("request", lambda request: requests.append(request.url))
    tab.goto(report.as_uri())
    tab.wait_for_selector("#findings-table tbody tr.row")
    tab.problems = problems
    tab.requests = requests
    yield tab
    tab.close()


def visible_rows(page: Any) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = page.evaluate(
        """() => {
          const heads = Array.from(document.querySelectorAll('#findings-table thead th'),
                                   th => th.textContent.trim().replace(/ [▲▼]$/, ''));
          return Array.from(document.querySelectorAll('#findings-table tbody tr.row'))
            .filter(tr => tr.offsetParent !== null)
            .map(tr => Object.fromEntries(Array.from(tr.cells, (td, i) => [heads[i], td.textContent.trim()])))
            ;
        }"""
    )
    return rows


def test_loads_offline_without_console_errors(page: Any) -> None:
    assert page.problems == []
    assert all(url.startswith(("file://", "data:")) for url in page.requests), page.requests


def test_summary_since_last_run_and_expiry_chart_are_visible(page: Any) -> None:
    for selector in ("#summary", "#causes", "#since-last-run", "#expiry-timeline"):
        assert page.is_visible(selector), selector
    assert page.inner_text("#since-new") == "0 new"
    assert page.inner_text("#since-resolved") == "1 resolved"
    assert "SO-W02" in page.inner_text("#since-last-run") and "WORKER02" in page.inner_text("#since-last-run")
    box = page.locator("#expiry-timeline").bounding_box()
    assert box is not None and box["width"] > 400 and box["height"] > 60
    assert page.locator("#expiry-timeline .expiry-marker").count() >= 3
    causes = page.locator("#causes ol.causes > li")
    assert causes.count() >= 3
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-nightly.png"), full_page=True)
    assert (ARTIFACTS / "report-nightly.png").stat().st_size > 10_000


def test_filtering_by_severity_changes_the_rows_accordingly(page: Any) -> None:
    every = visible_rows(page)
    assert len(every) > 20
    severities = {row["severity"] for row in every}
    assert {"critical", "high"} <= severities
    for level in ("critical", "high"):
        page.select_option("#findings-filters select[name=severity]", level)
        page.wait_for_timeout(100)
        shown = visible_rows(page)
        assert shown and {row["severity"] for row in shown} == {level}
        assert len(shown) == sum(1 for row in every if row["severity"] == level)
    page.select_option("#findings-filters select[name=severity]", "")
    page.wait_for_timeout(100)
    assert len(visible_rows(page)) == len(every)
