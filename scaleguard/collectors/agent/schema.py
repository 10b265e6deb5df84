"""The agent's JSON document (what ``collect.ps1`` prints), as a strict model.

Validating the whole document before using any of it is what turns "the node printed something odd" into
one clear per-node error (Collection state FAILED) instead of a crash or, worse, half a snapshot. Fields are
raw material only — bytes as base64, registry values as read — and every section may be ``null`` when the
agent could not read it (``errors`` then says why), which the snapshot keeps as *unknown*.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AGENT_SCHEMA = "scaleguard-agent/1"
SECTIONS = ("identity", "sql", "configs", "stores", "bindings", "services", "schannel", "ssisdb")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Lenient(BaseModel):
    """PowerShell objects (services, SSISDB rows) may grow columns; keep what we know, ignore the rest."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AgentError(_Strict):
    source: str
    message: str


class AgentIdentity(_Strict):
    computer_name: str
    fqdn: str | None = None
    addresses: list[str] | None = None


class AgentSqlInstall(_Strict):
    version: str
    binn: str
    master_marker: bool = False


class AgentConfig(_Strict):
    role: Literal["master", "worker"]
    version: str
    path: str
    content_b64: str | None = None
    read_error: str | None = None


class AgentCert(_Strict):
    thumbprint: str
    der_b64: str
    has_private_key: bool | None = None
    key_provider: Literal["capi", "cng"] | None = None
    key_file: str | None = None
    key_readers: list[str] | None = None


class AgentStores(_Strict):
    Root: list[AgentCert] | None = None
    My: list[AgentCert] | None = None


class AgentBinding(_Strict):
    ip_port: str
    kind: Literal["ipport", "hostnameport", "ccs"] = "ipport"
    cert_hash: str | None = None
    app_id: str | None = None
    store: str | None = None


class AgentBindings(_Strict):
    source: Literal["registry", "netsh"] | None = None
    entries: list[AgentBinding] | None = None
    netsh_b64: str | None = None


class AgentService(_Lenient):
    Name: str
    State: str | None = None
    StartMode: str | None = None
    StartName: str | None = None


class AgentWorkerAgent(_Lenient):
    WorkerAgentId: str
    MachineName: str | None = None
    DisplayName: str | None = None
    IsEnabled: bool | None = None
    LastOnlineTime: str | None = None


class AgentSsisDb(_Strict):
    master_properties: dict[str, str] = {}
    worker_agents: list[AgentWorkerAgent] = []


class AgentSchannel(_Strict):
    ClientAuthTrustMode: int | None = None
    SendTrustedIssuerList: int | None = None


class AgentDocument(_Strict):
    """One node's answer to ``{"op": "collect"}``."""

    agent_schema: str = Field(alias="schema")
    op: Literal["collect"]
    errors: list[AgentError] = []
    identity: AgentIdentity
    sql: list[AgentSqlInstall] | None = None
    configs: list[AgentConfig] | None = None
    stores: AgentStores | None = None
    bindings: AgentBindings | None = None
    services: list[AgentService] | None = None
    schannel: AgentSchannel | None = None
    ssisdb: AgentSsisDb | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
