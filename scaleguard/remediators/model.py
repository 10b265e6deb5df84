"""The fix plan: what ``scaleguard fix`` will do, as a reviewable artefact (``plan.json``).

A plan is data, not code: every step names a node, an agent action and its parameters, so the same
plan can be shown (dry run), applied, journaled and undone, and a reviewer can diff two plans. Values
that only exist once an earlier step ran (the thumbprint of a certificate created on the master) are
:class:`StepRef` placeholders; secrets (a PFX password) are :class:`SecretRef` references and local files
:class:`FileRef` paths, so neither ever lands in ``plan.json`` or the journal.

Steps are grouped in :class:`Unit` s: one remediation on one target (rotate the master certificate of
M1, grant W3's key). A unit is the unit of rollback: if any of its steps fails, every completed step of
the unit is undone on every node, so a cross-node change is never left half done.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

PLAN_SCHEMA = "scaleguard-plan/1"

ActionName = Literal[
    "create_certificate",
    "import_certificate",
    "import_pfx",
    "copy_certificate",
    "remove_certificate",
    "restore_certificate",
    "set_binding",
    "delete_binding",
    "write_config",
    "restore_file",
    "grant_key_read",
    "revoke_key_read",
    "set_service_start_mode",
    "start_service",
    "stop_service",
    "restart_service",
    "set_schannel_value",
    "delete_schannel_value",
]
ACTION_NAMES: tuple[str, ...] = ActionName.__args__  # type: ignore[attr-defined]



class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepRef(_Model):
    """A value an earlier step returns (``thumbprint`` or ``der_b64`` of a certificate it created)."""

    from_step: str
    field: Literal["thumbprint", "der_b64"]

    def key(self) -> str:
        return f"<{self.field} of {self.from_step}>"


class SecretRef(_Model):
    """A secret resolved only when the step runs: an environment variable, or a prompt."""

    secret_env: str | None = None
    secret_prompt: str | None = None


class FileRef(_Model):
    """A local file sent (base64) only when the step runs, so plan.json stays small and reviewable."""

    local_file: str


ParamValue = StepRef | SecretRef | FileRef | str | int | bool | list[str] | None


class SettingWas(_Model):
    """A settings-file value as the plan saw it (None: absent)."""

    kind: Literal["setting"] = "setting"
    role: Literal["master", "worker"]
    setting: str
    value: str | StepRef | None


class BindingWas(_Model):
    """The certificate an HTTP.sys binding served as the plan saw it (None: no binding)."""

    kind: Literal["binding"] = "binding"
    ip_port: str
    cert_hash: str | StepRef | None


class SchannelWas(_Model):
    kind: Literal["schannel"] = "schannel"
    name: str
    value: int | None


class StartModeWas(_Model):
    kind: Literal["start_mode"] = "start_mode"
    name: str
    mode: str | None


Expected = Annotated[SettingWas | BindingWas | SchannelWas | StartModeWas, Field(discriminator="kind")]
"""What a step expects to find before it runs: when the node holds neither this nor the step's target,
someone changed it since the plan was made and the step's unit stops as stale (apply's drift check)."""


class Step(_Model):
    id: str
    unit: str
    cluster: str
    node: str
    action: ActionName
    params: dict[str, ParamValue] = Field(default_factory=dict)
    before: str = ""
    after: str = ""
    command: str = Field(description="the documented command this step corresponds to")
    depends_on: list[str] = Field(default_factory=list, description="steps (other nodes) that must succeed first")
    expect: Expected | None = Field(default=None, description="the state the step replaces, as planned")


class Unit(_Model):
    id: str
    remediation: str
    cluster: str
    target: str = Field(description="the node the remediation is about")
    summary: str
    findings: list[str] = Field(default_factory=list, description="policy@node keys it fixes")
    nodes: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list, description="units that must succeed first")
    steps: list[str] = Field(default_factory=list)


class ManualItem(_Model):
    """A finding scaleguard will not fix automatically, with the documented way to do it by hand."""

    cluster: str
    node: str
    policy: str
    remediation: str
    reason: str
    steps: list[str] = Field(default_factory=list)


Outcome = Literal["planned", "covered", "manual", "nothing_to_do"]


class Disposition(_Model):
    """What the plan does about one failing finding (every failing finding gets exactly one)."""

    finding: str
    cluster: str
    node: str
    policy: str
    remediation: str
    outcome: Outcome
    unit: str | None = None
    note: str = ""


class PlanOptionsRecord(_Model):
    master_hash: Literal["sha256", "sha1"] = "sha256"
    key_bits: int = 2048
    valid_days: int = 730
    max_nodes: int | None = None
    master_pfx: str | None = None


class Plan(_Model):
    schema_: str = Field(default=PLAN_SCHEMA, alias="schema")
    generated_at: datetime
    source: str = ""
    options: PlanOptionsRecord = PlanOptionsRecord()
    units: list[Unit] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    manual: list[ManualItem] = Field(default_factory=list)
    dispositions: list[Disposition] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def empty(self) -> bool:
        return not self.steps

    def nodes(self) -> list[str]:
        """Every ``cluster/node`` a step touches, in first-touch order (what ``--max-nodes`` counts)."""
        seen: dict[str, None] = {}
        for step in self.steps:
            seen.setdefault(f"{step.cluster}/{step.node}", None)
        return list(seen)

    def unit(self, unit_id: str) -> Unit:
        return next(u for u in self.units if u.id == unit_id)

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    def to_json(self) -> str:
        return self.model_dump_json(indent=1, by_alias=True)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        plan = cls.model_validate_json(text)
        if plan.schema_.split("/")[0] != PLAN_SCHEMA.split("/")[0]:
            raise ValueError(f"not a scaleguard plan (schema {plan.schema_!r})")
        return plan
