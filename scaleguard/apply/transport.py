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
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from scaleguard.collectors.agent import bootstrap_command, stdin_payload
from scaleguard.remediators.actions import AGENT_OP
from scaleguard.remoting.channel import ChannelError, HostChannel, describe_stderr
from scaleguard.remoting.inventory import load_inventory

AGENT_OPS = (
    *dict.fromkeys(AGENT_OP.values()),
    "read_file",
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


def action_payload(request: dict[str, Any]) -> tuple[str, bytes]:
    """(command line, stdin) for one action: fixed bootstrap and script, the request as JSON data."""
    return bootstrap_command(), stdin_payload(request, script=actions_script())


class AgentClient:
    def __init__(self, channel: HostChannel, *, timeout_s: float, name: str) -> None:
        self.channel = channel
        self.timeout_s = timeout_s
        self.name = name

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        command, stdin = action_payload(payload)
        self.channel.deadline = time.monotonic() + self.timeout_s
        try:
            result = self.channel.run(command, stdin, idempotent=False)
        except ChannelError as exc:
            raise OutcomeUnknown(f"{self.name}: {exc.reason}") from exc
        if result.exit_code != 0:
            raise ActionFailed(describe_stderr(result.stderr) or f"exit code {result.exit_code}")
        try:
            answer = json.loads(result.stdout.decode("utf-8", errors="replace"))
        except ValueError as exc:
            raise OutcomeUnknown(f"{self.name}: the agent's answer is not JSON") from exc
        if not isinstance(answer, dict):
            raise OutcomeUnknown(f"{self.name}: the agent's answer is not a JSON object")
        return answer


class WinRMTransport:
    """One channel per node of an inventory, opened on first use and kept for the whole run."""

    def __init__(self, inventory: Path, *, insecure: bool = False, resolver: Any = None) -> None:
        from scaleguard.collectors.live import plan_jobs
        from scaleguard.remoting.credentials import CredentialResolver

        jobs = plan_jobs(load_inventory(inventory), insecure=insecure, resolver=resolver or CredentialResolver())
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
        for client in self._clients.values():
            client.channel.close()
        self._clients.clear()
