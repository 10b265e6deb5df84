"""``scaleguard inventory import``: an Ansible inventory converted to scaleguard's own format, once.

``--inventory`` reads Ansible inventories directly; converting is for a shop that wants to review or
extend the result (per-cluster transport defaults, SPN overrides) or keep it next to the policies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from scaleguard.console import console as make_console
from scaleguard.exitcodes import ExitCode
from scaleguard.remoting.errors import InventoryError
from scaleguard.safefile import MIB, read_limited
from scaleguard.safetext import console_text

from .groups import app

inventory_app = typer.Typer(help="Inventories: convert an Ansible inventory.", no_args_is_help=True)
app.add_typer(inventory_app, name="inventory")


@inventory_app.command("import")
def import_inventory(
    source: Annotated[Path, typer.Argument(metavar="FILE", help="An Ansible inventory (INI or YAML).")],
    out: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Convert an Ansible inventory (<cluster>_masters / <cluster>_workers groups) to scaleguard's YAML.

    Example: scaleguard inventory import hosts.ini --out inventory.yaml
    """
    from scaleguard.remoting.ansible_inventory import looks_like_ansible, native_document
    from scaleguard.remoting.inventory import load_inventory

    console = make_console(soft_wrap=True)
    try:
        text = read_limited(source, 16 * MIB, named=True).decode("utf-8-sig")
        if not looks_like_ansible(text):
            raise InventoryError(f"{source}: not an Ansible inventory (no [group] sections or hosts/children)")
        document = native_document(source, text)
        load_inventory(source)  # the result must pass every rule an audit applies (encryption, auth, ...)
    except (OSError, UnicodeDecodeError) as exc:
        console.print(
            f"[bold red]scaleguard inventory import: error:[/] {console_text(str(source))}: {console_text(str(exc))}"
        )
        raise typer.Exit(int(ExitCode.USAGE)) from None
    except InventoryError as exc:
        console.print(f"[bold red]scaleguard inventory import: error:[/] {console_text(str(exc))}")
        raise typer.Exit(int(ExitCode.USAGE)) from None
    header = f"# Converted by `scaleguard inventory import` from {source.name}.\n"
    text_out = header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False, allow_unicode=True)
    if out is None:
        typer.echo(text_out, nl=False)
        return
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(text_out, encoding="utf-8")
    partial.replace(out)
    clusters = document["clusters"]
    nodes = sum(len(c["masters"]) + len(c["workers"]) for c in clusters)
    console.print(f"{console_text(str(out))}: {len(clusters)} cluster(s), {nodes} node entries")

