"""--notify: the audit's human summary through Apprise. JSON and form posts reach a loopback listener; the
Slack and Teams (Power Automate workflow) requests Apprise builds are captured before they leave."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from typer.testing import CliRunner

from scaleguard.alerts import Message, send
from scaleguard.cli.main import app
from scaleguard.lab.scenario import Scenario, demo_scenario

runner = CliRunner()
REPORT_URL = "https://reports.contoso.example/scaleguard/2026-05-01/report.html"


class Listener:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200


@pytest.fixture
def listener() -> Iterator[tuple[Listener, str]]:
    state = Listener()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _audit(evidence: Path, out: Path, history: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(
        app, ["audit", "--evidence", str(evidence), "--out", str(out), "--history", str(history), *extra]
    )
    return result.exit_code, result.stderr


def test_the_summary_reaches_json_and_form_services(listener: tuple[Listener, str], tmp_path: Path) -> None:
    state, host = listener
    evidence = demo_scenario(defects=True).write(tmp_path / "CONTOSO-SSIS")
    code, err = _audit(
        evidence, tmp_path / "out", tmp_path / "h.sqlite",
        "--notify", f"json://{host}/hooks/json", "--notify", f"form://{host}/hooks/form", "--report-url", REPORT_URL,
    )
    assert code == 1, err
    assert "Notify:" not in err
    by_path = {r["path"]: r for r in state.requests}
    body = json.loads(by_path["/hooks/json"]["body"])
    assert body["title"] == "scaleguard CONTOSO-SSIS: FAILING"
    assert body["type"] == "failure"
    message = body["message"]
    assert "Verdict: FAILING (exit 1), offline audit of 4 nodes" in message
    assert "Findings: 5 fail, 0 error, 1 not assessed, 0 waived, 50 pass" in message
    assert "Since the previous run: nothing to compare" in message
    worst = [line for line in message.splitlines() if line.startswith("- ")]
    assert len(worst) == 3 and all(" critical fail " in f" {line} " or " high fail " in line for line in worst)
    assert worst[0].startswith("- critical fail SO-W0")
    assert f"Report: {REPORT_URL}" in message
    form = parse_qs(by_path["/hooks/form"]["body"].decode())
    assert form["title"] == [body["title"]] and form["message"] == [message]


def test_what_is_new_since_the_previous_run_comes_from_the_history(
    listener: tuple[Listener, str], tmp_path: Path
) -> None:
    state, host = listener
    history = tmp_path / "h.sqlite"
    scenario: Scenario = demo_scenario(defects=True)  # one scenario: the same certificates both nights
    _audit(scenario.write(tmp_path / "n1" / "CONTOSO-SSIS"), tmp_path / "o1", history)
    master = next(n for n in scenario.nodes if n.name == "MASTER01")
    master.services = []  # the master service is gone tonight: SO-M09 is new
    evidence = scenario.write(tmp_path / "n2" / "CONTOSO-SSIS")
    _audit(evidence, tmp_path / "o2", history, "--notify", f"json://{host}/n")
    message = json.loads(state.requests[-1]["body"])["message"]
    since = next(line for line in message.splitlines() if line.startswith("Since the previous run ("))
    assert since.endswith(": 1 new, 0 resolved (new: SO-M09 MASTER01)"), since


def test_a_failed_notification_is_in_the_exit_summary_and_keeps_the_exit_code(
    listener: tuple[Listener, str], tmp_path: Path
) -> None:
    state, host = listener
    state.status = 500
    evidence = demo_scenario(2, defects=False).write(tmp_path / "CONTOSO-SSIS")
    code, err = _audit(
        evidence, tmp_path / "out", tmp_path / "h.sqlite", "--quiet",
        "--notify", f"json://hook:s3cretpw@{host}/x", "--notify", f"form://{host}/ok",
    )
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("Notify:")]
    assert len(lines) == 2 and all("json://hook" in line or "form://" in line for line in lines)
    assert "s3cretpw" not in err
    assert all("(the exit code is unchanged)" in line for line in lines)


def test_an_unknown_notify_url_is_a_usage_error_naming_only_its_scheme(tmp_path: Path) -> None:
    evidence = demo_scenario(2, defects=False).write(tmp_path / "CONTOSO-SSIS")
    code, err = _audit(evidence, tmp_path / "out", tmp_path / "h.sqlite", "--notify", "nosuch://tok3n@x/y")
    assert code == 2
    assert "nosuch://" in err and "tok3n" not in err
    assert not (tmp_path / "out" / "report.html").exists()  # refused before the audit ran


class _Captured:
    status_code = 200
    content = b"ok"
    text = "ok"
    headers: dict[str, str] = {}

    def json(self) -> dict[str, Any]:
        return {"ok": True}


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every HTTP request Apprise makes, recorded instead of sent (no network in tests)."""
    seen: list[dict[str, Any]] = []

    def request(self: requests.Session, method: str, url: str, **kwargs: Any) -> _Captured:
        data = kwargs.get("data")
        seen.append({"method": method, "url": url, "params": kwargs.get("params"),
                     "json": json.loads(data) if isinstance(data, str | bytes) else kwargs.get("json")})
        return _Captured()

    monkeypatch.setattr(requests.sessions.Session, "request", request)
    return seen


MESSAGE = Message(
    title="scaleguard CONTOSO-SSIS: FAILING",
    body="Verdict: FAILING (exit 1)\n- critical fail SO-W02 WORKER02: subject CN=<a href=x>&evil\n"
    f"Report: {REPORT_URL}",
    notify_type="failure",
)


def test_slack_gets_an_attachment_with_escaped_text(captured: list[dict[str, Any]]) -> None:
    assert send(["slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops"], MESSAGE) == []
    (request,) = captured
    assert request["method"].upper() == "POST"
    assert request["url"] == "https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    payload = request["json"]
    assert payload["channel"] == "#ops"
    (attachment,) = payload["attachments"]
    assert attachment["title"] == MESSAGE.title
    assert "critical fail SO-W02 WORKER02" in attachment["text"]
    assert "&lt;a href=x&gt;&amp;evil" in attachment["text"]  # node text stays text in Slack
    assert REPORT_URL in attachment["text"]


def test_teams_workflow_gets_an_adaptive_card(captured: list[dict[str, Any]]) -> None:
    assert send(["workflows://prod-01.westeurope.logic.azure.com:443/4d2a1f0e9c/sigAbC123"], MESSAGE) == []
    (request,) = captured
    assert request["url"].startswith("https://prod-01.westeurope.logic.azure.com:443/workflows/4d2a1f0e9c/")
    assert request["params"]["sig"] == "sigAbC123"
    (attachment,) = request["json"]["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    blocks = {b.get("id"): b for b in attachment["content"]["body"] if b["type"] == "TextBlock"}
    assert blocks["title"]["text"] == MESSAGE.title
    body = blocks["body"]["text"]
    assert "SO\\-W02 WORKER02" in body  # Apprise escapes markdown, so node text renders literally
    assert "https://reports" in body
