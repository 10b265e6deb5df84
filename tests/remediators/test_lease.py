"""The cluster lease and agent rounds: the lab's ops, then whole ``fix --apply`` processes racing and killed.

The process tests run the lab and every ``scaleguard fix`` as operators would: separate processes, two
journals (two operators' machines), ``kill -9`` for a run that dies mid-way.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fixcases import Cluster

from scaleguard.apply.verify import reaudit
from scaleguard.findings.model import Status
from scaleguard.lab.dispatch import dispatch
from scaleguard.lab.process import LabProcess
from scaleguard.lab.serve import PASSWORD_ENV
from scaleguard.lab.state import ActionError, LabNode

PASSWORD = "Lab-" + secrets.token_urlsafe(12)
EXPIRING_MASTER = {"cn": ["master01.contoso.test", "MASTER01", "10.0.1.1"], "days_from": -700, "days": 710}
RUN_A, RUN_B = "20260101T000000-aaaa", "20260101T000000-bbbb"


def acquire(node: LabNode, run_id: str, ttl: int = 60, **extra: Any) -> dict[str, Any]:
    request = {"op": "lease_acquire", "run_id": run_id, "operator": "ops", "host": "desk1", "ttl_s": ttl, **extra}
    return dispatch(node, request)


@pytest.fixture
def node() -> LabNode:
    return LabNode(name="MASTER01", cluster="C")


def test_a_held_lease_is_refused_naming_its_holder(node: LabNode) -> None:
    assert acquire(node, RUN_A)["acquired"] is True
    refused = acquire(node, RUN_B)
    assert refused["acquired"] is False
    assert refused["holder"]["run_id"] == RUN_A and refused["holder"]["operator"] == "ops"
    assert refused["holder"]["expired"] is False
    with pytest.raises(ActionError, match="not held by"):
        dispatch(node, {"op": "lease_renew", "run_id": RUN_B, "ttl_s": 60})
    assert dispatch(node, {"op": "lease_release", "run_id": RUN_B})["released"] is False
    assert node.lease is not None and node.lease["run_id"] == RUN_A
    assert dispatch(node, {"op": "lease_renew", "run_id": RUN_A, "ttl_s": 60})["renewed"] is True
    assert dispatch(node, {"op": "lease_release", "run_id": RUN_A})["released"] is True
    assert acquire(node, RUN_B)["acquired"] is True


def test_only_an_expired_lease_can_be_broken(node: LabNode) -> None:
    acquire(node, RUN_A, ttl=1)
    with pytest.raises(ActionError, match="has not expired"):
        dispatch(node, {"op": "lease_break", "holder": RUN_A})
    time.sleep(1.1)
    assert acquire(node, RUN_B)["holder"]["expired"] is True  # expired is still held until broken
    with pytest.raises(ActionError, match="now held by"):
        dispatch(node, {"op": "lease_break", "holder": RUN_B})
    assert dispatch(node, {"op": "lease_break", "holder": RUN_A})["broken"] is True
    assert acquire(node, RUN_B)["acquired"] is True


def test_an_undo_takes_over_the_lease_of_the_run_it_undoes(node: LabNode) -> None:
    acquire(node, RUN_A)
    assert acquire(node, RUN_B, replaces=RUN_A)["acquired"] is True
    assert acquire(node, "20260101T000000-cccc", replaces=RUN_A)["acquired"] is False


@pytest.mark.parametrize(
    "request_",
    [
        {"run_id": "x; rm -rf", "operator": "ops", "host": "h", "ttl_s": 5},
        {"run_id": RUN_A, "operator": "o'; drop", "host": "h", "ttl_s": 5},
        {"run_id": RUN_A, "operator": "ops", "host": "h", "ttl_s": 0},
        {"run_id": RUN_A, "operator": "ops", "host": "h", "ttl_s": "60"},
    ],
)
def test_lease_values_are_validated(node: LabNode, request_: dict[str, Any]) -> None:
    with pytest.raises(ActionError):
        dispatch(node, {"op": "lease_acquire", **request_})
    assert node.lease is None


def test_a_batch_runs_in_order_and_stops_at_the_first_failure(node: LabNode) -> None:
    from scaleguard.lab.state import LabService

    node.services = [LabService(name="SSISScaleOutMaster150", state="Running", start_mode="Auto")]
    node.faults.fail_ops = {"set_service_start_mode": 1}
    answer = dispatch(
        node,
        {
            "op": "batch",
            "actions": [
                {"op": "stop_service", "name": "SSISScaleOutMaster150", "wait_s": 5},
                {"op": "set_service_start_mode", "name": "SSISScaleOutMaster150", "mode": "Manual"},
                {"op": "start_service", "name": "SSISScaleOutMaster150", "wait_s": 5},
            ],
        },
    )
    assert [r["ok"] for r in answer["results"]] == [True, False]
    assert "injected" in answer["results"][1]["error"]
    assert node.services[0].state == "Stopped"  # the third action never ran


@pytest.mark.parametrize("op", ["batch", "lease_acquire", "collect", "no_such_op"])
def test_a_batch_refuses_what_cannot_be_batched_before_running_anything(node: LabNode, op: str) -> None:
    from scaleguard.lab.state import LabService

    node.services = [LabService(name="SSISScaleOutMaster150", state="Running", start_mode="Auto")]
    actions = [{"op": "stop_service", "name": "SSISScaleOutMaster150", "wait_s": 5}, {"op": op}]
    with pytest.raises(ActionError, match="cannot hold"):
        dispatch(node, {"op": "batch", "actions": actions})
    assert node.services[0].state == "Running"


# --- whole runs, as processes -----------------------------------------------------------------------------


class FixProcess:
    """``scaleguard fix`` in a process of its own; stderr is gathered line by line as it comes."""

    def __init__(self, inventory: Path, journal: Path, *args: str) -> None:
        command = [
            sys.executable, "-c", "from scaleguard.cli.main import app; app()", "fix", "--inventory", str(inventory),
            "--journal", str(journal), *args,
        ]
        env = {**os.environ, PASSWORD_ENV: PASSWORD, "COLUMNS": "200"}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output)
            if found:
                return found
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} never appeared:\n{self.output}")

    def wait(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code


@pytest.fixture
def running(tmp_path: Path) -> Any:
    spec = {"workers": [f"WORKER{i:02d}" for i in range(1, 7)], "certs": {"master": EXPIRING_MASTER}}
    cluster = Cluster(spec, tmp_path)
    with LabProcess(cluster.evidence, tmp_path / "lab", PASSWORD, exec_ms=500) as lab:
        yield lab


def failing(inventory: Path) -> set[tuple[str, str]]:
    os.environ[PASSWORD_ENV] = PASSWORD
    _snapshot, found = reaudit(inventory)
    return {(f.policy, f.node) for f in found if f.status in (Status.FAIL, Status.ERROR)}


@pytest.mark.lab
def test_a_second_concurrent_run_refuses_at_once_naming_the_holder(running: Any, tmp_path: Path) -> None:
    first = FixProcess(running.inventory, tmp_path / "operator1.sqlite", "--apply", "--yes", "--concurrency", "2")
    holder = first.wait_for(r"run (\S+) holds the lease").group(1)
    first.wait_for(r"done s001 MASTER01 create_certificate")
    started = time.monotonic()
    second = FixProcess(running.inventory, tmp_path / "operator2.sqlite", "--apply", "--yes")
    assert second.wait() == 1, second.output
    assert time.monotonic() - started < 10
    assert holder in second.output and "Nothing was changed" in second.output
    assert not (tmp_path / "operator2.sqlite").exists()  # it journaled (and so sent) no action at all
    assert first.process.poll() is None  # the first run was still going meanwhile
    assert first.wait() == 0, first.output
    assert failing(running.inventory) == set()


@pytest.mark.lab
def test_a_killed_parallel_run_is_fully_undone_and_undo_releases_its_lease(running: Any, tmp_path: Path) -> None:
    os.environ[PASSWORD_ENV] = PASSWORD
    before_snapshot, before = reaudit(running.inventory)
    journal = tmp_path / "j.sqlite"
    run = FixProcess(running.inventory, journal, "--apply", "--yes", "--concurrency", "3")
    run_id = run.wait_for(r"run (\S+) holds the lease").group(1)
    run.wait_for(r"done s0\d\d WORKER0\d import_certificate")
    run.process.send_signal(signal.SIGKILL)
    run.wait()
    middle, _ = reaudit(running.inventory)
    assert _trust(middle) != _trust(before_snapshot)

    refused = FixProcess(running.inventory, tmp_path / "other.sqlite", "--apply", "--yes")
    assert refused.wait() == 1 and run_id in refused.output  # the dead run still holds the lease

    undo = FixProcess(running.inventory, journal, "--undo", run_id, "--yes")
    assert undo.wait() == 0, undo.output
    after_snapshot, after = reaudit(running.inventory)
    assert _trust(after_snapshot) == _trust(before_snapshot)
    assert {(f.policy, f.node, f.status) for f in after} == {(f.policy, f.node, f.status) for f in before}
    again = FixProcess(running.inventory, tmp_path / "other.sqlite", "--apply", "--yes")
    assert again.wait() == 0, again.output  # the undo released the lease: the next run goes ahead
    assert failing(running.inventory) == set()


@pytest.mark.lab
def test_a_killed_runs_lease_expires_and_break_lease_takes_it(running: Any, tmp_path: Path) -> None:
    run = FixProcess(
        running.inventory, tmp_path / "a.sqlite", "--apply", "--yes", "--lease-ttl", "3", "--concurrency", "3"
    )
    run_id = run.wait_for(r"run (\S+) holds the lease").group(1)
    run.wait_for(r"done s0\d\d WORKER0\d import_certificate")
    run.process.send_signal(signal.SIGKILL)
    run.wait()
    time.sleep(3.5)  # nobody renews it any more
    held = FixProcess(running.inventory, tmp_path / "b.sqlite", "--apply", "--yes")
    assert held.wait() == 1 and run_id in held.output and "expired" in held.output and "--break-lease" in held.output
    broken = FixProcess(running.inventory, tmp_path / "b.sqlite", "--apply", "--yes", "--break-lease")
    assert broken.wait() == 0, broken.output
    assert f"broke the expired lease of run {run_id}" in broken.output
    assert failing(running.inventory) == set()  # the drift checks carried on from where the dead run stopped


def _trust(snapshot: Any) -> dict[str, Any]:
    return {
        node.name: (
            node.master_config.settings if node.master_config else None,
            node.worker_config.settings if node.worker_config else None,
            sorted(c.thumbprint for c in node.root.certificates) if node.root else None,
            sorted(c.thumbprint for c in node.my.certificates) if node.my else None,
            sorted((b.ip_port, b.cert_hash, b.cert_store) for b in node.bindings or []),
        )
        for cluster in snapshot.clusters
        for node in cluster.nodes
    }


class AnsweringMaster:
    """A master whose agent answers every ``lease_acquire`` with ``answer`` (node data, maybe hostile)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.sent: list[dict[str, Any]] = []

    def client(self, cluster: str, node: str) -> Any:
        outer = self

        class Client:
            def request(self, payload: dict[str, Any]) -> Any:
                outer.sent.append(payload)
                return outer.answer if payload["op"] == "lease_acquire" else {}

        return Client()

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "answer",
    [
        {"acquired": "no"},
        {"acquired": 1},
        {},
        {"acquired": False, "holder": "xyz"},  # dict("xyz") raised ValueError
        {"acquired": False, "holder": [1, 2]},  # dict([1, 2]) raised TypeError
        {"acquired": False, "holder": {"run_id": "r0", "expired": "yes"}},  # not an expired lease to break
    ],
)
def test_only_a_plain_yes_takes_the_lease_and_a_held_answer_is_never_broken_on_a_guess(answer: Any) -> None:
    from scaleguard.apply.lease import ClusterLease, LeaseHeld

    master = AnsweringMaster(answer)
    lease = ClusterLease(master, [("C", "M1")], run_id="r1")  # type: ignore[arg-type]
    with pytest.raises(LeaseHeld, match="C is being fixed: M1 holds the lease of run"):
        lease.acquire(break_expired=True)
    assert lease.held == []
    assert "lease_break" not in [request["op"] for request in master.sent]
