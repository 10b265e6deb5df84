"""The top-level command: version and help, as users probe a tool first."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest
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


@pytest.mark.parametrize("argv", [["--version"], ["audit", "--help"]])
def test_nothing_on_stderr_in_a_fresh_process(argv: list[str]) -> None:
    """Run as a user does (warnings raised at import time only show in a fresh interpreter)."""
    done = subprocess.run(
        [sys.executable, "-m", "scaleguard.cli.main", *argv], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.strip()
    assert done.stderr == ""
