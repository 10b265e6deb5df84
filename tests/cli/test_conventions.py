"""CLI conventions users of other tools expect: an example in every command's help and no Python type names,
shell completion, NO_COLOR meaning no escape sequences at all, and tables on stderr (stdout stays for data)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from scaleguard.cli.main import app
from scaleguard.lab.scenario import demo_scenario

runner = CliRunner()
STYLING = re.compile(r"\x1b\[[0-9;]*m")
"""SGR sequences: colour, bold, dim, underline (cursor control for a spinner is not styling)."""
PYTHON_TYPES = re.compile(r"<(bool|str|int|float|path|list\[|int range|float range|choice)", re.IGNORECASE)


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subcommands = getattr(group, "commands", None)  # a group (typer ships its own click)
    if subcommands:
        return [c for name, sub in subcommands.items() for c in _commands(sub, (*prefix, name))]
    return [prefix]


COMMANDS = _commands(typer.main.get_command(app))


def test_every_command_is_listed() -> None:
    names = {" ".join(c) for c in COMMANDS}
    assert {"audit", "collect", "fix", "history", "lab create", "lab serve", "inventory import"} <= names


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_an_example_and_no_python_type_names(command: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert f"Example: scaleguard {' '.join(command)}" in result.output
    assert PYTHON_TYPES.findall(result.output) == []


def test_shell_completion_is_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "--install-completion" in runner.invoke(app, ["--help"]).output
    # the shell is named, not detected from the parent processes (a run started in the background has no
    # shell among them, and typer would then ignore the name and fail)
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    script = runner.invoke(app, ["--show-completion", "bash"])
    assert script.exit_code == 0 and "complete" in script.output and "scaleguard" in script.output


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")} | env
    code = "import sys; from scaleguard.cli.main import app; sys.argv[0] = 'scaleguard'; app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=environment, timeout=120,
        check=False,
    )


@pytest.mark.parametrize("args", [["audit", "--evidence", "{ev}", "--out", "{out}"], ["audit", "--help"]])
def test_no_color_means_no_escape_sequences_at_all(tmp_path: Path, args: list[str]) -> None:
    evidence = demo_scenario(defects=True).write(tmp_path / "CONTOSO-SSIS")
    argv = [a.format(ev=evidence, out=tmp_path / "out") for a in args]
    coloured = _run(argv, FORCE_COLOR="1")  # a terminal is simulated, so styling would be written
    assert STYLING.search(coloured.stderr + coloured.stdout)
    plain = _run(argv, FORCE_COLOR="1", NO_COLOR="1")
    assert STYLING.findall(plain.stderr + plain.stdout) == []
    assert (plain.stderr + plain.stdout).strip()


def test_fix_prints_its_tables_on_stderr(tmp_path: Path) -> None:
    evidence = demo_scenario(defects=True).write(tmp_path / "CONTOSO-SSIS")
    assert runner.invoke(app, ["audit", "--evidence", str(evidence), "--out", str(tmp_path / "a")]).exit_code == 1
    planned = runner.invoke(app, ["fix", "--findings", str(tmp_path / "a" / "findings.json"),
                                  "--out", str(tmp_path / "fix")])
    assert planned.exit_code == 0, planned.stderr
    assert planned.stdout == ""
    assert "SO-W02" in planned.stderr or "WORKER02" in planned.stderr


LONG_RUNNING = [("audit",), ("collect",), ("fix",), ("lab", "demo")]


@pytest.mark.parametrize("command", LONG_RUNNING, ids=" ".join)
def test_every_long_running_command_offers_no_progress(command: tuple[str, ...]) -> None:
    assert command in COMMANDS
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0 and "--no-progress" in result.output
