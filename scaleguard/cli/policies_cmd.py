"""``scaleguard policies list|validate|facts``: what will be checked, and whether a user pack is sound.

``validate`` is meant for CI on a policy repository: it loads the pack exactly as ``audit --policies``
would (with the built-in pack, so id clashes show up) and prints one ``file:line: reason`` per problem,
the shape editors and CI annotations understand. Problems go to stdout because they are the command's
result; the exit code (0 clean, 2 invalid) is what a pipeline branches on.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Annotated

import typer

from scaleguard.cli.groups import policies_app
from scaleguard.exitcodes import ExitCode
from scaleguard.policies.fact_schema import render
from scaleguard.policies.loader import BUILTIN_PREFIX, is_builtin_pack, load_all
from scaleguard.policies.model import Policy

PolicyDirs = Annotated[
    list[Path] | None,
    typer.Option("--policies", help="Directory of extra policy files (*.yaml); repeatable."),
]


@policies_app.command("list")
def list_policies(
    policies: PolicyDirs = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the policy summaries as JSON.")] = False,
) -> None:
    """List every policy an audit would evaluate: built-in pack plus --policies directories.

    Example: scaleguard policies list --policies my-policies/ --json
    """
    result = load_all(policies or [])
    if result.problems:
        for problem in result.problems:
            typer.echo(str(problem))
        raise typer.Exit(ExitCode.USAGE)
    if as_json:
        typer.echo(json.dumps([p.summary() for p in result.policies], indent=2))
        return
    for line in _table(result.policies):
        typer.echo(line)
    typer.echo(f"\n{len(result.policies)} policies")


@policies_app.command("validate")
def validate(
    directories: Annotated[
        list[Path], typer.Argument(help="Policy directories to check.", show_default=False)
    ],
) -> None:
    """Check policy files; prints file:line: reason per problem and exits 2 if there is any.

    Example: scaleguard policies validate my-policies/
    """
    result = load_all(directories)
    if result.problems:
        for problem in result.problems:
            typer.echo(str(problem))
        typer.echo(f"{len(result.problems)} problem(s) found", err=True)
        raise typer.Exit(ExitCode.USAGE)
    user = [p for p in result.policies if not p.source.startswith(BUILTIN_PREFIX)]
    where = ", ".join(str(d) for d in directories)
    if not user and all(is_builtin_pack(d) for d in directories):
        typer.echo(f"OK: {len(result.policies)} policies in the built-in pack ({where})")
        return
    typer.echo(f"OK: {len(user)} policies in {where} (with the built-in pack: {len(result.policies)})")


@policies_app.command("facts")
def facts() -> None:
    """Print the facts reference: every path a policy's CEL and `requires` can use.

    Example: scaleguard policies facts
    """
    for line in render():
        typer.echo(textwrap.fill(line, width=110, subsequent_indent="    "))


def _table(policies: list[Policy]) -> list[str]:
    rows = [("ID", "SEVERITY", "SCOPE", "REMEDIATION", "TITLE")]
    for p in policies:
        severity = p.severity.value + (" (graded)" if p.graded else "")
        title = p.title
        if len(p.modes) == 1:
            title += f" [{p.modes[0].value} only]"
        if not p.source.startswith(BUILTIN_PREFIX):
            title += f" ({p.source})"
        rows.append((p.id, severity, p.scope.value, p.remediation, title))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
