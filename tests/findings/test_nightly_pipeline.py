"""Nightly operations through the real pipeline: evidence folders → audit → history, waivers, CI outputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
import pytest
from typer.testing import CliRunner

from scaleguard.cli.main import app
from scaleguard.lab.scenario import Scenario, demo_scenario
from scaleguard.pipeline import AuditOptions, run_audit

runner = CliRunner()


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return demo_scenario(3)


@pytest.fixture(scope="module")
def evidence(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scenario.write(tmp_path_factory.mktemp("night1") / "CONTOSO-SSIS")


@pytest.fixture(scope="module")
def changed_evidence(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The next night: WORKER02 was re-pinned (fixed), WORKER01 lost the master certificate from Root."""
    changed = copy.deepcopy(scenario)
    nodes = {n.name: n for n in changed.nodes}
    good_pin = str(nodes["WORKER01"].worker_settings["MasterHttpsCertThumbprint"])  # type: ignore[index]
    nodes["WORKER02"].worker_settings["MasterHttpsCertThumbprint"] = good_pin  # type: ignore[index]
    nodes["WORKER01"].root = [c for c in nodes["WORKER01"].root if c.thumbprint != good_pin]
    return changed.write(tmp_path_factory.mktemp("night2") / "CONTOSO-SSIS")


def problems(findings_json: Path) -> set[tuple[str, str]]:
    data = json.loads(findings_json.read_text(encoding="utf-8"))
    return {(f["policy"], f["node"]) for f in data["findings"] if f["status"] in ("fail", "error")}


def audit(evidence: Path, out: Path, history: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(
        app, ["audit", "--evidence", str(evidence), "--out", str(out), "--history", str(history), *extra]
    )
    data = (
        json.loads((out / "findings.json").read_text(encoding="utf-8"))
        if (out / "findings.json").exists()
        else {}
    )
    return result.exit_code, data, result.stderr


def test_two_nights_report_exactly_the_new_and_resolved_problems(
    evidence: Path, changed_evidence: Path, tmp_path: Path
) -> None:
    history = tmp_path / "history.sqlite"
    code1, first, _ = audit(evidence, tmp_path / "night1", history)
    assert code1 == 1  # the demo's planted defects fail at high and above
    assert first["since_previous"]["previous_run"] is None
    code2, second, _ = audit(changed_evidence, tmp_path / "night2", history)
    assert code2 == code1

    before, after = (
        problems(tmp_path / "night1" / "findings.json"),
        problems(tmp_path / "night2" / "findings.json"),
    )
    since = second["since_previous"]
    new = {(e["policy"], e["node"]) for e in since["new"]}
    resolved = {(e["policy"], e["node"]) for e in since["resolved"]}
    assert new == after - before and resolved == before - after and since["persisting"] == len(before & after)
    # and those are exactly the two changes made to the evidence; the demo's other four defects persist
    assert new == {("SO-W03", "WORKER01")}
    assert resolved == {("SO-W02", "WORKER02")}
    assert since["persisting"] == 4
    assert since["resolved"][0]["now"] == "pass"
    assert since["previous_run"] == first["since_previous"]["run"]

    listing = runner.invoke(app, ["history", "--history", str(history), "--json"])
    runs = json.loads(listing.output)
    assert [r["new"] for r in runs] == [None, len(new)]
    assert [r["resolved"] for r in runs] == [None, 1]


def test_every_output_is_written_and_agrees_with_findings_json(evidence: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _, data, _ = audit(evidence, out, tmp_path / "h.sqlite")
    for name in ("report.html", "findings.csv", "findings.json", "junit.xml", "findings.sarif", "expiry.csv"):
        assert (out / name).is_file(), name
    failing = [f for f in data["findings"] if f["status"] == "fail"]
    junit = SafeET.parse(out / "junit.xml").getroot()
    assert int(junit.get("tests")) == len(data["findings"])
    assert int(junit.get("failures")) == len(failing)
    sarif = json.loads((out / "findings.sarif").read_text(encoding="utf-8"))
    results = sarif["runs"][0]["results"]
    assert len(results) == len([f for f in data["findings"] if f["status"] in ("fail", "error")])
    assert {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]} >= {"SO-M01", "SO-W13", "SO-C01"}
    causes = data["causes"]
    assert sum(c["count"] for c in causes) == len(results)
    assert causes[0]["severity"] == "critical"
    assert "expired" in (out / "expiry.csv").read_text(encoding="utf-8-sig").splitlines()[1]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="causes"' in html and 'id="since-last-run"' in html and 'id="expiry-timeline"' in html


WAIVER = """\
waivers:
  - policy: SO-M11
    node: MASTER*
    reason: SCHANNEL change scheduled in CHG-0042
    owner: ops-team
    expires: {expires}
"""


def test_active_waiver_flows_into_every_output(evidence: Path, tmp_path: Path) -> None:
    waivers = tmp_path / "w.yaml"
    waivers.write_text(WAIVER.format(expires="2099-01-01"), encoding="utf-8")
    options = AuditOptions(
        out_dir=tmp_path / "out", evidence=evidence, waivers=waivers, history=tmp_path / "h.db", now=None
    )
    with pytest.raises(Exception, match="days away"):  # 2099 is far beyond 90 days: rejected, not applied
        run_audit(options)
    from datetime import UTC, datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    waivers.write_text(WAIVER.format(expires=soon), encoding="utf-8")
    code, data, _ = audit(evidence, tmp_path / "out", tmp_path / "h.db", "--waivers", str(waivers))
    (m11,) = [f for f in data["findings"] if f["policy"] == "SO-M11"]
    assert m11["status"] == "waived"
    assert m11["waiver"]["owner"] == "ops-team" and m11["waiver"]["original_status"] == "fail"
    assert data["waivers"]["applied"] == 1 and data["waivers"]["stale"] == []
    junit = (tmp_path / "out" / "junit.xml").read_text(encoding="utf-8")
    assert "waived until " + soon + " by ops-team: SCHANNEL change scheduled in CHG-0042" in junit
    sarif = json.loads((tmp_path / "out" / "findings.sarif").read_text(encoding="utf-8"))
    (suppressed,) = [r for r in sarif["runs"][0]["results"] if r["ruleId"] == "SO-M11"]
    assert suppressed["suppressions"][0]["status"] == "accepted"
    assert all(
        c["symptoms"] != [{"policy": "SO-M11", "node": "MASTER01", "status": "fail", "severity": "high"}]
        for c in data["causes"]
    )


def test_expired_and_stale_waivers_warn_and_the_finding_counts_again(evidence: Path, tmp_path: Path) -> None:
    waivers = tmp_path / "w.yaml"
    waivers.write_text(
        WAIVER.format(expires="2020-01-01")
        + """\
  - policy: SO-W05
    node: WORKER01
    reason: nothing to waive
    owner: bob
    expires: {today}
""".format(today=__import__("datetime").date.today().isoformat()),
        encoding="utf-8",
    )
    code, data, stderr = audit(evidence, tmp_path / "out", tmp_path / "h.db", "--waivers", str(waivers))
    (m11,) = [f for f in data["findings"] if f["policy"] == "SO-M11"]
    assert m11["status"] == "fail" and m11["waiver"] is None
    assert [w["policy"] for w in data["waivers"]["expired"]] == ["SO-M11"]
    assert [w["policy"] for w in data["waivers"]["stale"]] == ["SO-W05"]
    assert "expired on 2020-01-01" in stderr and "is stale" in stderr
    assert any("expired on 2020-01-01" in w for w in data["warnings"])
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "expired on 2020-01-01" in html


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (WAIVER.format(expires="2099-01-01"), ":6: expires 2099-01-01 is"),
        (WAIVER.replace("    expires: {expires}\n", ""), ":2: waiver has no expiry"),
        ("waivers:\n  - policy: SO-M11\n   node: [oops\n", ":3: not valid YAML"),
    ],
)
def test_rejected_waiver_file_exits_2_with_the_reason(
    evidence: Path, tmp_path: Path, text: str, expected: str
) -> None:
    waivers = tmp_path / "w.yaml"
    waivers.write_text(text, encoding="utf-8")
    code, _, stderr = audit(evidence, tmp_path / "out", tmp_path / "h.db", "--waivers", str(waivers))
    assert code == 2
    assert f"{waivers}{expected}" in " ".join(stderr.split())
    assert not (tmp_path / "out" / "snapshot.json").exists()  # refused before collecting anything


def test_cli_maximum_waiver_duration_overrides_the_file(evidence: Path, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    waivers = tmp_path / "w.yaml"
    in_30_days = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    waivers.write_text("max_days: 60\n" + WAIVER.format(expires=in_30_days), encoding="utf-8")
    code, data, _ = audit(evidence, tmp_path / "ok", tmp_path / "h.db", "--waivers", str(waivers))
    assert data["waivers"]["max_days"] == 60 and data["waivers"]["applied"] == 1
    code, _, stderr = audit(
        evidence, tmp_path / "out", tmp_path / "h.db", "--waivers", str(waivers), "--waiver-max-days", "10"
    )
    assert code == 2 and "at most 10 days" in " ".join(stderr.split())


def test_webhook_is_posted_after_the_reports_exist(
    evidence: Path, changed_evidence: Path, tmp_path: Path
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            payload["report_existed"] = Path(payload["report"]).is_file()
            received.append(payload)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        history = tmp_path / "h.sqlite"
        audit(evidence, tmp_path / "n1", history, "--notify-webhook", url)
        code, data, _ = audit(changed_evidence, tmp_path / "n2", history, "--notify-webhook", url)
    finally:
        server.shutdown()
        server.server_close()
    first, second = received
    assert first["new"] is None and first["report_existed"]
    assert (second["new"], second["resolved"]) == (1, 1)
    assert second["exit_code"] == code and second["report"] == str(
        (tmp_path / "n2" / "report.html").resolve()
    )
    assert second["failing"] == sum(1 for f in data["findings"] if f["status"] in ("fail", "error"))


def test_an_unusable_history_file_is_a_warning_on_stderr_and_in_findings_json(
    evidence: Path, tmp_path: Path
) -> None:
    bogus = tmp_path / "h.sqlite"
    bogus.write_bytes(b"definitely not SQLite " * 100)
    code, data, stderr = audit(evidence, tmp_path / "out", bogus)
    assert code == 1, "the verdict does not depend on the history"
    assert data["since_previous"] is None
    assert len(data["warnings"]) == 1 and "history not recorded" in data["warnings"][0]
    assert "history not recorded" in stderr
