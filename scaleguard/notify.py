"""``--notify-webhook URL``: a short JSON summary of a finished audit, POSTed for chat or on-call tools.

Constraints, on purpose:

- stdlib ``urllib`` only, a timeout on every request, ``http``/``https`` only (``file://`` and other
  urllib schemes are refused);
- the payload is counts, the exit code, where the report is and what changed since the previous run —
  never evidence, never configuration values, never credentials;
- a webhook URL may carry its own credentials (``https://user:token@hooks.example/...``): they are sent
  as an ``Authorization: Basic`` header, never echoed, and every message about the webhook shows the
  URL with them removed;
- a webhook that fails does not change the audit's exit code: the audit's verdict is the report, the
  webhook is a courtesy, so a failure is a warning on stderr.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from scaleguard.exitcodes import ExitCode
from scaleguard.findings.model import FindingsFile

DEFAULT_TIMEOUT = 10.0
_MEANING = {
    ExitCode.OK: "nothing failing at or above the threshold",
    ExitCode.FAILING: "failing findings at or above the threshold",
    ExitCode.USAGE: "usage error",
    ExitCode.INCOMPLETE: "the audit is incomplete",
}


class WebhookError(RuntimeError):
    """The webhook could not be delivered; the message never contains the URL's credentials."""


def redact_url(url: str) -> str:
    """``url`` without user/password (and without the query, where tokens often live)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def summary_payload(
    ff: FindingsFile, exit_code: ExitCode, report: Path | None, *, report_url: str | None = None
) -> dict[str, Any]:
    """The JSON body; ``report`` is the local path, ``report_url`` where people open it (``--report-url``)."""
    counts = Counter(f.status.value for f in ff.findings)
    since = ff.since_previous if ff.since_previous is not None and ff.since_previous.previous_run is not None else None
    causes = ff.causes or []
    return {
        "tool": "scaleguard",
        "event": "audit.finished",
        "generated_at": ff.generated_at.isoformat(),
        "source": ff.source,
        "mode": ff.mode,
        "exit_code": int(exit_code),
        "exit_meaning": _MEANING.get(exit_code, ""),
        "counts": {s: counts.get(s, 0) for s in ("fail", "error", "not_assessed", "waived", "pass")},
        "failing": counts.get("fail", 0) + counts.get("error", 0),
        "new": len(since.new) if since else None,
        "resolved": len(since.resolved) if since else None,
        "persisting": since.persisting if since else None,
        "causes": len(causes),
        "top_causes": [c.title for c in causes[:3]],
        "waivers_expired": len(ff.waivers.expired) if ff.waivers else 0,
        "waivers_stale": len(ff.waivers.stale) if ff.waivers else 0,
        "report": str(report.resolve()) if report else None,
        "report_url": report_url,
    }


def post_json(url: str, payload: dict[str, Any], *, timeout: float = DEFAULT_TIMEOUT) -> int:
    """POST ``payload``; returns the HTTP status, raises :class:`WebhookError` (credential-free) otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"webhook URL must be http(s)://host/...: {redact_url(url)!r}")
    headers = {"Content-Type": "application/json", "User-Agent": "scaleguard-notify"}
    if parts.username is not None:
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    body = json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(clean, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"webhook {redact_url(url)} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WebhookError(f"webhook {redact_url(url)} unreachable: {reason}") from None
