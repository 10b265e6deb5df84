"""Basic over plain HTTP to a remote host: refused at inventory load unless allow_unencrypted, then reported.

The lab only listens on loopback, which is exempt (nothing crosses a network), so these tests make
127.0.0.1 count as remote by patching ``InventoryNode.loopback``: everything else — loading, collecting over
WinRM, findings.json, report.html, the CLI — is the real path.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from scaleguard.cli.main import app
from scaleguard.lab.scenario import demo_scenario
from scaleguard.lab.serve import PASSWORD_ENV, Lab, LabOptions, start_lab
from scaleguard.remoting.inventory import InventoryNode

pytestmark = pytest.mark.lab
PASSWORD = "Lab-" + secrets.token_urlsafe(12)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    evidence = tmp_path / "evidence" / "contoso"
    demo_scenario(1, seed=3, defects=False).write(evidence)
    running = start_lab(LabOptions(evidence=evidence, inventory_out=tmp_path / "inventory.yaml"))
    running.write_inventory()
    monkeypatch.setattr(InventoryNode, "loopback", property(lambda self: False))  # 127.0.0.1 plays remote
    yield running
    running.close()


def _allow(inventory: Path, node: str) -> None:
    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    for entry in document["clusters"][0]["masters"] + document["clusters"][0]["workers"]:
        entry["transport"] = {"allow_unencrypted": entry["name"] == node}
    inventory.write_text(yaml.safe_dump(document), encoding="utf-8")


def test_basic_over_http_to_a_remote_host_is_a_usage_error_naming_the_line(lab: Lab, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["audit", "--inventory", str(lab.options.inventory_out), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2, result.output
    assert "inventory.yaml:" in result.output and "Basic over plain http" in result.output
    assert "allow_unencrypted: true" in result.output
    assert not (tmp_path / "out" / "findings.json").exists()  # refused before contacting any host


def test_allow_unencrypted_per_host_is_collected_and_said_in_the_reports(lab: Lab, tmp_path: Path) -> None:
    inventory = lab.options.inventory_out
    _allow(inventory, "MASTER01")
    refused = CliRunner().invoke(app, ["audit", "--inventory", str(inventory), "--out", str(tmp_path / "no")])
    assert refused.exit_code == 2
    assert refused.output.count("Basic over plain http") == 1 and "worker '127.0.0.1'" in refused.output

    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    for entry in document["clusters"][0]["masters"] + document["clusters"][0]["workers"]:
        entry["transport"] = {"allow_unencrypted": True}
    inventory.write_text(yaml.safe_dump(document), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["audit", "--inventory", str(inventory), "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    assert "NOT encrypted on the network (allow_unencrypted): MASTER01, WORKER01" in result.output
    findings = json.loads((out / "findings.json").read_text(encoding="utf-8"))
    assert findings["unencrypted_nodes"] == ["MASTER01", "WORKER01"]
    snapshot = json.loads((out / "snapshot.json").read_text(encoding="utf-8"))
    assert [n["collection"]["unencrypted"] for n in snapshot["clusters"][0]["nodes"]] == [True, True]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "not encrypted on the network (allow_unencrypted): MASTER01, WORKER01" in html
