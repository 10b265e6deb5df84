"""``--notify URL``: a short human summary of a finished audit, sent through Apprise to chat, mail or paging.

Apprise speaks to Teams (Power Automate ``workflows://``), Slack, mail (``mailto://``), Discord, PagerDuty,
plain JSON or form posts and dozens more with one URL syntax, and renders the same text into each
service's format (an Adaptive Card for Teams, Slack's escaped text, HTML for mail). The JSON body of
``--notify-webhook`` (:mod:`scaleguard.notify`) stays for programs.

What the message holds: the verdict, the counts, what is new or resolved since the previous run (from the
history), the three worst problems and, with ``--report-url``, a link to the report. It is sent as plain
text, so a node-controlled string (a certificate subject in a finding's message) cannot become a link or
markup in any service: Apprise escapes text for the services that render markup.

Failures never change the exit code (the verdict is the report; the notification is a courtesy). Each
URL is sent on its own, so one broken service does not hide the others, and what failed is returned as a
line for the audit's exit summary, naming the service by Apprise's privacy URL (tokens and passwords
masked) and the reason Apprise logged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from scaleguard.exitcodes import ExitCode
from scaleguard.findings.model import Finding, FindingsFile, Status
from scaleguard.reports.view import sorted_findings
from scaleguard.snapshot.model import Snapshot

WORST = 3
MESSAGE_CHARS = 200
"""A finding's message is cut here: chat previews are short, and the report has the whole text."""
VERDICTS = {
    ExitCode.OK: "PASS",
    ExitCode.FAILING: "FAILING",
    ExitCode.USAGE: "USAGE ERROR",
    ExitCode.INCOMPLETE: "INCOMPLETE",
}


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    notify_type: str
    """Apprise's ``success`` / ``warning`` / ``failure``: the colour or icon a service shows."""


def summary_message(
    ff: FindingsFile, snapshot: Snapshot, exit_code: ExitCode, *, report_url: str | None = None
) -> Message:
    clusters = ", ".join(c.cluster for c in snapshot.clusters) or ff.source
    verdict = VERDICTS.get(exit_code, str(int(exit_code)))
    counts = Counter(f.status for f in ff.findings)
    lines = [
        f"Verdict: {verdict} (exit {int(exit_code)}), {ff.mode} audit of "
        f"{sum(len(c.nodes) for c in snapshot.clusters)} nodes",
        "Findings: " + ", ".join(
            f"{counts.get(s, 0)} {s.value.replace('_', ' ')}"
            for s in (Status.FAIL, Status.ERROR, Status.NOT_ASSESSED, Status.WAIVED, Status.PASS)
        ),
        _since_previous(ff),
    ]
    worst = [f for f in sorted_findings(ff.findings) if f.status in (Status.FAIL, Status.ERROR)][:WORST]
    if worst:
        lines.append("Worst:")
        lines += [_finding_line(f) for f in worst]
    if report_url:
        lines.append(f"Report: {report_url}")
    kind = {ExitCode.OK: "success", ExitCode.FAILING: "failure"}.get(exit_code, "warning")
    return Message(title=f"scaleguard {clusters}: {verdict}", body="\n".join(lines), notify_type=kind)


def _since_previous(ff: FindingsFile) -> str:
    since = ff.since_previous
    if since is None or since.previous_run is None:
        return "Since the previous run: nothing to compare (first run, or no history)"
    new, resolved = since.new, since.resolved
    when = (since.previous_at or "")[:16].replace("T", " ")
    text = f"Since the previous run ({when} UTC): {len(new)} new, {len(resolved)} resolved"
    if new:
        text += " (new: " + ", ".join(f"{e.get('policy')} {e.get('node')}" for e in new[:5])
        text += ", ..." if len(new) > 5 else ""
        text += ")"
    return text


def _finding_line(f: Finding) -> str:
    message = " ".join(f.message.split())
    if len(message) > MESSAGE_CHARS:
        message = message[: MESSAGE_CHARS - 1] + "…"
    return f"- {f.severity.value} {f.status.value} {f.policy} {f.node}: {message}"


@dataclass(frozen=True)
class Failure:
    service: str
    """Apprise's privacy URL (secrets masked), or just the scheme when Apprise could not read the URL."""
    reason: str

    def line(self) -> str:
        return f"notification to {self.service} failed: {self.reason}"


def check_urls(urls: list[str]) -> list[str]:
    """Problems with ``urls`` before a long audit starts (a usage error), each naming only the scheme."""
    import apprise

    problems = []
    for i, url in enumerate(urls, 1):
        if apprise.Apprise.instantiate(url, asset=_asset()) is None:
            problems.append(f"--notify #{i} ({_scheme(url)}): not a URL Apprise understands")
    return problems


def send(urls: list[str], message: Message) -> list[Failure]:
    """Send ``message`` to every URL, each on its own; returns what failed (empty when all went out)."""
    import apprise

    failures: list[Failure] = []
    for url in urls:
        service = apprise.Apprise(asset=_asset())
        if not service.add(url):
            failures.append(Failure(_scheme(url), "not a URL Apprise understands"))
            continue
        outcome: Any = service.notify(
            body=message.body, title=message.title, notify_type=message.notify_type,
            body_format=apprise.NotifyFormat.TEXT,
        )
        if outcome:
            continue
        for result in getattr(outcome, "results", ()) or [None]:
            if result is not None and result:
                continue
            name = str(result.url) if result is not None else _scheme(url)
            reasons = [str(entry.message) for entry in result.logs()] if result is not None else []
            failures.append(Failure(name, "; ".join(reasons) or "the service did not accept it"))
    return failures


def _asset() -> Any:
    import apprise

    return apprise.AppriseAsset(
        app_id="scaleguard",
        app_desc="SSIS Scale Out certificate audit",
        app_url="https://learn.microsoft.com/sql/integration-services/scale-out/deal-with-certificates-in-ssis-scale-out",
        storage_mode="memory",  # no cache files in the user's home
    )


def _scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return f"{head}://" if sep and head.isascii() and head.replace("+", "").isalnum() else "an unreadable URL"
