"""The top-level command: version and help, as users probe a tool first."""

from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

from scaleguard.cli.main import app


def test_version_prints_the_installed_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"scaleguard {version('scaleguard')}"


def test_help_lists_every_verb() -> None:
    result = CliRunner().invoke(app, ["--help"], terminal_width=120)
    assert result.exit_code == 0
    for verb in ("audit", "collect", "fix", "history", "lab", "policies"):
        assert verb in result.output
