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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from scaleguard.findings.model import Remediation
from scaleguard.remediators.actions import (
    PARAMS,
    ActionParams,
    BindingWas,
    Expected,
    FileRef,
    SchannelWas,
    SecretRef,
    SettingWas,
    StartModeWas,
    StepRef,
    expect_fits,
)

__all__ = ["BindingWas", "Expected", "FileRef", "SchannelWas", "SecretRef", "SettingWas", "StartModeWas", "StepRef"]

PLAN_SCHEMA = "scaleguard-plan/2"

ActionName = Literal[
    "create_certificate",
    "import_certificate",
    "import_pfx",
    "copy_certificate",
    "remove_certificate",
    "set_binding",
    "write_config",
    "set_master_endpoint",
    "grant_key_read",
    "set_service_start_mode",
    "start_service",
    "restart_service",
    "set_schannel_value",
]
ACTION_NAMES: tuple[str, ...] = ActionName.__args__  # type: ignore[attr-defined]
StepId = Annotated[str, StringConstraints(pattern=r"^s\d{3,6}$")]
UnitId = Annotated[str, StringConstraints(pattern=r"^u\d{2,6}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[^\x00-\x1f\\/]+$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Model):
    """One action on one node; ``params`` is validated as the parameter model of ``action``."""

    id: StepId
    unit: UnitId
    cluster: Name
    node: Name
    action: ActionName
    params: ActionParams
    depends_on: list[StepId] = Field(default_factory=list, description="steps (other nodes) that must succeed first")
    expect: Expected | None = Field(default=None, description="the state the step replaces, as planned")

    @model_validator(mode="before")
    @classmethod
    def _params_of_action(cls, data: Any) -> Any:
        action = data.get("action") if isinstance(data, dict) else None
        if isinstance(action, str) and action in PARAMS and isinstance(data.get("params"), dict):
            return {**data, "params": PARAMS[action].model_validate(data["params"])}
        return data

    @model_validator(mode="after")
    def _params_match(self) -> Step:
        if type(self.params) is not PARAMS[self.action]:
            raise ValueError(f"params are not the parameters of {self.action}")
        if self.expect is not None and not expect_fits(self.expect, self.params):
            raise ValueError(f"expect ({self.expect.kind}) is not about what {self.action} changes")
        return self


class Unit(_Model):
    id: str
    remediation: Remediation
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
    expires_at: datetime = Field(description="the plan is refused after this (fix --plan-valid-for)")
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
        """The plan, schema-validated (see :mod:`scaleguard.remediators.validate` for the whole check)."""
        plan = cls.model_validate_json(text)
        if plan.schema_ != PLAN_SCHEMA:
            raise ValueError(f"not a {PLAN_SCHEMA} plan (schema {plan.schema_!r})")
        return plan
