"""What a policy is once loaded: the YAML schema, validated, with its CEL compiled.

The YAML keys are the public authoring format (users write their own packs against it), so the model
forbids unknown keys: a typo such as ``requries`` must be a load error, not a silently ignored field.
Compiled CEL programs live beside the model (``Policy.programs``) because they are not data; the loader
fills them once, so evaluation never parses an expression.

Schema (one policy per YAML document; a file may hold several documents)::

    id: SO-M05                 # ^[A-Z][A-Z0-9]{1,9}-[A-Z][0-9]{2,3}$, stable: waivers and history name it
    name: master-binding-hash  # kebab-case, unique
    title: ...                 # the desired state, not the problem
    severity: critical         # critical | high | medium | low | info (graded policies: the worst grade)
    scope: master              # cluster | master (once per master node) | worker (once per worker node)
    description: ...
    references: [url or documented step, ...]
    modes: [offline, live]     # optional; a policy outside the audit's mode is not_assessed, applicable=false
    for_each: <CEL list>       # cluster scope only: one finding per item, bound as `item` (item.name = node)
    applies_if: <CEL>          # optional; false -> not_assessed, applicable=false (null = go on)
    not_applicable: ...        # the message for that case
    requires: [fact.path, ...] # any of them null -> not_assessed (evidence missing), naming the facts
    check: <CEL>               # true = pass, false = fail, null = not_assessed (could not decide)
    grades:                    # optional, first match wins; no match -> `severity`
      - {when: <CEL>, severity: high}
    fail_status: fail          # or error (SO-C01: a node that could not be collected)
    let: {name: <CEL>, ...}    # evidence values, also the only names a message may use
    message: "... {name} ..."  # rendered for fail / error / not_assessed-by-check
    pass_message: "..."        # optional; default: the title
    remediation: manual        # one of REMEDIATIONS
    subject: <CEL>             # optional string, e.g. a thumbprint, so history can tell two problems apart
    override: false            # true lets a user pack replace a built-in policy of the same id
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from scaleguard.findings.model import REMEDIATIONS, Severity

ID_PATTERN = re.compile(r"^[A-Z][A-Z0-9]{1,9}-[A-Z][0-9]{2,3}$")
NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
LET_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*$")


class Scope(StrEnum):
    CLUSTER = "cluster"
    MASTER = "master"
    WORKER = "worker"


class Mode(StrEnum):
    OFFLINE = "offline"
    LIVE = "live"


@dataclass(frozen=True)
class Thresholds:
    """Tunable limits that policies read as the ``thresholds`` fact; report expiry bands use them too
    (docs/architecture.md, "Policies and thresholds")."""

    expiry_high_days: int = 30
    expiry_medium_days: int = 60
    min_rsa_bits: int = 2048

    def __post_init__(self) -> None:
        if not 0 <= self.expiry_high_days <= self.expiry_medium_days:
            raise ValueError("expiry thresholds need 0 <= high days <= medium days")
        if self.min_rsa_bits < 0:
            raise ValueError("min_rsa_bits must not be negative")

    def facts(self) -> dict[str, int]:
        return {
            "expiry_high_days": self.expiry_high_days,
            "expiry_medium_days": self.expiry_medium_days,
            "min_rsa_bits": self.min_rsa_bits,
        }


def _as_cel_source(value: Any) -> Any:
    """YAML reads ``check: true`` or ``let: {n: 2}`` as a bool or number; as CEL they are that literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


class Grade(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    when: str = Field(min_length=1)
    severity: Severity

    @field_validator("when", mode="before")
    @classmethod
    def _literal(cls, value: Any) -> Any:
        return _as_cel_source(value)


@dataclass
class Programs:
    """Compiled CEL for one policy; ``Any`` because the `cel` package ships no typed Program for mypy."""

    check: Any
    for_each: Any | None = None
    applies_if: Any | None = None
    subject: Any | None = None
    grades: list[tuple[Any, Severity]] = field(default_factory=list)
    let: dict[str, Any] = field(default_factory=dict)
    uses: frozenset[str] = frozenset()
    """Top-level variables the policy reads (in CEL or ``requires``), so a context can hold just those."""


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    title: str = Field(min_length=1)
    severity: Severity
    scope: Scope
    description: str = Field(min_length=1)
    references: list[str] = Field(default_factory=list)
    modes: list[Mode] = Field(default_factory=lambda: [Mode.OFFLINE, Mode.LIVE], min_length=1)
    for_each: str | None = None
    applies_if: str | None = None
    not_applicable: str | None = None
    requires: list[str] = Field(default_factory=list)
    check: str = Field(min_length=1)
    grades: list[Grade] = Field(default_factory=list)
    fail_status: Literal["fail", "error"] = "fail"
    let: dict[str, str] = Field(default_factory=dict)
    message: str = Field(min_length=1)
    pass_message: str | None = None
    remediation: str
    subject: str | None = None
    override: bool = False

    source: str = Field(default="", exclude=True, description="file it came from; set by the loader")
    _programs: Programs | None = PrivateAttr(default=None)

    @field_validator("check", "for_each", "applies_if", "subject", mode="before")
    @classmethod
    def _literal_expression(cls, value: Any) -> Any:
        return _as_cel_source(value)

    @field_validator("let", mode="before")
    @classmethod
    def _literal_lets(cls, value: Any) -> Any:
        return {k: _as_cel_source(v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not ID_PATTERN.match(value):
            raise ValueError(f"id {value!r} does not match {ID_PATTERN.pattern} (e.g. SO-M05)")
        return value

    @field_validator("name")
    @classmethod
    def _kebab(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(f"name {value!r} is not kebab-case (lower-case words joined by '-')")
        return value

    @field_validator("remediation")
    @classmethod
    def _known_remediation(cls, value: str) -> str:
        if value not in REMEDIATIONS:
            raise ValueError(f"remediation {value!r} is not one of: {', '.join(REMEDIATIONS)}")
        return value

    @field_validator("let")
    @classmethod
    def _let_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, expr in value.items():
            if not LET_NAME_PATTERN.match(key):
                raise ValueError(f"let name {key!r} must be a lower-case identifier")
            if not isinstance(expr, str) or not expr.strip():
                raise ValueError(f"let {key!r} needs a CEL expression")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.for_each is not None and self.scope is not Scope.CLUSTER:
            raise ValueError("for_each is only for scope: cluster")
        if self.not_applicable is not None and self.applies_if is None:
            raise ValueError("not_applicable is only meaningful with applies_if")
        return self

    @property
    def programs(self) -> Programs:
        if self._programs is None:
            raise RuntimeError(f"policy {self.id} was not compiled (load it with scaleguard.policies.loader)")
        return self._programs

    def attach(self, programs: Programs) -> None:
        self._programs = programs

    @property
    def graded(self) -> bool:
        return bool(self.grades)

    def summary(self) -> dict[str, Any]:
        """The policy as ``findings.json`` lists it, so reports can show what was checked and why."""
        return {
            "id": self.id,
            "name": self.name,
            "title": self.title,
            "severity": self.severity.value,
            "graded": self.graded,
            "grades": [g.severity.value for g in self.grades],
            "scope": self.scope.value,
            "modes": [m.value for m in self.modes],
            "description": self.description.strip(),
            "references": list(self.references),
            "requires": list(self.requires),
            "remediation": self.remediation,
            "source": self.source,
        }
