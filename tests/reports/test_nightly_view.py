"""The nightly sections of report.html: rebuilt from artefacts when the stages' results are missing, always
escaped."""

from __future__ import annotations

from scaleguard.findings.model import CauseSummary, SincePrevious, WaiverSummary
from scaleguard.reports.base import ReportContext
from scaleguard.reports.html import HtmlReporter
from scaleguard.reports.nightly import nightly_view

HOSTILE = "<script>alert(1)</script>"


def section(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start : html.index("</section>", start)]


def test_without_the_post_audit_stages_causes_are_recomputed_and_history_is_said_missing(
    context: ReportContext,
) -> None:
    view = nightly_view(context)
    assert view["since"] is None and view["waivers"] is None
    assert view["cause_total"] == 3 and view["failing_total"] == 3  # SO-W10, SO-W13 fail and SO-C01 error
    html = HtmlReporter().render(context).decode("utf-8")
    assert "History was not recorded for this audit" in section(html, "since-last-run")
    assert 'id="waivers"' not in html  # no waiver file, no warnings: no section
    assert html.index('id="causes"') < html.index("Worst problems")  # causes first


def test_the_post_audit_stages_results_are_rendered_escaped(context: ReportContext) -> None:
    context.findings.since_previous = SincePrevious(
        previous_run=4,
        previous_at="2025-02-28T12:00:00+00:00",
        persisting=2,
        new=[{"policy": "SO-W13", "node": HOSTILE, "severity": "low", "message": HOSTILE}],
        resolved=[{"policy": "SO-W02", "node": "WORKER09", "severity": "high", "now": "not_assessed"}],
        run=5,
        scope="c",
        history_file="h.sqlite",
    )
    context.findings.waivers = WaiverSummary(file="w.yaml", max_days=90, applied=1, active=1)
    context.findings.warnings = [f"waiver w.yaml:3 ({HOSTILE}) expired on 2025-02-01"]
    context.findings.causes = [
        CauseSummary(
            id="policy-1", kind="policy", title=HOSTILE, fix="manual", cluster="c", severity="high",
            nodes=[HOSTILE], symptoms=[], count=1,
        )
    ]
    html = HtmlReporter().render(context).decode("utf-8")
    nightly = html[html.index('<div class="nightly">') : html.index('id="expiry"')]
    assert HOSTILE not in nightly and "&lt;script&gt;alert(1)&lt;/script&gt;" in nightly
    since = section(html, "since-last-run")
    assert "1 new" in since and "1 resolved" in since and "2 persisting" in since
    assert "now not assessed" in since
    assert "expired on 2025-02-01" in section(html, "waivers")
