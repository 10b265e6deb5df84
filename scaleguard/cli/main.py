"""Entry point: importing each verb module registers its commands on the shared Typer app."""

from __future__ import annotations

from scaleguard.cli import (
    audit_cmd,
    collect_cmd,
    fix_cmd,
    history_cmd,
    inventory_cmd,
    lab_cmd,
    lab_serve_cmd,
    policies_cmd,
)
from scaleguard.cli.groups import app

__all__ = [
    "app", "audit_cmd", "collect_cmd", "fix_cmd", "history_cmd", "inventory_cmd", "lab_cmd", "lab_serve_cmd",
    "policies_cmd",
]

if __name__ == "__main__":  # pragma: no cover
    app()
