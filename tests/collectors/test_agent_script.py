"""The node agent and its bootstrap: valid PowerShell, deliverable over stdin, requests kept as data."""

from __future__ import annotations

import base64
import json

import pytest

from scaleguard.collectors.agent import (
    PAYLOAD_SEPARATOR,
    agent_script,
    bootstrap_command,
    bootstrap_script,
    decode_encoded_command,
    split_payload,
    stdin_payload,
)
from scaleguard.collectors.agent.schema import AGENT_SCHEMA, SECTIONS
from tests.powershell_grammar import grammar_problems

CMD_EXE_LIMIT = 8191



@pytest.mark.parametrize("name", ["collect.ps1", "bootstrap.ps1"])
def test_agent_scripts_parse_without_errors(name: str) -> None:
    assert grammar_problems(agent_script(name)) == []


def test_the_grammar_check_does_catch_broken_powershell() -> None:
    broken = "function Get-X {\n    if ($a -eq 1) { 'x'\n"
    assert grammar_problems(broken), "a grammar that accepts everything would make the check above worthless"


@pytest.mark.parametrize("name", ["collect.ps1", "bootstrap.ps1"])
def test_agent_scripts_are_ascii_so_no_code_page_can_alter_them(name: str) -> None:
    agent_script(name).encode("ascii")


def test_the_agent_only_reads() -> None:
    script = agent_script("collect.ps1").lower()
    for verb in (
        "set-item",
        "new-item",
        "remove-item",
        "set-acl",
        "netsh.exe http add",
        "netsh.exe http delete",
        "restart-service",
        "start-service",
        "stop-service",
        "import-certificate",
        "executenonquery",
    ):
        assert verb not in script


def test_the_agent_reads_every_documented_artefact() -> None:
    script = agent_script("collect.ps1")
    for needle in (
        "SslBindingInfo",
        "SslCertHash",
        "SslCertStoreName",
        "netsh.exe http show sslcert",
        "Win32_Service",
        "SSISScaleOut",
        "ClientAuthTrustMode",
        "SendTrustedIssuerList",
        "catalog.master_properties",
        "catalog.worker_agents",
        "MachineKeys",
        "Crypto\\Keys",
        "SQL_IS_Master",
        "MasterSettings.config",
        "WorkerSettings.config",
        "Cert:\\LocalMachine",
    ):
        assert needle in script, needle
    for section in SECTIONS:
        assert f"'{section}'" in script, section
    assert AGENT_SCHEMA in script


def test_the_command_line_is_a_small_fixed_bootstrap() -> None:
    command = bootstrap_command()
    assert len(command) < CMD_EXE_LIMIT // 4
    assert decode_encoded_command(command) == bootstrap_script()
    assert "collect" not in bootstrap_script()  # the bootstrap knows nothing of what it runs


def test_request_travels_as_json_data_after_the_script() -> None:
    request = {"op": "collect", "note": "O'Brien; $(Remove-Item C:\\) `0 ünïcode"}
    payload = stdin_payload(request)
    payload.decode("ascii")  # non-ASCII request text is JSON-escaped, never raw bytes
    script, parsed = split_payload(payload)
    assert script == agent_script()
    assert parsed == request
    assert payload.count(PAYLOAD_SEPARATOR) == 1
    assert request["note"] not in script


def test_split_payload_refuses_a_payload_without_request() -> None:
    with pytest.raises(ValueError):
        split_payload(b"Write-Output 1")
    with pytest.raises(ValueError):
        split_payload(b"x" + PAYLOAD_SEPARATOR + json.dumps([1]).encode())


def test_decode_encoded_command_ignores_other_command_lines() -> None:
    assert decode_encoded_command("ipconfig /all") is None
    encoded = base64.b64encode("Get-Date".encode("utf-16-le")).decode()
    assert decode_encoded_command(f"powershell -encodedcommand {encoded}") == "Get-Date"
