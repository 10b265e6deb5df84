"""End to end: real pywinrm ↔ the lab (its own process) over loopback, HTTP and HTTPS, Basic and NTLM.

The live audit of a lab serving an evidence folder must give the same findings as the offline audit of
that folder — except SO-C03, which is live-only by design (SSISDB cannot be read from files).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaleguard.collectors.live import collect_inventory, summarize
from scaleguard.lab.process import LabProcess
from scaleguard.lab.scenario import demo_scenario
from scaleguard.lab.serve import PASSWORD_ENV
from scaleguard.pipeline import AuditOptions, run_audit
from scaleguard.snapshot.model import CollectionState

pytestmark = pytest.mark.lab

LIVE_ONLY = {"SO-C03"}
PASSWORD = "Lab-" + secrets.token_urlsafe(18)
UNLISTED = "WORKER77"


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("live") / "contoso"
    demo_scenario(3, seed=11).write(folder)
    ssisdb_file = folder / "MASTER01" / "ssisdb.json"
    ssisdb = json.loads(ssisdb_file.read_text(encoding="utf-8-sig"))
    ssisdb["worker_agents"].append(
        {"WorkerAgentId": "0f8a2c4e-0000-4000-8000-000000000077", "MachineName": UNLISTED, "IsEnabled": True}
    )
    ssisdb_file.write_text(json.dumps(ssisdb), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def offline_findings(
    evidence: Path, tmp_path_factory: pytest.TempPathFactory
) -> set[tuple[str, str, str, str]]:
    # module-scoped: it runs before the per-test history isolation, so it names its own history file
    history = tmp_path_factory.mktemp("offline-history") / "history.sqlite"
    result = run_audit(
        AuditOptions(
            out_dir=tmp_path_factory.mktemp("offline"), evidence=evidence, progress=False, history=history
        )
    )
    return finding_keys(result.findings.findings)


def finding_keys(findings: list) -> set[tuple[str, str, str, str]]:  # type: ignore[type-arg]
    return {(f.policy, f.node, f.status.value, f.severity.value) for f in findings}


@pytest.fixture(
    scope="module",
    params=[("http", "basic"), ("http", "ntlm"), ("https", "basic"), ("https", "ntlm")],
    ids=lambda p: "-".join(p),
)
def lab(
    request: pytest.FixtureRequest,
    evidence: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LabProcess]:
    scheme, auth = request.param
    workdir = tmp_path_factory.mktemp(f"lab-{scheme}-{auth}")
    with LabProcess(evidence, workdir, PASSWORD, https=scheme == "https", auth=auth) as running:
        yield running


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def test_every_node_is_collected_over_winrm(lab: LabProcess) -> None:
    snapshot = collect_inventory(lab.inventory, concurrency=4, insecure=False, progress=False)
    [cluster] = snapshot.clusters
    assert cluster.mode == "live"
    assert [(n.name, n.collection.state) for n in cluster.nodes] == [
        (name, CollectionState.OK) for name in ("MASTER01", "WORKER01", "WORKER02", "WORKER03")
    ]
    assert all(n.collection.transport == "winrm" and not n.collection.insecure for n in cluster.nodes)
    master = cluster.node("MASTER01")
    assert master is not None and master.is_master and master.ssisdb is not None
    inventory = lab.inventory.read_text(encoding="utf-8")
    assert f"scheme: {'https' if lab.https else 'http'}" in inventory and f"auth: {lab.auth}" in inventory
    assert ("ca_bundle:" in inventory) == lab.https


def test_live_findings_equal_offline_findings(
    lab: LabProcess, offline_findings: set[tuple[str, str, str, str]], tmp_path: Path
) -> None:
    result = run_audit(AuditOptions(out_dir=tmp_path, inventory=lab.inventory, concurrency=4, progress=False))
    live = finding_keys(result.findings.findings)
    assert {f for f in live if f[0] not in LIVE_ONLY} == {
        f for f in offline_findings if f[0] not in LIVE_ONLY
    }
    assert any(f[0] == "SO-C03" and f[2] == "not_assessed" for f in offline_findings)
    assert any(f[0] == "SO-C03" and f[2] in ("pass", "fail") for f in live)  # SSISDB was read live
    assert result.findings.mode == "live"


def test_workers_ssisdb_knows_but_the_inventory_lacks_are_reported(lab: LabProcess) -> None:
    snapshot = collect_inventory(lab.inventory, concurrency=4, insecure=False, progress=False)
    master = snapshot.clusters[0].node("MASTER01")
    assert master is not None
    [diagnostic] = [d for d in master.diagnostics if d.source == "ssisdb/worker_agents"]
    assert UNLISTED in diagnostic.message and "not audited" in diagnostic.message
    assert snapshot.clusters[0].node(UNLISTED) is None  # reported, not silently added
    assert any(UNLISTED in line for line in summarize(snapshot).lines())
