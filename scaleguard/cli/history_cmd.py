"""``scaleguard history``: the recorded audit runs and whether things are getting better.

Each run shows its counts by status and the change in *failing* findings (fail + error) against the
previous run of the same clusters, because that is the number a nightly job is judged by; the trend
line per scope makes a slow drift (one more worker a week losing its trust) visible at a glance.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from scaleguard.cli.groups import app
from scaleguard.console import console as make_console
from scaleguard.exitcodes import ExitCode
from scaleguard.history.store import HistoryStore, RunRecord, history_path
from scaleguard.safetext import console_text, terminal_safe

_SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[int]) -> str:
    if not values:
        return ""
    top = max(values)
    if top == 0:
        return _SPARKS[0] * len(values)
    return "".join(_SPARKS[min(len(_SPARKS) - 1, round(v / top * (len(_SPARKS) - 1)))] for v in values)


def deltas(runs: list[RunRecord]) -> dict[int, int | None]:
    """Run id → change in failing findings since the previous run of the same scope (None for the first)."""
    last: dict[str, int] = {}
    out: dict[int, int | None] = {}
    for run in runs:
        before = last.get(run.scope)
        out[run.id] = None if before is None else run.problems - before
        last[run.scope] = run.problems
    return out


def trend_line(scope: str, runs: list[RunRecord]) -> str:
    values = [r.problems for r in runs]
    first, last = values[0], values[-1]
    if len(values) == 1:
        verdict = "first run"
    elif last < first:
        verdict = "improving"
    elif last > first:
        verdict = "worsening"
    else:
        verdict = "flat"
    return f"{scope}: failing {first} → {last} over {len(values)} run(s) {sparkline(values)} ({verdict})"


@app.command("history")
def history(
    history_file: Annotated[
        Path | None,
        typer.Option("--history", help="History file (default: the user data dir, or $SCALEGUARD_HISTORY)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show the last N runs.")] = 30,
    scope: Annotated[str | None, typer.Option(help="Only runs of this cluster set (as listed).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
) -> None:
    """List recorded audit runs (time, source, counts by status, failing delta) and the trend.

    Example: scaleguard history --limit 14
    """
    path = history_path(history_file)
    if path is None:
        typer.echo("history is turned off (--history off or $SCALEGUARD_HISTORY=off)", err=True)
        raise typer.Exit(int(ExitCode.USAGE))
    try:
        every = HistoryStore(path).runs(scope=scope.casefold() if scope else None)
    except (sqlite3.DatabaseError, ValueError) as exc:
        typer.echo(f"scaleguard: {path}: not a scaleguard history file: {exc}", err=True)
        raise typer.Exit(int(ExitCode.USAGE)) from None
    if not every:
        typer.echo(f"no audit runs recorded in {path}")
        return
    change = deltas(every)  # over all runs, so the first run shown still has its delta
    runs = every[-limit:]
    if as_json:
        typer.echo(json.dumps([_as_json(r, change[r.id]) for r in runs], indent=1))
        return
    # piped into a file or a mail, rows must not wrap at rich's 80-column default
    console = make_console(stderr=False, highlight=True, width=None if sys.stdout.isatty() else 200)
    table = Table(title=f"Audit runs in {path}", title_justify="left")
    for column in (
        "run",
        "time (UTC)",
        "scope",
        "source",
        "pass",
        "fail",
        "error",
        "n/a",
        "waived",
        "failing",
        "Δ",
        "new",
        "resolved",
        "exit",
    ):
        table.add_column(
            column, justify="right" if column not in ("time (UTC)", "scope", "source") else "left"
        )
    for r in runs:
        delta = change[r.id]
        table.add_row(
            str(r.id),
            r.generated_at.strftime("%Y-%m-%d %H:%M"),
            console_text(r.scope),
            console_text(r.source),
            *(str(r.counts.get(s, 0)) for s in ("pass", "fail", "error", "not_assessed", "waived")),
            str(r.problems),
            "" if delta is None else f"{delta:+d}",
            _opt(r.new_problems),
            _opt(r.resolved_problems),
            _opt(r.exit_code),
        )
    console.print(table)
    by_scope: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_scope.setdefault(r.scope, []).append(r)
    console.print("Trend (failing = fail + error):")
    for name, scoped in by_scope.items():
        console.print("  " + terminal_safe(trend_line(name, scoped)), markup=False, highlight=False)


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def _as_json(r: RunRecord, delta: int | None) -> dict[str, object]:
    return {
        "run": r.id,
        "generated_at": r.generated_at.isoformat(),
        "scope": r.scope,
        "source": r.source,
        "mode": r.mode,
        "counts": r.counts,
        "failing": r.problems,
        "failing_delta": delta,
        "new": r.new_problems,
        "resolved": r.resolved_problems,
        "exit_code": r.exit_code,
    }
