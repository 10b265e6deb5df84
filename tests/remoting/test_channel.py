"""HostChannel: one shell per host, recovery from documented faults, a hard deadline, clear reasons."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from winrm.exceptions import InvalidCredentialsError, WinRMTransportError

from scaleguard.collectors.agent import bootstrap_command, stdin_payload
from scaleguard.lab.evidence import NodeEvidence
from scaleguard.lab.state import LabFaults
from scaleguard.remoting.channel import (
    ChannelError,
    ChannelSettings,
    HostChannel,
    classify,
    describe_stderr,
)
from scaleguard.remoting.credentials import Secret
from scaleguard.snapshot.model import CollectionState
from tests.lab.test_lab_wsman import PASSWORD, serve

REQUEST = stdin_payload({"op": "collect"})


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return NodeEvidence(name="W1", worker_settings={"MasterEndpoint": "https://M1:8391"}).write(
        tmp_path_factory.mktemp("channel")
    )


def settings(url: str, **changes: object) -> ChannelSettings:
    values: dict[str, object] = {
        "endpoint": url,
        "auth": "basic",
        "username": "scaleguard",
        "password": Secret(PASSWORD),
        "operation_timeout_s": 1,
    }
    values.update(changes)
    return ChannelSettings(**values)  # type: ignore[arg-type]


def test_several_commands_share_one_shell(node_dir: Path) -> None:
    for served in serve(node_dir):
        with HostChannel(settings(served.url), deadline=time.monotonic() + 10) as channel:
            for _ in range(3):
                assert channel.run(bootstrap_command(), REQUEST).exit_code == 0
            assert channel.shells_opened == 1
        assert served.host.open_shells() == 0  # close() deleted it


def test_an_expired_shell_is_replaced_and_the_idempotent_command_re_run(node_dir: Path) -> None:
    for served in serve(node_dir, faults=LabFaults(expired_shells=1)):
        with HostChannel(settings(served.url), deadline=time.monotonic() + 10) as channel:
            result = channel.run(bootstrap_command(), REQUEST, idempotent=True)
        assert result.exit_code == 0 and result.shells_opened == 2
        assert result.recoveries == ["fault 2150858843: shell re-created"]


def test_a_command_that_may_have_run_is_not_re_run(node_dir: Path) -> None:
    for served in serve(node_dir, faults=LabFaults(expired_shells=1)):
        with (
            HostChannel(settings(served.url), deadline=time.monotonic() + 10) as channel,
            pytest.raises(ChannelError) as caught,
        ):
            channel.run(bootstrap_command(), REQUEST, idempotent=False)
        assert caught.value.state is CollectionState.FAILED
        assert "not re-run (not idempotent), the node state is unknown" in caught.value.reason


def test_the_deadline_is_hard_even_when_the_host_keeps_long_polling(node_dir: Path) -> None:
    for served in serve(node_dir, faults=LabFaults(hang="receive")):
        started = time.monotonic()
        with (
            HostChannel(settings(served.url), deadline=started + 1.5) as channel,
            pytest.raises(ChannelError) as caught,
        ):
            channel.run(bootstrap_command(), REQUEST)
        assert caught.value.state is CollectionState.TIMED_OUT
        assert "while waiting for the agent's output" in caught.value.reason
        assert time.monotonic() - started < 3.0


def test_wrong_password_is_auth_refused(node_dir: Path) -> None:
    for served in serve(node_dir):
        with (
            HostChannel(
                settings(served.url, password=Secret("nope")), deadline=time.monotonic() + 5
            ) as channel,
            pytest.raises(ChannelError) as caught,
        ):
            channel.run(bootstrap_command(), REQUEST)
        assert caught.value.state is CollectionState.AUTH_REFUSED
        assert "nope" not in caught.value.reason


@pytest.mark.parametrize(
    ("error", "state", "words"),
    [
        (InvalidCredentialsError("x"), CollectionState.AUTH_REFUSED, "refused the credentials of scaleguard"),
        (PermissionError("Access denied: no challenge"), CollectionState.AUTH_REFUSED, "logon failed"),
        (
            requests.exceptions.SSLError("certificate verify failed: self-signed certificate (_ssl.c:1006)"),
            CollectionState.FAILED,
            "certificate verify failed: self-signed certificate (give the CA",
        ),
        (requests.exceptions.ConnectTimeout("x"), CollectionState.UNREACHABLE, "no TCP connection"),
        (
            requests.exceptions.ConnectionError("[Errno 111] Connection refused"),
            CollectionState.UNREACHABLE,
            "connection refused",
        ),
        (requests.exceptions.ReadTimeout("x"), CollectionState.TIMED_OUT, "did not answer in time"),
        (WinRMTransportError("http", 503, ""), CollectionState.FAILED, "answered HTTP 503"),
        (RuntimeError("boom"), CollectionState.FAILED, "unexpected RuntimeError: boom"),
    ],
)
def test_errors_map_to_states_with_reasons(error: Exception, state: CollectionState, words: str) -> None:
    classified = classify(error, settings("https://h:5986/wsman"))
    assert classified.state is state
    assert words in classified.reason and "https://h:5986/wsman" in classified.reason


def test_powershell_error_streams_are_made_readable() -> None:
    clixml = (
        b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        b'<S S="Error">Access is denied_x000D__x000A_</S>'
        b'<S S="Error">at line 3 &lt;x&gt;_x000D__x000A_</S></Objs>'
    )
    assert describe_stderr(clixml) == "Access is denied at line 3 <x>"
    assert describe_stderr(b"plain text\r\n") == "plain text"
