"""Every way a host can fail becomes that host's collection state and reason; the others are collected.

One lab process serves a small healthy cluster plus one node per injected fault (copies of a worker), with
a 3-second per-host deadline, so the slow cases (hangs) run in parallel and the module stays quick.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from scaleguard.cli.main import app
from scaleguard.collectors.live import collect_inventory, summarize
from scaleguard.findings.model import Status
from scaleguard.lab.process import LabProcess
from scaleguard.lab.scenario import demo_scenario
from scaleguard.lab.serve import PASSWORD_ENV
from scaleguard.pipeline import AuditOptions, run_audit
from scaleguard.snapshot.model import ClusterSnapshot, CollectionState, NodeSnapshot, Snapshot

pytestmark = pytest.mark.lab

PASSWORD = "Lab-" + secrets.token_urlsafe(18)
DEADLINE_S = 2.0
FAULTS: dict[str, dict[str, Any]] = {
    "DOWN01": {"down": True},
    "HANG01": {"hang": "receive"},
    "SILENT01": {"hang": "http"},
    "BADPW01": {"password": "not-" + PASSWORD},
    "GARBAGE01": {"malformed_output": True},
    "EXPIRED01": {"expired_shells": 1},
    "EXPIRED99": {"expired_shells": 99},
    "QUOTA01": {"quota_faults": 1},
    "CLM01": {"language_mode": "ConstrainedLanguage"},
    "STUCK01": {"stuck_services": ["SSISScaleOutWorker150", "SSISScaleOutWorker140", "SSISScaleOutWorker160"]},
}
HEALTHY = ("MASTER01", "WORKER01", "WORKER02")


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("faults") / "contoso"
    demo_scenario(2, seed=21).write(folder)
    for name in FAULTS:
        shutil.copytree(folder / "WORKER01", folder / name)
    return folder


@pytest.fixture(scope="module")
def lab(evidence: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    with LabProcess(
        evidence, tmp_path_factory.mktemp("faults-lab"), PASSWORD, faults=FAULTS, host_timeout=DEADLINE_S
    ) as running:
        yield running


@pytest.fixture(scope="module")
def collected(lab: LabProcess) -> tuple[ClusterSnapshot, float]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(PASSWORD_ENV, PASSWORD)
        started = time.monotonic()
        snapshot = collect_inventory(lab.inventory, concurrency=16, insecure=False, progress=False)
        return snapshot.clusters[0], time.monotonic() - started


def node(collected: tuple[ClusterSnapshot, float], name: str) -> NodeSnapshot:
    found = collected[0].node(name)
    assert found is not None
    return found


def test_healthy_nodes_are_collected_despite_the_others(collected: tuple[ClusterSnapshot, float]) -> None:
    for name in HEALTHY:
        assert node(collected, name).collection.state is CollectionState.OK
    assert collected[1] < DEADLINE_S + 3  # the hung hosts cost their deadline once, in parallel


@pytest.mark.parametrize(
    ("name", "state", "reason"),
    [
        ("DOWN01", CollectionState.UNREACHABLE, "unreachable: connection refused"),
        (
            "HANG01",
            CollectionState.TIMED_OUT,
            "before the per-host deadline while waiting for the agent's output",
        ),
        ("SILENT01", CollectionState.TIMED_OUT, "before the per-host deadline while opening a shell"),
        ("BADPW01", CollectionState.AUTH_REFUSED, "refused the credentials of scaleguard (basic, HTTP 401)"),
        ("GARBAGE01", CollectionState.FAILED, "malformed agent output from 127.0.0.1: not JSON"),
        ("EXPIRED99", CollectionState.FAILED, "WS-Management fault 2150858843"),
        # AppLocker/WDAC: the bootstrap says so plainly instead of every .NET call failing generically
        ("CLM01", CollectionState.FAILED, "PowerShell runs in ConstrainedLanguage (AppLocker/WDAC)"),
    ],
)
def test_each_failure_is_a_clear_state_for_that_host(
    collected: tuple[ClusterSnapshot, float], name: str, state: CollectionState, reason: str
) -> None:
    failed = node(collected, name)
    assert failed.collection.state is state
    assert reason in (failed.collection.reason or "")
    assert failed.master_config is None and failed.worker_config is None and failed.root is None  # unknown
    assert (
        failed.collection.duration_ms is not None and failed.collection.duration_ms < (DEADLINE_S + 2) * 1000
    )


def test_an_expired_shell_mid_run_is_recovered_by_a_new_shell(
    collected: tuple[ClusterSnapshot, float],
) -> None:
    recovered = node(collected, "EXPIRED01")
    assert recovered.collection.state is CollectionState.OK
    assert any("2150858843" in d.message and "shell re-created" in d.message for d in recovered.diagnostics)
    gave_up = node(collected, "EXPIRED99")
    assert "gave up after" in (gave_up.collection.reason or "")


def test_the_operation_quota_fault_is_recovered_by_a_new_shell(
    collected: tuple[ClusterSnapshot, float],
) -> None:
    recovered = node(collected, "QUOTA01")
    assert recovered.collection.state is CollectionState.OK
    assert any(str(0x803381A6) in d.message for d in recovered.diagnostics)


def test_a_wrong_password_in_the_callers_environment(
    lab: LabProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SG_WRONG_PASSWORD", "definitely-" + PASSWORD)
    document = yaml.safe_load(lab.inventory.read_text(encoding="utf-8"))
    document["defaults"]["transport"]["credential"] = {"env": "SG_WRONG_PASSWORD"}
    document["clusters"][0]["workers"] = []
    inventory = tmp_path / "wrong.yaml"
    inventory.write_text(yaml.safe_dump(document), encoding="utf-8")
    [master] = collect_inventory(inventory, concurrency=1, insecure=False, progress=False).clusters[0].nodes
    assert master.collection.state is CollectionState.AUTH_REFUSED
    assert PASSWORD not in master.model_dump_json()


def test_only_failed_nodes_get_so_c01_errors(lab: LabProcess, tmp_path: Path) -> None:
    result = run_audit(
        AuditOptions(out_dir=tmp_path, inventory=lab.inventory, concurrency=16, progress=False)
    )
    errors = {f.node for f in result.findings.findings if f.policy == "SO-C01" and f.status is Status.ERROR}
    assert errors == {"DOWN01", "HANG01", "SILENT01", "BADPW01", "GARBAGE01", "EXPIRED99", "CLM01"}
    assert int(result.exit_code) == 3  # incomplete


def test_collect_and_audit_commands_never_show_the_password(
    lab: LabProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    runner = CliRunner()
    collected = runner.invoke(
        app,
        [
            "collect",
            "--inventory",
            str(lab.inventory),
            "--out",
            str(tmp_path / "c"),
            "--concurrency",
            "16",
            "--no-progress",
        ],
    )
    assert collected.exit_code == 3, collected.output  # some nodes could not be collected
    assert "DOWN01: unreachable" in collected.output
    snapshot = Snapshot.read(tmp_path / "c" / "snapshot.json")
    assert len(snapshot.clusters[0].nodes) == len(HEALTHY) + len(FAULTS)
    audited = runner.invoke(
        app, ["audit", "--inventory", str(lab.inventory), "--out", str(tmp_path / "a"), "--concurrency", "16"]
    )
    assert audited.exit_code == 3, audited.output
    assert (tmp_path / "a" / "report.html").is_file()
    texts = [
        collected.output,
        audited.output,
        caplog.text,
        lab.log(),
        lab.inventory.read_text(encoding="utf-8"),
    ]
    texts += [p.read_text(encoding="utf-8", errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert len(texts) > 8
    for text in texts:
        assert PASSWORD not in text


def test_a_missing_credential_is_a_usage_error(
    lab: LabProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV)
    result = CliRunner().invoke(app, ["collect", "--inventory", str(lab.inventory), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert PASSWORD_ENV in result.output and "not set" in result.output


def test_a_host_whose_port_is_closed(lab: LabProcess, tmp_path: Path) -> None:
    with socket.socket() as sock:  # bound then released: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    document = yaml.safe_load(lab.inventory.read_text(encoding="utf-8"))
    document["clusters"][0]["workers"] = [{"name": "GONE01", "host": "127.0.0.1", "port": port}]
    inventory = tmp_path / "gone.yaml"
    inventory.write_text(yaml.safe_dump(document), encoding="utf-8")
    snapshot = collect_inventory(inventory, concurrency=2, insecure=False, progress=False)
    states = {n.name: n.collection.state for n in snapshot.clusters[0].nodes}
    assert states == {"MASTER01": CollectionState.OK, "GONE01": CollectionState.UNREACHABLE}
    assert "1 unreachable" in summarize(snapshot).lines()[0]


@pytest.fixture(scope="module")
def tls_lab(evidence: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    faults = {"WORKER02": {"tls_name": "not-this-host.example"}, **{name: {"down": True} for name in FAULTS}}
    with LabProcess(
        evidence,
        tmp_path_factory.mktemp("tls-lab"),
        PASSWORD,
        https=True,
        faults=faults,
        host_timeout=DEADLINE_S,
    ) as running:
        yield running


def test_tls_name_mismatch_fails_that_host_and_insecure_is_explicit_and_recorded(
    tls_lab: LabProcess, tmp_path: Path
) -> None:
    snapshot = collect_inventory(tls_lab.inventory, concurrency=16, insecure=False, progress=False)
    cluster = snapshot.clusters[0]
    mismatch = cluster.node("WORKER02")
    assert mismatch is not None and mismatch.collection.state is CollectionState.FAILED
    assert "TLS with https://127.0.0.1" in (mismatch.collection.reason or "")
    assert "certificate verify failed" in (mismatch.collection.reason or "")
    assert all(cluster.node(n).collection.state is CollectionState.OK for n in ("MASTER01", "WORKER01"))  # type: ignore[union-attr]

    result = run_audit(
        AuditOptions(
            out_dir=tmp_path, inventory=tls_lab.inventory, insecure=True, concurrency=16, progress=False
        )
    )
    insecure = result.snapshot.clusters[0]
    assert insecure.node("WORKER02").collection.state is CollectionState.OK  # type: ignore[union-attr]
    assert all(n.collection.insecure for n in insecure.nodes)
    assert result.findings.insecure  # the report says TLS was not validated


def test_a_service_that_never_starts_is_a_definite_error_before_the_deadline(lab: LabProcess) -> None:
    """Over WinRM: the agent's wait (40 % of the 2 s deadline) ends first, as a partial change naming the
    state, so rollback stops the service instead of restarting into a start that is still waiting."""
    from scaleguard.apply.transport import PartialChange, WinRMTransport

    transport = WinRMTransport(lab.inventory)
    try:
        client = transport.client("contoso", "STUCK01")
        [service] = client.request({"op": "collect", "sections": ["services"]})["services"]
        name = service["Name"]
        assert client.request({"op": "stop_service", "name": name}) == {"name": name, "was_running": True}
        started = time.monotonic()
        with pytest.raises(PartialChange) as raised:
            client.request({"op": "start_service", "name": name})
        elapsed = time.monotonic() - started
    finally:
        transport.close()
    assert elapsed < DEADLINE_S
    assert f"{name} did not reach Running within 1 s after a start (now StartPending)" in str(raised.value)
    assert raised.value.result == {"name": name, "was_running": False}
