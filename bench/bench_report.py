"""Nightly reports at fleet size: is report.html still usable for a 1,000-node audit?

Measures, for a generated fleet (1 master + 999 workers by default, ``scaleguard.lab.scenario``):

- two audits against one history file (the second is what a nightly run looks like: compared with the
  previous one), and what the nightly stages cost inside them: root causes, history recording, and
  rendering junit.xml, findings.sarif and expiry.csv;
- the size of every output, report.html first;
- report.html in headless Chromium: time to the ``load`` event, time until the findings table shows
  rows, the JS heap after load, and how long a severity filter takes to redraw the table.

Run: ``python bench/bench_report.py [--workers 999] [--keep DIR]``. Needs Debian's ``chromium``
(``/usr/bin/chromium``); without it the browser figures are reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def audits(evidence: Path, base: Path) -> dict[str, Any]:
    from scaleguard.pipeline import AuditOptions, run_audit

    history = base / "history.sqlite"
    first, first_s = timed(
        run_audit,
        AuditOptions(
            out_dir=base / "night1", evidence=evidence, history=history, progress=False, allow_incomplete=True
        ),
    )
    second, second_s = timed(
        run_audit,
        AuditOptions(
            out_dir=base / "night2", evidence=evidence, history=history, progress=False, allow_incomplete=True
        ),
    )
    extras = second.findings.model_extra or {}
    return {
        "result": second,
        "first_audit_s": round(first_s, 2),
        "second_audit_s": round(second_s, 2),
        "findings": len(second.findings.findings),
        "failing": sum(1 for f in second.findings.findings if f.status.value in ("fail", "error")),
        "causes": len(extras.get("causes", [])),
        "since_previous": {
            k: (len(v) if isinstance(v, list) else v)
            for k, v in (extras.get("since_previous") or {}).items()
            if k in ("new", "resolved", "persisting")
        },
        "outputs_bytes": {name: path.stat().st_size for name, path in sorted(second.outputs.items())},
        "history_bytes": history.stat().st_size,
    }


def stage_costs(result: Any, base: Path) -> dict[str, float]:
    """The nightly stages alone, on the second audit's artefacts (each run once more, outside the audit)."""
    from scaleguard.findings.causes import find_causes
    from scaleguard.findings.model import FindingsFile
    from scaleguard.findings.postprocess import record_history
    from scaleguard.pipeline import AuditOptions
    from scaleguard.reports.base import ReportContext
    from scaleguard.reports.expiry import ExpiryCsvReporter
    from scaleguard.reports.html import HtmlReporter
    from scaleguard.reports.junit import JunitReporter
    from scaleguard.reports.sarif import SarifReporter

    ff = result.findings
    ctx = ReportContext(snapshot=result.snapshot, findings=ff, now=ff.generated_at)
    costs = {"causes_s": timed(find_causes, ff.findings, result.snapshot)[1]}
    copy = FindingsFile.model_validate(ff.model_dump())
    options = AuditOptions(out_dir=base, history=base / "history-bench.sqlite")
    record_history(copy.findings, copy, options, ff.generated_at)  # first run into an empty file
    costs["history_record_s"] = timed(record_history, copy.findings, copy, options, ff.generated_at)[1]
    for reporter in (JunitReporter(), SarifReporter(), ExpiryCsvReporter(), HtmlReporter()):
        costs[f"render_{reporter.filename}_s"] = timed(reporter.render, ctx)[1]
    return {k: round(v, 3) for k, v in costs.items()}


def browser(report: Path) -> dict[str, Any]:
    chromium = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if chromium is None:
        return {"skipped": "no Chromium"}
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = instance.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        start = time.perf_counter()
        page.goto(report.as_uri(), wait_until="load", timeout=120_000)
        loaded = time.perf_counter() - start
        page.wait_for_selector("#findings-table tbody tr.row", timeout=120_000)
        rows = time.perf_counter() - start
        timing = page.evaluate(
            "() => { const n = performance.getEntriesByType('navigation')[0];"
            " return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd,"
            " heap: performance.memory ? performance.memory.usedJSHeapSize : null}; }"
        )
        before = page.inner_text("#findings-count")  # rows are paged, so watch the count line
        start = time.perf_counter()
        page.select_option("#findings-filters select[name=severity]", "critical")
        page.wait_for_function(
            "before => document.getElementById('findings-count').textContent !== before",
            arg=before,
            timeout=60_000,
        )
        filter_s = time.perf_counter() - start
        after = page.inner_text("#findings-count")
        instance.close()
    return {
        "load_event_s": round(loaded, 3),
        "first_rows_s": round(rows, 3),
        "dom_content_loaded_ms": round(timing["dcl"]),
        "load_event_ms": round(timing["load"]),
        "js_heap_mib": round(timing["heap"] / 2**20, 1) if timing["heap"] else None,
        "severity_filter_s": round(filter_s, 3),
        "findings_count_line": [before, after],
        "console_errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=999)
    parser.add_argument("--keep", type=Path, help="keep the fleet and reports in this folder")
    args = parser.parse_args()

    from scaleguard.lab.scenario import fleet_scenario

    base = args.keep or Path(tempfile.mkdtemp(prefix="scaleguard-bench-report-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        scenario, gen_s = timed(fleet_scenario, args.workers)
        evidence, write_s = timed(scenario.write, base / "evidence" / scenario.cluster)
        audit = audits(evidence, base)
        result = audit.pop("result")
        summary = {
            "nodes": args.workers + 1,
            "fleet_generate_s": round(gen_s + write_s, 2),
            **audit,
            "nightly_stage_costs": stage_costs(result, base),
            "report_html_mib": round(result.outputs["report.html"].stat().st_size / 2**20, 2),
            "browser": browser(result.outputs["report.html"]),
        }
        print(json.dumps(summary, indent=1))
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
