"""docs/ci: the pipeline examples are valid YAML, run a real `scaleguard audit` command line (every flag
exists), keep the exit code for a final gate step, and publish the SARIF and JUnit files the audit writes."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from scaleguard.cli.main import app

CI = Path(__file__).resolve().parents[2] / "docs" / "ci"


def _scripts(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in ([v] if k in ("run", "script") and isinstance(v, str)
                                                         else _scripts(v))]
    if isinstance(node, list):
        return [s for item in node for s in _scripts(item)]
    return []


def _audit_flags(scripts: list[str]) -> list[str]:
    line = next(ln for s in scripts for ln in s.splitlines() if ln.strip().startswith("scaleguard audit"))
    return [w for w in shlex.split(line) if w.startswith("--")]


@pytest.mark.parametrize("name", ["github-actions.yml", "azure-pipelines.yml"])
def test_ci_example_runs_a_real_audit_and_gates_on_its_exit_code(name: str) -> None:
    text = (CI / name).read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    scripts = _scripts(document)
    help_text = CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "200"}).output
    for flag in _audit_flags(scripts):
        assert flag in help_text, f"{name}: scaleguard audit has no {flag}"
    assert "set +e" in next(s for s in scripts if "scaleguard audit" in s)  # the reports are published first
    assert scripts[-1].strip().startswith("exit ")  # ... and the job fails on the audit's code last
    assert "findings.sarif" in text and "junit.xml" in text
