"""``scaleguard collect``: every inventory node over WinRM into ``snapshot.json`` (no evaluation yet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scaleguard.console import console as make_console
from scaleguard.exitcodes import ExitCode
from scaleguard.remoting.errors import InventoryError
from scaleguard.safetext import console_text

from .groups import app


@app.command("collect")
def collect(
    inventory: Annotated[
        Path, typer.Option("--inventory", help="Inventory YAML: clusters, nodes, transport.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for snapshot.json.")],
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Nodes read at once.")] = 8,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="Skip TLS validation of the WinRM endpoints (recorded and reported)."
        ),
    ] = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")
    ] = True,
) -> None:
    """Collect the raw facts of every node (one agent run per node) into a snapshot for `audit`.

    Example: scaleguard collect --inventory inventory.yaml --out collected/
    """
    from scaleguard.collectors.live import collect_inventory, summarize  # WinRM stack: only when collecting

    console = make_console()
    try:
        snapshot = collect_inventory(inventory, concurrency=concurrency, insecure=insecure, progress=progress)
    except InventoryError as exc:
        console.print(f"[bold red]scaleguard collect: error:[/] {console_text(str(exc))}")
        raise typer.Exit(int(ExitCode.USAGE)) from None
    out.mkdir(parents=True, exist_ok=True)
    target = out / "snapshot.json"
    snapshot.write(target)
    summary = summarize(snapshot)
    for line in summary.lines():
        console.print(console_text(line))
    console.print(f"snapshot: {console_text(str(target.resolve()))}")
    incomplete = summary.states.total() != summary.states.get("ok", 0)
    raise typer.Exit(int(ExitCode.INCOMPLETE if incomplete else ExitCode.OK))
