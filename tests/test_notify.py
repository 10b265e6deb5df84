"""The webhook: a short JSON summary, POSTed to a local server; credentials never leak into messages."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scaleguard.exitcodes import ExitCode
from scaleguard.findings.model import (
    CauseSummary,
    Finding,
    FindingsFile,
    Severity,
    SincePrevious,
    Status,
    WaiverSummary,
)
from scaleguard.notify import WebhookError, post_json, redact_url, summary_payload

NOW = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)


class Receiver:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 204
        self.delay = 0.0


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            if state.delay:
                threading.Event().wait(state.delay)
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def result(tmp_path: Path) -> tuple[FindingsFile, ExitCode, Path]:
    findings = [
        Finding(
            policy="SO-W02",
            cluster="prod",
            node="WRK01",
            status=Status.FAIL,
            severity=Severity.CRITICAL,
            message="secret-looking evidence",
            evidence={"config": "password=hunter2"},
        ),
        Finding(
            policy="SO-C01",
            cluster="prod",
            node="WRK02",
            status=Status.ERROR,
            severity=Severity.CRITICAL,
            message="m",
        ),
        Finding(
            policy="SO-W03",
            cluster="prod",
            node="WRK01",
            status=Status.PASS,
            severity=Severity.CRITICAL,
            message="m",
        ),
    ]
    ff = FindingsFile(
        generated_at=NOW,
        source="ev/prod",
        findings=findings,
        since_previous=SincePrevious(
            previous_run=3,
            previous_at=None,
            new=[{"policy": "SO-W02"}],
            resolved=[{}, {}],
            persisting=1,
            run=4,
            scope="prod",
            history_file="h.sqlite",
        ),
        causes=[
            CauseSummary(
                id="c-1", kind="master-certificate", title="Master certificate replaced", fix="repin",
                cluster="prod", severity="critical", nodes=["WRK01"], symptoms=[], count=1,
            )
        ],
        waivers=WaiverSummary(file="w.yaml", max_days=90, applied=0, active=0, expired=[{}], stale=[]),
    )
    report = tmp_path / "report.html"
    report.write_text("<html></html>")
    return ff, ExitCode.INCOMPLETE, report


def test_summary_is_posted_as_json(receiver: tuple[Receiver, str], tmp_path: Path) -> None:
    state, url = receiver
    assert post_json(f"{url}/hooks/nightly?channel=ops", summary_payload(*result(tmp_path))) == 204
    (request,) = state.requests
    assert request["path"] == "/hooks/nightly?channel=ops"
    assert request["headers"]["Content-Type"] == "application/json"
    body = json.loads(request["body"])
    assert body["exit_code"] == 3 and body["exit_meaning"] == "the audit is incomplete"
    assert body["counts"] == {"fail": 1, "error": 1, "not_assessed": 0, "waived": 0, "pass": 1}
    assert body["failing"] == 2
    assert (body["new"], body["resolved"], body["persisting"]) == (1, 2, 1)
    assert body["report"] == str((tmp_path / "report.html").resolve())
    assert body["top_causes"] == ["Master certificate replaced"] and body["waivers_expired"] == 1
    assert b"hunter2" not in request["body"]  # evidence never travels


def test_url_credentials_become_a_header_and_never_appear_in_messages(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    state, url = receiver
    with_creds = url.replace("http://", "http://hook%40user:s3cr%3At@") + "/x?token=abc"
    assert post_json(with_creds, {"a": 1}) == 204
    assert (
        state.requests[0]["headers"]["Authorization"]
        == "Basic " + base64.b64encode(b"hook@user:s3cr:t").decode()
    )
    state.status = 500
    with pytest.raises(WebhookError) as refused:
        post_json(with_creds, summary_payload(*result(tmp_path)))
    err = str(refused.value)
    assert "answered HTTP 500" in err
    assert "s3cr" not in err and "hook@user" not in err and "hook%40user" not in err and "token" not in err
    assert redact_url(with_creds) == url + "/x"


def test_timeout_and_unreachable_are_webhook_errors_not_crashes(
    receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    state, url = receiver
    state.delay = 0.4
    with pytest.raises(WebhookError, match="unreachable"):
        post_json(url, {"a": 1}, timeout=0.1)
    with pytest.raises(WebhookError, match="unreachable"):
        post_json("http://127.0.0.1:9/nothing-listens", summary_payload(*result(tmp_path)), timeout=1)


@pytest.mark.parametrize("bad", ["file:///etc/passwd", "ftp://host/x", "not a url"])
def test_only_http_urls_are_accepted(bad: str) -> None:
    with pytest.raises(WebhookError, match="must be http"):
        post_json(bad, {})


def test_payload_without_history_says_unknown_not_zero(tmp_path: Path) -> None:
    ff, code, report = result(tmp_path)
    ff.since_previous = ff.causes = None
    payload = summary_payload(ff, code, report)
    assert payload["new"] is None and payload["resolved"] is None and payload["causes"] == 0
