"""Runbooks end to end: the demo cluster served by the lab over WinRM, ``fix --emit-runbook``, every
node's script of every wave run through the lab (which checks the script is the one scaleguard writes,
then does what its driver does), ``fix --import-results`` until no wave is left, and a live audit that
exits 0 — the same end state ``fix --apply`` reaches on a second lab of the same cluster."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from scaleguard.apply.journal import Journal
from scaleguard.apply.runbook_script import parse_runbook, runbook_payload
from scaleguard.apply.transport import WinRMTransport
from scaleguard.apply.verify import reaudit
from scaleguard.cli.main import app
from scaleguard.collectors.agent import bootstrap_command
from scaleguard.findings.model import Status
from scaleguard.lab.scenario import demo_scenario
from scaleguard.lab.serve import PASSWORD_ENV, Lab, LabOptions, start_lab

PASSWORD = "Lab-" + secrets.token_urlsafe(12)


@pytest.fixture(autouse=True)
def _lab_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


@pytest.fixture
def labs(tmp_path: Path) -> Iterator[Any]:
    started: list[Lab] = []

    def serve(name: str) -> tuple[Lab, Path]:
        evidence = demo_scenario(defects=True).write(tmp_path / name / "CONTOSO-SSIS")
        inventory = tmp_path / name / "inventory.yaml"
        lab = start_lab(LabOptions(evidence=evidence, inventory_out=inventory, service_ms=0))
        lab.write_inventory()
        started.append(lab)
        return lab, inventory

    yield serve
    for lab in started:
        lab.close()


def cli(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_wave(inventory: Path, folder: Path, wave: int) -> dict[str, dict[str, Any]]:
    """Every script of ``wave`` run on its node over WinRM (the usual bootstrap, the runbook on stdin);
    the output written where the operator would put it. Returns node → the result document."""
    transport = WinRMTransport(inventory)
    results = {}
    try:
        for script in sorted((folder / f"wave-{wave:02d}").glob("*.ps1")):
            data = parse_runbook(script.read_text(encoding="ascii"))
            client: Any = transport.client(data.cluster, data.node)
            payload = runbook_payload(script.read_text("ascii"))
            answer = client.channel.run(bootstrap_command(), payload, idempotent=False)
            assert answer.exit_code in (0, 1), answer.stderr
            script.with_suffix(".result.json").write_bytes(answer.stdout)
            results[data.node] = json.loads(answer.stdout)
    finally:
        transport.close()
    return results


def failing(inventory: Path) -> set[tuple[str, str]]:
    _snapshot, found = reaudit(inventory)
    return {(f.policy, f.node) for f in found if f.status in (Status.FAIL, Status.ERROR)}


def pinned_state(inventory: Path) -> dict[str, Any]:
    """What both paths must agree on: the master's binding, what every worker pins, SCHANNEL, services,
    and that each worker's configured certificate is in its My store with a key."""
    snapshot, _found = reaudit(inventory)
    cluster = snapshot.clusters[0]
    master = cluster.node("MASTER01")
    assert master is not None and master.bindings and master.master_config is not None
    bound = master.bindings[0].cert_hash
    state: dict[str, Any] = {"binding_store": master.bindings[0].cert_store,  # the two labs' certificates differ
                             "master_config": master.master_config.settings["SSLCertThumbprint"] == bound,
                             "schannel": master.schannel.client_auth_trust_mode if master.schannel else None}
    for node in cluster.nodes:
        if node.worker_config is None:
            continue
        settings = node.worker_config.settings
        own = settings["WorkerHttpsCertThumbprint"]
        mine = {c.thumbprint: c.has_private_key for c in (node.my.certificates if node.my else [])}
        state[node.name] = (settings["MasterHttpsCertThumbprint"] == bound, mine.get(own),
                            sorted((s.name, s.state, s.start_mode) for s in node.services or []))
    return state


def test_runbooks_through_the_lab_leave_the_demo_cluster_auditing_clean_as_apply_does(
    labs: Any, tmp_path: Path
) -> None:
    lab, inventory = labs("runbook")
    before = failing(inventory)
    assert before, "the demo cluster must have planted defects"
    assert cli("fix", "--inventory", inventory, "--out", tmp_path / "plan").exit_code == 0
    folder, journal = tmp_path / "runbooks", tmp_path / "journal.sqlite"
    emitted = cli("fix", "--plan", tmp_path / "plan" / "plan.json", "--emit-runbook", folder)
    assert emitted.exit_code == 0, emitted.output
    live = cli("fix", "--inventory", inventory, "--emit-runbook", tmp_path / "from-live")  # planned from a collection
    assert live.exit_code == 0, live.output
    assert waves_of(tmp_path / "from-live") == waves_of(folder) == [
        {"WORKER02": ["s011", "s012"], "WORKER03": ["s001", "s002", "s004"]}
    ]

    waves = 0
    while True:
        waves += 1
        results = run_wave(inventory, folder, waves)
        assert all(s["status"] in ("applied", "done") for r in results.values() for s in r["steps"]), results
        imported = cli("fix", "--import-results", folder, "--journal", journal, "--inventory", inventory)
        assert imported.exit_code == 0, imported.output
        if "no wave is left" in imported.output:
            break
        assert f"wave {waves + 1} written" in imported.output
    assert waves == 3  # WORKER03 makes its certificate, MASTER01 trusts it, then WORKER03 is re-pinned to it
    assert failing(inventory) == set()
    assert cli("audit", "--inventory", inventory, "--out", tmp_path / "after").exit_code == 0

    with Journal(journal) as opened:
        run = opened.runs()[-1]
        entries = opened.entries(run.run_id)
    manifest = json.loads((folder / "runbook.json").read_text(encoding="utf-8"))
    assert run.kind == "apply" and run.status == "done" and run.plan_sha256 == manifest["plan_sha256"]
    assert {e.step_id for e in entries} == set(manifest["steps"])
    assert {e.action for e in entries if e.status == "done"} >= {"create_certificate", "set_config_setting"}

    # every wave again: each step is found done, nothing is created or changed twice
    worker = lab.state.node("WORKER03")
    certificates = len(worker.my or [])
    changes = sum(len(n.journal) for n in lab.state.nodes())
    for wave in range(1, waves + 1):
        again = run_wave(inventory, folder, wave)
        assert {s["status"] for r in again.values() for s in r["steps"]} == {"done"}, again
    assert len(worker.my or []) == certificates
    assert sum(len(n.journal) for n in lab.state.nodes()) == changes

    pinned_runbook = pinned_state(inventory)
    _other, applied_inventory = labs("apply")
    applied_journal = tmp_path / "j2.sqlite"
    applied = cli("fix", "--inventory", applied_inventory, "--apply", "--yes", "--journal", applied_journal)
    assert applied.exit_code == 0, applied.output
    assert pinned_runbook == pinned_state(applied_inventory)

    # the journaled run is an apply run like any other: --undo reverts what it can, as for the --apply run
    undone = cli("fix", "--undo", run.run_id, "--inventory", inventory, "--journal", journal, "--yes")
    with Journal(applied_journal) as opened:
        applied_run = opened.runs()[-1].run_id
    undone_applied = cli(
        "fix", "--undo", applied_run, "--inventory", applied_inventory, "--journal", applied_journal, "--yes"
    )
    assert undone.exit_code == undone_applied.exit_code
    assert undo_outcome(undone.output) == undo_outcome(undone_applied.output)
    assert failing(inventory) == failing(applied_inventory)


def waves_of(folder: Path) -> list[dict[str, list[str]]]:
    manifest = json.loads((folder / "runbook.json").read_text(encoding="utf-8"))
    return [{s["node"]: s["steps"] for s in wave["scripts"]} for wave in manifest["waves"]]


def undo_outcome(output: str) -> set[tuple[str, str, str]]:
    """(event, step, action) of every line an undo printed about a step."""
    found = re.findall(r"^\s*(undo|fail|reverted|failed)\s+(s\d{3})\s+\S+\s+([a-z_]+)", output, flags=re.M)
    assert found, output
    return set(found)
