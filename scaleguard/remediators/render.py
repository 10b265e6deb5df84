"""The plan as a person reviews it: one row per step, before → after, and the documented command.

The table is what a change-advisory board signs off, so every cell of a step row is computed from the
parameters that will run (:func:`~scaleguard.remediators.describe.describe`), never from stored text, and
the plan's SHA-256 and expiry head it. Then the findings left for a human with the reason and the
documented steps. Values from nodes are escaped: a host name or setting can never be read as rich markup.
"""

from __future__ import annotations

import io

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from scaleguard.apply.runner import ApplyReport
from scaleguard.apply.undo import UndoReport
from scaleguard.apply.verify import Verification
from scaleguard.remediators.describe import describe
from scaleguard.remediators.model import Plan
from scaleguard.safetext import terminal_safe


def _text(value: str, style: str = "") -> Text:
    """Node-controlled text as a Rich ``Text``: no markup is parsed, and control characters are escaped."""
    return Text(terminal_safe(value, multiline=True), style=style)


def plan_view(plan: Plan, sha256: str | None = None) -> RenderableType:
    parts: list[RenderableType] = []
    if sha256 is not None:
        parts.append(_text(f"plan SHA-256 {sha256}", style="bold"))
    parts.append(_text(f"valid until {plan.expires_at.isoformat(timespec='minutes')}", style="dim"))
    if plan.empty:
        if plan.manual:
            parts.append(
                _text(
                    f"Nothing scaleguard can fix automatically; {len(plan.manual)} finding(s) need a human (below).",
                    style="yellow",
                )
            )
        else:
            parts.append(_text("Nothing to fix: no failing finding needs a change.", style="green"))
    else:
        nodes = plan.nodes()
        parts.append(
            _text(
                f"Plan: {len(plan.steps)} step(s) in {len(plan.units)} unit(s) on {len(nodes)} node(s)",
                style="bold",
            )
        )
        table = Table(show_lines=False, expand=False, title_justify="left")
        table.add_column("step", no_wrap=True)
        table.add_column("unit", no_wrap=True)
        table.add_column("node", no_wrap=True)
        table.add_column("action", no_wrap=True)
        table.add_column("before → after")
        table.add_column("documented command", style="cyan")
        for step in plan.steps:
            text = describe(step)
            table.add_row(
                step.id,
                step.unit,
                _text(step.node),
                step.action,
                _text(f"{text.before}\n→ {text.after}"),
                _text(text.command),
            )
        parts.append(table)
        units = Table(title="units (each is rolled back as a whole if any of its steps fails)", title_justify="left")
        units.add_column("unit", no_wrap=True)
        units.add_column("remediation", no_wrap=True)
        units.add_column("what")
        units.add_column("fixes")
        units.add_column("after")
        for unit in plan.units:
            units.add_row(
                unit.id,
                unit.remediation,
                _text(unit.summary),
                _text(", ".join(unit.findings)),
                ", ".join(unit.depends_on),
            )
        parts.append(units)
    covered = [d for d in plan.dispositions if d.outcome in ("covered", "nothing_to_do")]
    if covered:
        table = Table(title="findings fixed by another unit or already fine", title_justify="left")
        table.add_column("finding")
        table.add_column("by")
        table.add_column("why")
        for d in covered:
            table.add_row(_text(d.finding), d.unit or "-", _text(d.note))
        parts.append(table)
    if plan.manual:
        table = Table(title="left for a human (no safe automatic fix)", title_justify="left")
        table.add_column("finding")
        table.add_column("why")
        table.add_column("documented steps")
        for item in plan.manual:
            table.add_row(
                _text(f"{item.policy}@{item.cluster}/{item.node}"),
                _text(item.reason),
                _text("\n".join(f"- {s}" for s in item.steps)),
            )
        parts.append(table)
    parts.extend(_text(f"warning: {warning}", style="yellow") for warning in plan.warnings)
    return Group(*parts)


UNIT_STYLES = {"done": "green", "rolled_back": "yellow", "skipped": "yellow", "failed": "red"}


def apply_view(report: ApplyReport) -> RenderableType:
    table = Table()
    table.add_column("unit")
    table.add_column("result")
    for unit, status in report.units.items():
        table.add_row(unit, _text(status, style=UNIT_STYLES.get(status, "bold red")))
    parts: list[RenderableType] = [_text(f"run {report.run_id}: {report.status}", style="bold"), table]
    failed = [s for s in report.steps.values() if s.status in ("failed", "unknown", "rollback_failed")]
    parts.extend(_text(f"{s.step} {s.node} {s.action}: {s.status}: {s.detail}", style="red") for s in failed)
    parts.extend(_text(error, style="bold red") for error in report.rollback_errors)
    return Group(*parts)


def verification_view(verification: Verification) -> RenderableType:
    table = Table()
    table.add_column("finding")
    table.add_column("now")
    for key in verification.fixed:
        table.add_row(_text(key), _text("fixed", style="green"))
    for key, status in verification.still_failing.items():
        table.add_row(_text(key), _text(f"still {status}", style="red"))
    for key, status in verification.new_problems.items():
        table.add_row(_text(key), _text(f"new: {status}", style="bold red"))
    return Group(_text("after the fix (re-collected and re-evaluated):", style="bold"), table)


def undo_view(report: UndoReport) -> RenderableType:
    lines = [
        _text(
            f"undo of {report.undo_of} (run {report.run_id}): {len(report.reverted)} action(s) reverted",
            style="bold",
        )
    ]
    lines += [_text(f"  reverted {r}") for r in report.reverted]
    lines += [_text(f"  note: {n}", style="dim") for n in report.notes]
    lines += [_text(f"  failed: {e}", style="red") for e in report.errors]
    if not report.reverted and not report.errors:
        lines.append(_text("  nothing left to undo", style="green"))
    return Group(*lines)


def plan_text(plan: Plan, sha256: str | None = None) -> str:
    """The readable plan (``plan.txt`` next to ``plan.json``): the review table as plain text."""
    console = Console(width=200, record=True, file=io.StringIO(), color_system=None, highlight=False)
    console.print(plan_view(plan, sha256), soft_wrap=False)
    return console.export_text()

