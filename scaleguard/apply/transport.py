"""How fix actions reach a node: the node agent's ``actions.ps1`` over the collector's WinRM channel.

The command line and the script are the same for every action (the ``-EncodedCommand`` bootstrap, then
``actions.ps1`` on stdin); only the JSON request after the NUL separator differs. That is the property the
tests pin down: no value from a plan — thumbprint, host name, account — can ever become PowerShell source.

Actions are not idempotent, so a fault while an action may already be running is never retried
(:class:`HostChannel` with ``idempotent=False``); it surfaces as :class:`OutcomeUnknown`.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from scaleguard.collectors.agent import agent_script, bootstrap_command, stdin_payload
from scaleguard.collectors.live import plan_jobs
from scaleguard.remediators.actions import AGENT_OP
from scaleguard.remoting.channel import ChannelError, HostChannel, describe_stderr
from scaleguard.remoting.credentials import CredentialResolver
from scaleguard.remoting.inventory import Inventory, load_inventory

CLOSE_PARALLEL = 50

AGENT_OPS = (
    *dict.fromkeys(AGENT_OP.values()),
    "read_file",
    "set_config_setting",
    "restore_file",
    "restore_certificate",
    "delete_binding",
    "revoke_key_read",
    "stop_service",
    "delete_schannel_value",
    "lease_acquire",
    "lease_renew",
    "lease_release",
    "lease_break",
)
"""Every operation ``actions.ps1`` answers: those plan actions run as, and those reads and inverses need."""


class ActionFailed(Exception):
    """The node refused or failed the action; it reports the node unchanged by it."""


class OutcomeUnknown(Exception):
    """The node could not be asked or did not answer: the action may or may not have happened."""


class PartialChange(OutcomeUnknown):
    """The agent changed something and could neither finish nor undo it (exit code 3).

    ``result`` is what it reported finding before it started (the previous binding, whether the service was
    running...), so rollback can put that back; None when it could not say.
    """

    def __init__(self, message: str, result: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.result = result


class NodeClient(Protocol):
    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one action; raise :class:`ActionFailed` or :class:`OutcomeUnknown`."""


class Transport(Protocol):
    def client(self, cluster: str, node: str) -> NodeClient:
        """The client for one node (raises :class:`OutcomeUnknown` when the node is not known)."""

    def close(self) -> None: ...


@lru_cache(maxsize=1)
def actions_script() -> str:
    """``actions.ps1`` (ASCII only, so no console code page can alter it on its way)."""
    return resources.files("scaleguard.apply.agent").joinpath("actions.ps1").read_text(encoding="ascii")


_ROUND_THEN_READ = """# scaleguard: a fix round, then a read of the node, in one PowerShell run (no value is code here).
# The request is actions.ps1's (a batch, or the lease) with a "collect" member, collect.ps1's. Each agent
# runs in a runspace of its own (its 'exit' ends only that runspace) and prints its JSON document on
# stdout; scaleguard reads the two documents one after the other. A round that fails exits with its code.
param([string]$RequestJson)
$ErrorActionPreference = 'Stop'
$request = $RequestJson | ConvertFrom-Json
$collectJson = ConvertTo-Json -InputObject $request.collect -Depth 4 -Compress
$actionsScript = @'
{actions}
'@
$collectScript = @'
{collect}
'@
foreach ($pair in @(@($actionsScript, $RequestJson), @($collectScript, $collectJson))) {
    $runspace = [System.Management.Automation.Runspaces.RunspaceFactory]::CreateRunspace()
    $shell = [PowerShell]::Create()
    try {
        $runspace.Open()
        $shell.Runspace = $runspace
        [void]$shell.AddScript($pair[0]).AddArgument($pair[1])
        [void]$shell.Invoke()
        if ($shell.HadErrors) { exit 1 }
        # 'exit' there gave no exit code (the runspace's host ignores it), so actions.ps1's is read from
        # its $AgentExitCode: a round that failed ends with it, and the node is not read after it
        $code = $runspace.SessionStateProxy.GetVariable('AgentExitCode')
        if (($null -ne $code) -and ($code -ne 0)) { exit $code }
    } finally { $shell.Dispose(); $runspace.Dispose() }
}
exit 0
"""


@lru_cache(maxsize=1)
def round_then_read_script() -> str:
    """The script of a node's last round: ``actions.ps1`` then ``collect.ps1`` in one PowerShell run, so
    the read that verifies the fix costs no round of its own."""
    actions, collect = actions_script(), agent_script("collect.ps1")
    for text in (actions, collect):
        if "'@" in text or "@'" in text:
            raise RuntimeError("an agent script holds a here-string delimiter; it cannot be embedded")
    return _ROUND_THEN_READ.replace("{actions}", actions).replace("{collect}", collect)


SECRET_FIELDS = ("password",)
"""Request fields that never travel in the JSON (see :func:`stdin_payload`)."""
SERVICE_OPS = frozenset({"start_service", "stop_service", "restart_service"})
EXIT_PARTIAL = 3


def action_payload(request: dict[str, Any]) -> tuple[str, bytes]:
    """(command line, stdin) for one action: fixed bootstrap and script, the request as JSON data and its
    secret, if any, after it (never inside the JSON)."""
    found: list[str] = []
    data = _without_secrets(request, found)
    if isinstance(data.get("actions"), list):
        data["actions"] = [_without_secrets(a, found) if isinstance(a, dict) else a for a in data["actions"]]
    if len(set(found)) > 1:
        raise ActionFailed("one agent round can carry one secret; these actions must be sent apart")
    secret = found[0] if found else None
    # a round that also reads the node runs both agents in one PowerShell run; one with a secret does
    # not (the secret is the bootstrap's, for actions.ps1 alone): its node is read on its own afterwards
    script = round_then_read_script() if "collect" in data and secret is None else actions_script()
    if "collect" in data and secret is not None:
        data = {k: v for k, v in data.items() if k != "collect"}
    return bootstrap_command(), stdin_payload(data, script=script, secret=secret)


def _without_secrets(request: dict[str, Any], found: list[str]) -> dict[str, Any]:
    found += [request[k] for k in SECRET_FIELDS if isinstance(request.get(k), str)]
    return {k: v for k, v in request.items() if k not in SECRET_FIELDS}


def agent_request(payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The request as the agent gets it: service actions carry how long they may wait (``wait_s``).

    In a batch every service action gets the whole wait too: the agent's batch stops at the first one that
    times out, so at most one wait is used up, and the caller's deadline for a batch is its own concern."""
    if payload.get("op") == "batch" and isinstance(payload.get("actions"), list):
        return {
            **payload,
            "actions": [agent_request(a, timeout_s) if isinstance(a, dict) else a for a in payload["actions"]],
        }
    if payload.get("op") in SERVICE_OPS:
        return {**payload, "wait_s": service_wait_s(timeout_s)}
    return payload


def service_wait_s(timeout_s: float) -> int:
    """How long the agent may wait for a service state: well inside the channel deadline (shell start-up,
    the stop and the start of a restart each need their share), so a hung service is the action's own
    definite error, never the channel giving up."""
    return max(1, int(timeout_s * 0.4))


def read_documents(stdout: bytes) -> list[Any]:
    """The JSON document(s) an agent run printed, one after the other."""
    text = stdout.decode("utf-8", errors="replace").strip()
    decoder = json.JSONDecoder()
    documents, index = [], 0
    while index < len(text):
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
        while index < len(text) and text[index].isspace():
            index += 1
    return documents


class AgentClient:
    def __init__(self, channel: HostChannel, *, timeout_s: float, name: str) -> None:
        self.channel = channel
        self.timeout_s = timeout_s
        self.name = name

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        command, stdin = action_payload(agent_request(payload, self.timeout_s))
        self.channel.deadline = time.monotonic() + self.timeout_s
        try:
            result = self.channel.run(command, stdin, idempotent=False)
        except ChannelError as exc:
            raise OutcomeUnknown(f"{self.name}: {exc.reason}") from exc
        reason = describe_stderr(result.stderr) or f"exit code {result.exit_code}"
        if result.exit_code == EXIT_PARTIAL:
            raise PartialChange(f"{self.name}: {reason}", _partial_result(result.stdout))
        if result.exit_code != 0:
            raise ActionFailed(reason)
        try:
            documents = read_documents(result.stdout)
        except (ValueError, RecursionError) as exc:  # node data: a 5,000-digit number, brackets 100,000 deep
            raise OutcomeUnknown(f"{self.name}: the agent's answer is not JSON") from exc
        if not documents or not all(isinstance(d, dict) for d in documents) or len(documents) > 2:
            raise OutcomeUnknown(f"{self.name}: the agent's answer is not a JSON object")
        answer: dict[str, Any] = documents[0]
        if len(documents) == 2 and "collect" in payload:  # a round with the read after it
            answer = {**answer, "collect": documents[1]}
        return answer


def inventory_of(path: Path) -> Inventory:
    """The parsed inventory, read once per run by everyone who needs it (the lease, the actions, the
    verification): a 200-node YAML takes a third of a second to parse. A changed file is read again."""
    try:
        stat = path.stat()
    except OSError:
        return load_inventory(path)  # says what is wrong with it
    return _parsed_inventory(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _parsed_inventory(path: str, _mtime_ns: int, _size: int) -> Inventory:
    return load_inventory(Path(path))


class WinRMTransport:
    """One channel per node of an inventory, opened on first use and kept for the whole run."""

    def __init__(self, inventory: Path, *, insecure: bool = False) -> None:
        jobs = plan_jobs(inventory_of(inventory), insecure=insecure, resolver=CredentialResolver())
        self._jobs = {(job.cluster.name.lower(), job.node.name.lower()): job for job in jobs}
        self._clients: dict[tuple[str, str], AgentClient] = {}

    def client(self, cluster: str, node: str) -> NodeClient:
        key = (cluster.lower(), node.lower())
        if key not in self._clients:
            job = self._jobs.get(key) or next((j for (c, n), j in self._jobs.items() if n == node.lower()), None)
            if job is None:
                raise OutcomeUnknown(f"{cluster}/{node} is not in the inventory")
            channel = HostChannel(job.settings, deadline=time.monotonic() + job.timeout_s)
            self._clients[key] = AgentClient(channel, timeout_s=job.timeout_s, name=f"{cluster}/{node}")
        return self._clients[key]

    def close(self) -> None:
        """Delete every shell, many at once: one at a time, 200 nodes at 50 ms a round trip take 10 s."""
        clients = list(self._clients.values())
        self._clients.clear()
        if not clients:
            return
        with ThreadPoolExecutor(max_workers=min(CLOSE_PARALLEL, len(clients)), thread_name_prefix="close") as pool:
            list(pool.map(lambda client: client.channel.close(), clients))


def _partial_result(stdout: bytes) -> dict[str, Any] | None:
    """The ``result`` of the agent's ``{"partial": true, "result": ...}`` answer, if it is an object."""
    try:
        answer = json.loads(stdout.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return None
    inner = answer.get("result") if isinstance(answer, dict) else None
    return inner if isinstance(inner, dict) else None
