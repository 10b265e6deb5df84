"""``scaleguard audit``: flags in, :func:`scaleguard.pipeline.run_audit`, exit code out.

Exit codes are the pipeline's contract (docs/architecture.md, "Outputs and exit codes"): 0 clean at
``--fail-on``, 1 failing, 2 usage error, 3 incomplete. Everything a person should read goes to stderr (the
summary), so stdout stays free for whatever a CI job pipes. An unexpected crash is reported as 3 ("the
audit did not complete") rather than Python's default 1, which a pipeline would read as "findings failed"
— or worse, not at all.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from scaleguard.console import console as make_console
from scaleguard.exitcodes import ExitCode
from scaleguard.findings.model import Severity, Status
from scaleguard.pipeline import AuditOptions, AuditResult, run_audit
from scaleguard.policies.model import Thresholds
from scaleguard.reports.view import SEVERITY_ORDER, STATUS_ORDER, sorted_findings
from scaleguard.safetext import console_text

from .groups import app

TOP_FAILING = 10


class UsageError(Exception):
    """A problem with what the user asked for (exit 2), as opposed to a problem found in the cluster."""


@app.command("audit")
def audit(
    out: Annotated[Path, typer.Option("--out", help="Folder for the reports and artefacts.")],
    evidence: Annotated[
        Path | None, typer.Option("--evidence", help="Offline: an evidence folder (one sub-folder per node).")
    ] = None,
    inventory: Annotated[
        Path | None, typer.Option("--inventory", help="Live: an inventory YAML; nodes are read over WinRM.")
    ] = None,
    fail_on: Annotated[
        Severity, typer.Option("--fail-on", case_sensitive=False, help="Lowest severity of a failing finding "
                               "that makes the exit code 1.")
    ] = Severity.HIGH,
    allow_incomplete: Annotated[
        bool, typer.Option("--allow-incomplete", help="Do not exit 3 for unassessed nodes/checks.")
    ] = False,
    policies: Annotated[
        list[Path] | None, typer.Option("--policies", help="Extra policy pack folder (repeatable).")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Live: nodes read at once.")] = 8,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Live: skip WinRM TLS validation (reported).")
    ] = False,
    waivers: Annotated[Path | None, typer.Option("--waivers", help="Waiver file (YAML).")] = None,
    waiver_max_days: Annotated[
        int | None, typer.Option("--waiver-max-days", min=1, help="Longest a waiver may run (default: the "
                                 "file's max_days, else 90).")
    ] = None,
    history: Annotated[Path | None, typer.Option("--history", help="History database (SQLite).")] = None,
    warn_only: Annotated[
        bool, typer.Option("--warn-only", help="Always exit 0 (report only); usage errors still exit 2.")
    ] = False,
    notify_webhook: Annotated[
        str | None, typer.Option("--notify-webhook", help="POST a JSON summary to this http(s) URL (for programs).")
    ] = None,
    notify: Annotated[
        list[str] | None,
        typer.Option("--notify", metavar="URL", help="Send a short summary through Apprise (repeatable): "
                     "workflows:// (Teams), slack://, mailto://, json://... A failure is reported, the exit "
                     "code stays the audit's."),
    ] = None,
    report_url: Annotated[
        str | None, typer.Option("--report-url", metavar="URL", help="Where people open report.html; "
                                 "linked from notifications.")
    ] = None,
    expiry_high_days: Annotated[
        int, typer.Option("--expiry-high-days", min=0, help="A certificate this close to expiry is high.")
    ] = 30,
    expiry_medium_days: Annotated[
        int, typer.Option("--expiry-medium-days", min=0, help="A certificate this close to expiry is medium.")
    ] = 60,
    min_rsa_bits: Annotated[
        int, typer.Option("--min-rsa-bits", min=0, help="Smallest acceptable RSA key (SO-M10, SO-W12).")
    ] = 2048,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress on stderr (only shown on a terminal).")
    ] = True,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing when the exit code is 0 (cron mails only "
                           "on trouble); otherwise the usual summary. Implies --no-progress.")
    ] = False,
) -> None:
    """Audit a Scale Out cluster's certificate setup and write the reports.

    Example: scaleguard audit --inventory inventory.yaml --out reports/tonight --notify slack://T/B/C/#ops
    """
    console = make_console(soft_wrap=True)  # CI logs: never cut a path in two
    try:
        options = AuditOptions(
            out_dir=out, evidence=evidence, inventory=inventory, policy_dirs=tuple(policies or []), fail_on=fail_on,
            allow_incomplete=allow_incomplete, warn_only=warn_only, concurrency=concurrency, insecure=insecure,
            waivers=waivers, waiver_max_days=waiver_max_days, history=history, notify_webhook=notify_webhook,
            thresholds=_thresholds(expiry_high_days, expiry_medium_days, min_rsa_bits),
            progress=progress and not quiet, notify=tuple(notify or []), report_url=report_url,
        )
        _check(options)
        from scaleguard.collectors.evidence import cluster_folders

        try:
            clusters = cluster_folders(options.evidence) if options.evidence is not None else None
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if clusters is not None:
            raise typer.Exit(int(_audit_each(options, clusters, console, quiet=quiet)))
        result = _run(options, console)
    except UsageError as exc:
        _usage_exit(console, str(exc))
    if not (quiet and result.exit_code is ExitCode.OK):
        _print_summary(console, result, options)
    else:
        _print_notify_failures(console, result)  # trouble even on a clean run: the alert did not go out
    raise typer.Exit(int(result.exit_code))


def _audit_each(options: AuditOptions, clusters: list[Path], console: Console, *, quiet: bool) -> ExitCode:
    """An evidence folder of cluster folders: one audit per cluster into ``--out/<cluster>``, then
    ``--out/index.html``; the exit code is the worst of theirs (incomplete > failing > clean)."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from scaleguard.reports.index import ClusterEntry, combined_exit, write_index

    entries = []
    for folder in clusters:
        sub = replace(options, evidence=folder, out_dir=options.out_dir / folder.name)
        result = _run(sub, console)
        if not (quiet and result.exit_code is ExitCode.OK):
            _print_summary(console, result, sub)
        else:
            _print_notify_failures(console, result)
        statuses = [f.status for f in result.findings.findings]
        entries.append(ClusterEntry(
            name=", ".join(c.cluster for c in result.snapshot.clusters) or folder.name,
            exit_code=result.exit_code, failing=statuses.count(Status.FAIL), errors=statuses.count(Status.ERROR),
            not_assessed=statuses.count(Status.NOT_ASSESSED),
            nodes=sum(len(c.nodes) for c in result.snapshot.clusters), report=sub.out_dir / "report.html",
        ))
    overall = combined_exit([e.exit_code for e in entries])
    index = write_index(options.out_dir, entries, generated_at=options.now or datetime.now(UTC))
    if not (quiet and overall is ExitCode.OK):
        console.print(f"Index of {len(entries)} clusters: {console_text(str(index.resolve()))}")
        console.print(f"Exit {int(overall)}: the worst of the clusters' exit codes.")
    return overall


def _check(options: AuditOptions) -> None:
    """Refuse what cannot work before a long live collection starts."""
    if (options.evidence is None) == (options.inventory is None):
        raise UsageError("give exactly one of --evidence DIR (offline) or --inventory FILE (live)")
    if options.evidence is not None and not options.evidence.is_dir():
        raise UsageError(f"--evidence {options.evidence}: no such folder")
    if options.inventory is not None:
        _readable_file(options.inventory, "--inventory")
    for folder in options.policy_dirs:
        if not folder.exists():
            raise UsageError(f"--policies {folder}: no such folder")
    if options.waivers is not None:
        _readable_file(options.waivers, "--waivers")
        _check_waivers(options.waivers, options.waiver_max_days)
    if options.out_dir.exists() and not options.out_dir.is_dir():
        raise UsageError(f"--out {options.out_dir}: exists and is not a folder")
    if options.notify_webhook is not None and not options.notify_webhook.startswith(("https://", "http://")):
        from scaleguard.notify import redact_url  # a webhook URL may carry a token: never echo it

        raise UsageError(f"--notify-webhook {redact_url(options.notify_webhook)}: expected an http(s):// URL")
    if options.notify:
        from scaleguard.alerts import check_urls  # refused before a long audit, naming only the scheme

        problems = check_urls(list(options.notify))
        if problems:
            raise UsageError("; ".join(problems))


def _thresholds(high_days: int, medium_days: int, min_rsa_bits: int) -> Thresholds:
    try:
        return Thresholds(expiry_high_days=high_days, expiry_medium_days=medium_days, min_rsa_bits=min_rsa_bits)
    except ValueError as exc:
        raise UsageError(f"--expiry-high-days {high_days} / --expiry-medium-days {medium_days}: {exc}") from exc


def _check_waivers(path: Path, max_days: int | None) -> None:
    """Refuse a bad waiver file before a long live collection, not after it (the audit re-reads it)."""
    from datetime import UTC, datetime

    from scaleguard.findings.waivers import WaiverError, load_waivers

    try:
        load_waivers(path, today=datetime.now(UTC).date(), max_days=max_days)
    except WaiverError as exc:
        raise UsageError(str(exc)) from exc


def _readable_file(path: Path, flag: str) -> None:
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot be read ({exc.strerror or exc})") from exc


def _usage_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean "what you gave me is wrong": a policy pack, a waiver file, an inventory.

    Imported here, not at the top, so ``scaleguard --help`` does not pay for CEL and YAML.
    """
    from scaleguard.findings.waivers import WaiverError
    from scaleguard.policies.loader import PolicyError
    from scaleguard.remoting.errors import InventoryError

    return (PolicyError, WaiverError, InventoryError)


def _run(options: AuditOptions, console: Console) -> AuditResult:
    usage_errors = _usage_errors()
    status = console.status("collecting…") if console.is_terminal and options.progress else None
    try:
        if status is not None:
            status.start()
        return run_audit(options, on_stage=lambda stage: status.update(f"{stage}…") if status else None)
    except usage_errors as exc:
        raise UsageError(str(exc)) from exc
    except Exception as exc:  # shown in full and turned into exit 3, never swallowed
        console.print("[bold red]scaleguard audit: internal error[/] – the audit did not complete:")
        console.print(console_text("".join(traceback.format_exception(exc)), multiline=True))
        raise typer.Exit(int(ExitCode.INCOMPLETE)) from exc
    finally:
        if status is not None:
            status.stop()


def _usage_exit(console: Console, message: str) -> NoReturn:
    console.print(f"[bold red]scaleguard audit: error:[/] {console_text(message, multiline=True)}")
    console.print("Try 'scaleguard audit --help'.")
    raise typer.Exit(int(ExitCode.USAGE))


_STATUS_STYLE = {
    Status.ERROR: "magenta", Status.FAIL: "red", Status.NOT_ASSESSED: "yellow", Status.WAIVED: "dim",
    Status.PASS: "green",
}
_SEVERITY_STYLE = {
    Severity.CRITICAL: "bold red", Severity.HIGH: "red", Severity.MEDIUM: "yellow", Severity.LOW: "cyan",
    Severity.INFO: "dim",
}


def _print_summary(console: Console, result: AuditResult, options: AuditOptions) -> None:
    findings = result.findings.findings
    clusters = ", ".join(c.cluster for c in result.snapshot.clusters)
    nodes = sum(len(c.nodes) for c in result.snapshot.clusters)
    console.print(f"[bold]scaleguard audit[/] {console_text(clusters)}: {nodes} nodes, {len(findings)} findings")
    by_status = {s: sum(1 for f in findings if f.status is s) for s in STATUS_ORDER}
    console.print("  status:   " + " · ".join(
        f"[{_STATUS_STYLE[s]}]{s.value.replace('_', ' ')} {n}[/]" for s, n in by_status.items()))
    failing = [f for f in findings if f.status is Status.FAIL]
    by_severity = {s: sum(1 for f in failing if f.severity is s) for s in SEVERITY_ORDER}
    console.print("  failing:  " + " · ".join(
        f"[{_SEVERITY_STYLE[s]}]{s.value} {n}[/]" for s, n in by_severity.items()))
    if result.findings.insecure:
        console.print("  [bold red]TLS certificates of the nodes were NOT validated (--insecure)[/]")
    if result.findings.unencrypted_nodes:
        names = console_text(", ".join(result.findings.unencrypted_nodes))
        console.print(f"  [bold red]WinRM traffic was NOT encrypted on the network (allow_unencrypted): {names}[/]")
    problems = [f for f in sorted_findings(findings) if f.status in (Status.ERROR, Status.FAIL)]
    if problems:
        console.print("Top problems:")
        for f in problems[:TOP_FAILING]:
            console.print(
                f"  [{_SEVERITY_STYLE[f.severity]}]{f.severity.value:<8}[/] [{_STATUS_STYLE[f.status]}]"
                f"{f.status.value:<5}[/] {console_text(f.policy)} {console_text(f.node)}: {console_text(f.message)}"
            )
        if len(problems) > TOP_FAILING:
            console.print(f"  … and {len(problems) - TOP_FAILING} more")
    report = result.outputs.get("report.html")
    if report is not None:
        console.print(f"Report: {console_text(str(report.resolve()))}")
    _print_notify_failures(console, result)
    console.print(_verdict(result.exit_code, options, by_status), highlight=False)


def _print_notify_failures(console: Console, result: AuditResult) -> None:
    for line in result.notify_failures:
        console.print(f"[yellow]Notify:[/] {console_text(line)} (the exit code is unchanged)")


def _verdict(code: ExitCode, options: AuditOptions, by_status: dict[Status, int]) -> str:
    if options.warn_only:
        return "Exit 0 (--warn-only)."
    if code is ExitCode.INCOMPLETE:
        return (f"Exit 3: the audit is incomplete ({by_status[Status.ERROR]} errors, "
                f"{by_status[Status.NOT_ASSESSED]} not assessed); --allow-incomplete gates on failures only.")
    if code is ExitCode.FAILING:
        return f"Exit 1: failing findings at or above {options.fail_on.value}."
    return f"Exit 0: nothing failing at or above {options.fail_on.value}."
