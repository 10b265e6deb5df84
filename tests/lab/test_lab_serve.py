"""``scaleguard lab serve`` as a user runs it: its own process, an inventory to use as is, clean shutdown."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scaleguard.lab.process import LabProcess
from scaleguard.lab.scenario import demo_scenario
from scaleguard.lab.serve import PASSWORD_ENV
from scaleguard.remoting.inventory import load_inventory

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("serve") / "fabrikam"
    demo_scenario(1, seed=5).write(folder)
    return folder


def free_port_block(size: int) -> int:
    """A base port with ``size`` free ports after it (best effort: checked, then released).

    The search starts at a random port: suites run side by side on one machine would otherwise all pick the
    same first block, and one suite's lab would answer on the port another suite has just seen freed."""
    start = random.SystemRandom().randrange(20000, 60000)
    for base in [*range(start, 60000, 97), *range(20000, start, 97)]:
        sockets = []
        try:
            for offset in range(size):
                sock = socket.socket()
                sock.bind(("127.0.0.1", base + offset))
                sockets.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port block")


@pytest.fixture(scope="module")
def lab(evidence: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    process = LabProcess(
        evidence, tmp_path_factory.mktemp("serve-lab"), "Serve-Pa55", https=True, auth="ntlm"
    )
    with process:
        yield process


def test_the_inventory_is_usable_as_written(lab: LabProcess) -> None:
    inventory = load_inventory(lab.inventory)
    [cluster] = inventory.clusters
    assert cluster.name == "fabrikam"
    assert [(n.name, n.roles) for n in cluster.nodes] == [
        ("MASTER01", ("master",)),
        ("WORKER01", ("worker",)),
    ]
    transport = cluster.nodes[0].transport
    assert (transport.scheme, transport.auth, transport.username) == ("https", "ntlm", "scaleguard")
    assert transport.credential is not None and transport.credential.name == PASSWORD_ENV
    assert transport.ca_bundle is not None and transport.ca_bundle.read_bytes().startswith(
        b"-----BEGIN CERTIFICATE"
    )
    assert "Serve-Pa55" not in lab.inventory.read_text(encoding="utf-8")
    assert f"password from ${PASSWORD_ENV}" in lab.log()  # tells the user which variable, not the value
    assert "Serve-Pa55" not in lab.log()


def test_sigterm_stops_the_lab_and_frees_its_ports(evidence: Path, tmp_path: Path) -> None:
    base = free_port_block(2)
    process = LabProcess(evidence, tmp_path, "pw", port_base=base)
    process.start()
    ports = [
        n["port"]
        for c in yaml.safe_load(process.inventory.read_text(encoding="utf-8"))["clusters"]
        for n in [*c["masters"], *c["workers"]]
    ]
    assert ports == [base, base + 1]
    with socket.create_connection(("127.0.0.1", base), timeout=5):
        pass
    assert process.stop() == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", base), timeout=2).close()
    for port in ports:  # nothing listens any more: the port can be bound again (TIME_WAIT aside)
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))
            again.listen()


def test_the_lab_refuses_to_start_without_its_password(evidence: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaleguard.cli.main",
            "lab",
            "serve",
            "--evidence",
            str(evidence),
            "--inventory-out",
            str(tmp_path / "inventory.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert PASSWORD_ENV in result.stderr
    assert not (tmp_path / "inventory.yaml").exists()
