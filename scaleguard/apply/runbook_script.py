"""A change-window runbook: one node's fix steps as a self-contained Windows PowerShell 5.1 script.

Shops that let no Linux box push WinRM changes run fixes through SCCM, Ansible or a person in a change
window. A runbook is for them, and it keeps the rule every agent run keeps: no value from a plan is ever
PowerShell source. The script is

1. a fixed header (``#Requires -Version 5.1``, ``param()``);
2. ONE data line, ``$RunbookData = '<base64>'``: the node's steps as JSON (:class:`RunbookData`). Base64
   has no quote, so nothing in it can end the string, and the driver decodes and checks it before use;
3. the fix agent's own code, byte for byte the lines of ``actions.ps1`` between its ``param`` line and its
   entry point (taken from the shipped file each time, so it cannot drift from what ``--apply`` runs);
4. a fixed driver (``runbook_driver.ps1``) that checks each step's state on the node, applies what is
   still to do through the agent's functions and prints one JSON document (:class:`RunbookResult`).

Everything but the data line is the same for every node and every plan: :func:`runbook_parts` is what the
lab compares a script with before it does anything (it runs no PowerShell).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from scaleguard.collectors.agent import PAYLOAD_SEPARATOR

SCHEMA = "scaleguard-runbook/1"
RESULT_SCHEMA = "scaleguard-runbook-result/1"
DATA_PREFIX = "$RunbookData = '"
DATA_SUFFIX = "'\n"
MAX_DATA = 4 * 1024 * 1024
_AGENT_START = "param([string]$RequestJson)\n"
_AGENT_END = "# --- entry point (not part of a runbook)"
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")

StepId = Annotated[str, StringConstraints(pattern=r"^s\d{3,6}$")]
UnitId = Annotated[str, StringConstraints(pattern=r"^u\d{2,6}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
RunId = Annotated[str, StringConstraints(pattern=r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{4,32}$")]
Thumb = Annotated[str, StringConstraints(pattern=r"^[0-9A-F]{40}$")]
Text = Annotated[str, StringConstraints(max_length=4096)]
NodeName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[^\x00-\x1f\\/]+$")]
Scalar = str | int | bool | None
RequestValue = Scalar | list[str]


class Checked(BaseModel):
    """No field it does not know, no value coerced: runbook data, results and the folder's manifest."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CheckNone(_Strict):
    """Nothing to look at first (the agent's action itself finds what is there)."""

    kind: Literal["none"] = "none"


class CheckCreated(_Strict):
    """A certificate this very plan step made before (its friendly name carries plan and step): done."""

    kind: Literal["created"] = "created"
    store: Literal["Root", "My"]
    friendly_name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9 ._-]{1,64}$")]


class CheckPresent(_Strict):
    kind: Literal["present"] = "present"
    store: Literal["Root", "My"]
    thumbprint: Thumb | None


class CheckAbsent(_Strict):
    kind: Literal["absent"] = "absent"
    store: Literal["Root", "My"]
    thumbprint: Thumb


class CheckKeyReadable(_Strict):
    kind: Literal["key_readable"] = "key_readable"
    store: Literal["Root", "My"]
    thumbprint: Thumb | None
    account: Text


class CheckSetting(_Strict):
    """Target value → done; the plan's value before (when known) → apply; anything else → stale."""

    kind: Literal["setting"] = "setting"
    role: Literal["master", "worker"]
    setting: Literal["SSLCertThumbprint", "MasterHttpsCertThumbprint", "WorkerHttpsCertThumbprint", "MasterEndpoint"]
    value: Text | None
    expected_known: bool
    expected: Text | None


class CheckBinding(_Strict):
    kind: Literal["binding"] = "binding"
    ip_port: Text
    cert_hash: Thumb | None
    cert_store: Literal["Root", "My"] | None
    app_id: Text
    expected_known: bool
    expected_hash: Text | None


class CheckSchannel(_Strict):
    kind: Literal["schannel"] = "schannel"
    name: Literal["ClientAuthTrustMode", "SendTrustedIssuerList"]
    value: int
    expected_known: bool
    expected: int | None


class CheckStartMode(_Strict):
    kind: Literal["start_mode"] = "start_mode"
    mode: Literal["Automatic"]
    expected: Text | None


class CheckRunning(_Strict):
    kind: Literal["running"] = "running"


class CheckRestart(_Strict):
    """A restart runs only when something else of its unit changed on this node (this wave or before)."""

    kind: Literal["restart"] = "restart"
    after: list[StepId] = Field(max_length=256)
    unit_changed: bool
    mark: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}-s\d{3,6}$")]
    r"""Written on the node once the restart ran, so a second run of the runbook does not restart again for
    the changes of an earlier wave (HKLM\SOFTWARE\scaleguard\Runbook, a value of this name)."""


Check = Annotated[
    CheckNone
    | CheckCreated
    | CheckPresent
    | CheckAbsent
    | CheckKeyReadable
    | CheckSetting
    | CheckBinding
    | CheckSchannel
    | CheckStartMode
    | CheckRunning
    | CheckRestart,
    Field(discriminator="kind"),
]


RefField = Literal["thumbprint", "der_b64", "value", "cert_hash"]
REF_FIELDS = ("thumbprint", "der_b64", "value", "cert_hash")


class RunbookRef(_Strict):
    """A value an earlier step of the same script returns: the driver puts it into the request (and the
    check) under the field's name before it looks at the node. A field filled this way is null in the data."""

    from_step: StepId
    field: Literal["thumbprint", "der_b64"]


class RunbookStep(_Strict):
    id: StepId
    unit: UnitId
    action: Text
    request: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,40}$")], RequestValue]
    check: Check
    refs: dict[RefField, RunbookRef] = Field(default_factory=dict)
    service_role: Literal["master", "worker"] | None = None
    """The plan left the service name to the node: the driver finds the one Scale Out service of this role."""


class RunbookData(_Strict):
    """What the data line holds: everything node-specific, and nothing else."""

    format: Literal["scaleguard-runbook/1"] = "scaleguard-runbook/1"
    plan_sha256: Sha256
    run_id: RunId
    cluster: NodeName
    node: NodeName
    wave: int = Field(ge=1, le=999)
    steps: list[RunbookStep] = Field(min_length=1, max_length=256)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=True, separators=(",", ":"))


StepStatus = Literal["done", "applied", "stale", "failed", "skipped", "pending"]
"""pending: only in a ``-CheckOnly`` result, a step that would be applied."""


class StepOutcome(Checked):
    """One step as the driver reports it (``result``: what the agent answered, or found when done)."""

    id: StepId
    status: StepStatus
    reason: Text | None = None
    result: dict[str, Any] | None = None
    error: Annotated[str, StringConstraints(max_length=8192)] | None = None
    partial: bool = False


class RunbookResult(Checked):
    """The one JSON document a runbook prints."""

    format: Literal["scaleguard-runbook-result/1"]
    plan_sha256: Sha256
    run_id: RunId
    cluster: NodeName
    node: NodeName
    wave: int = Field(ge=1, le=999)
    computer: Text
    check_only: bool = False
    steps: list[StepOutcome] = Field(max_length=256)


@lru_cache(maxsize=1)
def _fixed_text(name: str) -> str:
    return resources.files("scaleguard.apply.agent").joinpath(name).read_text(encoding="ascii")


def runbook_parts() -> tuple[str, str]:
    """(everything before the data line, everything after it): the same for every runbook. After it come the
    lines of ``actions.ps1`` a runbook carries (its preferences, patterns and functions), then the driver."""
    agent = _fixed_text("actions.ps1")
    body = agent[agent.index(_AGENT_START) + len(_AGENT_START) : agent.index(_AGENT_END)]
    return _fixed_text("runbook_header.ps1"), body + _fixed_text("runbook_driver.ps1")


def runbook_payload(script: str) -> bytes:
    """What the usual stdin bootstrap gets to run a runbook over WinRM: the script, the separator and an
    empty request (the runbook takes no argument; everything it needs is its data line)."""
    return script.encode("ascii") + PAYLOAD_SEPARATOR + b"{}"


def runbook_script(data: RunbookData) -> str:
    """The whole runbook for one node: fixed text around one base64 data line."""
    encoded = base64.b64encode(data.to_json().encode("ascii")).decode("ascii")
    head, tail = runbook_parts()
    return f"{head}{DATA_PREFIX}{encoded}{DATA_SUFFIX}{tail}"


class Refused(ValueError):
    """Refused for ``reasons``, one line each."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("\n".join(reasons))
        self.reasons = reasons


class NotARunbook(ValueError):
    """The script is not one scaleguard made from the current agent, or its data line is not valid."""


def parse_runbook(script: str) -> RunbookData:
    """The data of a script whose fixed parts are byte for byte what :func:`runbook_script` writes."""
    head, tail = runbook_parts()
    if not script.startswith(head + DATA_PREFIX) or not script.endswith(DATA_SUFFIX + tail):
        raise NotARunbook("the script is not a scaleguard runbook of this version")
    encoded = script[len(head) + len(DATA_PREFIX) : len(script) - len(DATA_SUFFIX) - len(tail)]
    if len(encoded) > MAX_DATA or not _BASE64.fullmatch(encoded):
        raise NotARunbook("the runbook's data line is not base64")
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8")
        return RunbookData.model_validate(json.loads(text))
    except (binascii.Error, UnicodeDecodeError, ValueError, ValidationError) as exc:
        raise NotARunbook(f"the runbook's data is not valid: {str(exc)[:300]}") from exc
