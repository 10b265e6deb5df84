"""The lab's WS-Management server against the real pywinrm client (in-process, for the protocol details).

The end-to-end tests (``test_live_lab.py``) run the lab in its own process; here one host is served in
this process so single exchanges can be inspected: long polls, faults, authentication.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from winrm.exceptions import InvalidCredentialsError, WinRMOperationTimeoutError, WSManFaultError
from winrm.protocol import Protocol

from scaleguard.collectors.agent import bootstrap_command, stdin_payload
from scaleguard.lab.evidence import NodeEvidence
from scaleguard.lab.from_evidence import load_state
from scaleguard.lab.state import LabFaults
from scaleguard.lab.wsman import soap
from scaleguard.lab.wsman.auth import Accounts
from scaleguard.lab.wsman.host import SimulatedHost
from scaleguard.lab.wsman.server import Acceptor, HostServer

PASSWORD = "lab-Pa55-" + base64.b16encode(os.urandom(4)).decode()


@dataclass
class Served:
    url: str
    host: SimulatedHost


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wsman")
    return NodeEvidence(name="W1", worker_settings={"MasterEndpoint": "https://M1:8391"}).write(folder)


def serve(
    node_dir: Path, *, auth: str = "basic", exec_s: float = 0.0, faults: LabFaults | None = None
) -> Iterator[Served]:
    [node] = load_state(node_dir.parent).nodes()
    node.faults = faults or LabFaults()
    stop = threading.Event()
    host = SimulatedHost(node, exec_s=exec_s, address="http://127.0.0.1/wsman", stop=stop)
    accounts = Accounts("scaleguard", PASSWORD)
    server = HostServer(("127.0.0.1", 0), host, accounts=accounts, auth=auth, latency_s=0.0, tls=None)  # type: ignore[arg-type]
    acceptor = Acceptor([server])
    acceptor.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_address[1]}/wsman", host)
    finally:
        stop.set()
        acceptor.stop()
        accounts.cleanup()


@pytest.fixture
def basic_host(node_dir: Path) -> Iterator[Served]:
    yield from serve(node_dir, exec_s=0.4)


def protocol(
    url: str, *, auth: str = "basic", password: str = PASSWORD, operation_timeout: int = 5
) -> Protocol:
    return Protocol(
        url,
        transport=auth,
        username="scaleguard",
        password=password,
        proxy=None,
        ca_trust_path=None,  # type: ignore[arg-type]
        operation_timeout_sec=operation_timeout,
        read_timeout_sec=operation_timeout + 5,
    )


def run_agent(p: Protocol) -> tuple[bytes, bytes, int]:
    shell = p.open_shell(codepage=65001)
    command = p.run_command(shell, bootstrap_command(), console_mode_stdin=False)
    p.send_command_input(shell, command, stdin_payload({"op": "collect"}), end=True)
    result = p.get_command_output(shell, command)
    p.cleanup_command(shell, command)
    p.close_shell(shell)
    return result


def test_receive_long_polls_until_the_command_is_done(basic_host: Served) -> None:
    p = protocol(basic_host.url)
    shell = p.open_shell()
    command = p.run_command(shell, bootstrap_command(), console_mode_stdin=False)
    p.send_command_input(shell, command, stdin_payload({"op": "collect"}), end=True)
    started = time.monotonic()
    stdout, _stderr, code, done = p.get_command_output_raw(shell, command)
    waited = time.monotonic() - started
    assert done and code == 0 and stdout.startswith(b'{"schema":"scaleguard-agent/1"')
    assert 0.2 < waited < 2.0  # held until --exec-ms passed, answered at once then (no busy loop)
    p.close_shell(shell)


def test_receive_times_out_with_the_documented_fault_and_the_client_asks_again(node_dir: Path) -> None:
    for served in serve(node_dir, exec_s=1.6):
        p = protocol(served.url, operation_timeout=1)
        shell = p.open_shell()
        command = p.run_command(shell, bootstrap_command(), console_mode_stdin=False)
        p.send_command_input(shell, command, stdin_payload({"op": "collect"}), end=True)
        with pytest.raises(WinRMOperationTimeoutError):
            p.get_command_output_raw(shell, command)
        _out, _err, code, done = p.get_command_output_raw(shell, command)
        assert done and code == 0


def test_unknown_shell_and_signal_delete_round_trip(basic_host: Served) -> None:
    p = protocol(basic_host.url)
    with pytest.raises(WSManFaultError) as caught:
        p.run_command("NO-SUCH-SHELL", "ipconfig")
    assert caught.value.wsman_fault_code == soap.SHELL_NOT_FOUND
    stdout, stderr, code = run_agent(p)  # Signal and Delete echo RelatesTo, or pywinrm would assert
    assert code == 0 and stderr == b"" and basic_host.host.open_shells() == 0


def test_commands_other_than_the_agent_fail_like_windows(basic_host: Served) -> None:
    p = protocol(basic_host.url)
    shell = p.open_shell()
    command = p.run_command(shell, "ipconfig", ["/all"])
    _out, stderr, code = p.get_command_output(shell, command)
    assert code == 1 and b"'ipconfig' is not recognized" in stderr
    script = base64.b64encode("Remove-Item C:\\ -Recurse".encode("utf-16-le")).decode()
    command = p.run_command(shell, f"powershell -EncodedCommand {script}")
    _out, stderr, code = p.get_command_output(shell, command)
    assert code == 1 and stderr.startswith(b"#< CLIXML") and b"does not run PowerShell" in stderr


def test_quota_and_expired_shell_faults_carry_their_codes(node_dir: Path) -> None:
    for served in serve(node_dir, faults=LabFaults(quota_faults=1, expired_shells=1)):
        p = protocol(served.url)
        shell = p.open_shell()
        with pytest.raises(WSManFaultError) as quota:
            p.run_command(shell, bootstrap_command(), console_mode_stdin=False)
        assert quota.value.wmierror_code == soap.QUOTA_MAX_OPERATIONS
        command = p.run_command(shell, bootstrap_command(), console_mode_stdin=False)  # shell 1 now expires
        with pytest.raises(WSManFaultError) as expired:
            p.send_command_input(shell, command, stdin_payload({"op": "collect"}), end=True)
        assert expired.value.wsman_fault_code == soap.SHELL_NOT_FOUND
        assert run_agent(p)[2] == 0  # a new shell works


def test_basic_auth_refuses_missing_and_wrong_credentials(basic_host: Served) -> None:
    assert requests.post(basic_host.url, data=b"<x/>", timeout=5).status_code == 401
    with pytest.raises(InvalidCredentialsError):
        protocol(basic_host.url, password="wrong").open_shell()


def test_ntlm_with_message_encryption(node_dir: Path) -> None:
    for served in serve(node_dir, auth="ntlm"):
        p = protocol(served.url, auth="ntlm")
        stdout, _stderr, code = run_agent(p)
        assert code == 0 and b"scaleguard-agent/1" in stdout
        assert p.transport.encryption is not None  # the SOAP bodies travelled sealed
        with pytest.raises(InvalidCredentialsError):
            protocol(served.url, auth="ntlm", password="wrong").open_shell()
