"""``scaleguard policies list|validate|facts`` through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import scaleguard.cli.policies_cmd  # noqa: F401 - registers the commands on the shared app
from scaleguard.cli.groups import app

runner = CliRunner()

GOOD = """\
id: ACME-W01
name: worker-has-display-name
title: Every worker's service is installed
severity: low
scope: worker
description: Checks the worker service exists.
requires: [worker.service]
check: worker.service.present
let:
  host: node.name
message: 'no worker service on {host}'
remediation: manual
"""


def pack(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "pack"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_list_shows_the_builtin_pack() -> None:
    result = runner.invoke(app, ["policies", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["ID", "SEVERITY", "SCOPE"]
    assert any(line.startswith("SO-M05") and "repair-master-binding" in line for line in lines)
    assert any(line.startswith("SO-M07") and "critical (graded)" in line for line in lines)
    assert any(line.startswith("SO-C03") and "[live only]" in line for line in lines)
    assert lines[-1] == "27 policies"


def test_list_with_a_user_pack_as_json(tmp_path: Path) -> None:
    folder = pack(tmp_path, **{"acme.yaml": GOOD})
    result = runner.invoke(app, ["policies", "list", "--policies", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    acme = next(p for p in listed if p["id"] == "ACME-W01")
    assert acme["source"] == str(folder / "acme.yaml")
    assert len(listed) == 28


def test_validate_a_good_pack(tmp_path: Path) -> None:
    folder = pack(tmp_path, **{"acme.yaml": GOOD})
    result = runner.invoke(app, ["policies", "validate", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"OK: 1 policies in {folder} (with the built-in pack: 28)"


def test_validate_a_bad_pack_lists_every_problem(tmp_path: Path) -> None:
    folder = pack(
        tmp_path,
        **{
            "a.yaml": GOOD.replace("severity: low", "severity: urgent"),
            "b.yaml": GOOD.replace("ACME-W01", "ACME-W02")
            .replace("worker-has-display-name", "second")
            .replace("check: worker.service.present", "check: worker.service.present &&"),
        },
    )
    result = runner.invoke(app, ["policies", "validate", str(folder)])
    assert result.exit_code == 2
    assert f"{folder / 'a.yaml'}:4: severity: " in result.output
    assert f"{folder / 'b.yaml'}:8: check: CEL does not compile" in result.output
    assert "2 problem(s) found" in result.output


def test_validate_a_missing_directory(tmp_path: Path) -> None:
    result = runner.invoke(app, ["policies", "validate", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "not a directory of policy files" in result.output


def test_list_refuses_a_bad_pack(tmp_path: Path) -> None:
    folder = pack(tmp_path, **{"a.yaml": "id: [\n"})
    result = runner.invoke(app, ["policies", "list", "--policies", str(folder)])
    assert result.exit_code == 2
    assert f"{folder / 'a.yaml'}:2: YAML syntax error" in result.output


def test_facts_prints_the_reference() -> None:
    result = runner.invoke(app, ["policies", "facts"])
    assert result.exit_code == 0
    assert "master_cert.days_left (int)" in result.output
    assert "cluster.master_endpoints (list(map))" in result.output


def test_validate_the_shipped_pack_itself() -> None:
    from scaleguard.policies.loader import is_builtin_pack

    shipped = Path(__file__).resolve().parents[2] / "scaleguard" / "policies" / "pack"
    assert is_builtin_pack(shipped)
    result = runner.invoke(app, ["policies", "validate", str(shipped)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"OK: 27 policies in the built-in pack ({shipped})"
