"""Findings: the verdict of one policy on one subject, and the file that carries them.

``findings.json`` is read by reports, the fix planner, history and CI gates, so its field names are a
public contract (docs/architecture.md, "Outputs and exit codes"). Every evaluated (policy, node) pair is
a finding, passes included, so a report can prove what was checked and not only what failed.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from scaleguard.safefile import MIB, read_limited


class Remediation(StrEnum):
    """Every name a finding's ``remediation`` may carry, declared once: policies choose one, the planner
    has one remediator per name (``Remediator.name``), reports show each one's documented manual step."""

    ROTATE_MASTER_CERTIFICATE = "rotate-master-certificate"
    ROTATE_WORKER_CERTIFICATE = "rotate-worker-certificate"
    IMPORT_ROOT_CERTIFICATE = "import-root-certificate"
    REPAIR_MASTER_BINDING = "repair-master-binding"
    REPIN_WORKER_MASTER_THUMBPRINT = "repin-worker-master-thumbprint"
    FIX_WORKER_MASTER_ENDPOINT = "fix-worker-master-endpoint"
    NORMALIZE_CONFIG_THUMBPRINT = "normalize-config-thumbprint"
    GRANT_WORKER_KEY_ACCESS = "grant-worker-key-access"
    START_SERVICE = "start-service"
    REMOVE_STALE_WORKER_CERTIFICATES = "remove-stale-worker-certificates"
    SET_SCHANNEL_TRUST_MODE = "set-schannel-trust-mode"
    MANUAL = "manual"


REMEDIATIONS: tuple[str, ...] = tuple(r.value for r in Remediation)


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    NOT_ASSESSED = "not_assessed"
    WAIVED = "waived"


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        """Higher is worse; used for ``--fail-on`` and sorting."""
        return _RANK[self]

    def at_least(self, threshold: Severity) -> bool:
        return self.rank >= threshold.rank


_RANK = {
    Severity.INFO: 0,
    Severity.LOW: 1,
    Severity.MEDIUM: 2,
    Severity.HIGH: 3,
    Severity.CRITICAL: 4,
}


class Finding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str
    name: str = ""
    title: str = ""
    cluster: str = ""
    node: str
    scope: str = ""
    status: Status
    severity: Severity
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    remediation: str | None = None
    references: list[str] = Field(default_factory=list)
    subject: str | None = Field(default=None, description="what the finding is about, e.g. a thumbprint")
    waiver: dict[str, Any] | None = None
    applicable: bool = Field(
        default=True,
        description="False when the policy cannot apply in this mode (live-only check offline); such a "
        "not_assessed finding is shown everywhere but does not make the audit incomplete",
    )

    @property
    def is_problem(self) -> bool:
        """True when the finding needs someone's attention (fail, error or not assessed)."""
        return self.status in (Status.FAIL, Status.ERROR, Status.NOT_ASSESSED)


class WaiverSummary(BaseModel):
    """What ``--waivers`` did; ``expired`` and ``stale`` describe waivers that need the owner's attention."""

    file: str
    max_days: int
    applied: int
    active: int
    expired: list[dict[str, Any]] = Field(default_factory=list)
    stale: list[dict[str, Any]] = Field(default_factory=list)


class CauseSymptom(BaseModel):
    policy: str
    node: str
    status: str
    severity: str


class CauseSummary(BaseModel):
    """One root cause: the failing findings (symptoms) that one fix clears."""

    id: str
    kind: str
    title: str
    fix: str
    cluster: str
    severity: str
    nodes: list[str]
    symptoms: list[CauseSymptom]
    count: int


class SincePrevious(BaseModel):
    """This run compared with the previous run of the same clusters in the history file."""

    previous_run: int | None
    previous_at: str | None
    new: list[dict[str, Any]] = Field(default_factory=list)
    resolved: list[dict[str, Any]] = Field(default_factory=list)
    persisting: int = 0
    run: int
    scope: str
    history_file: str
    trend: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the last runs of the same clusters, oldest first, this one last: run, at, failing",
    )


class FindingsFile(BaseModel):
    """The whole ``findings.json``. The post-audit stages fill the optional parts: ``waivers``,
    ``causes`` (most impactful first) and ``since_previous`` (None when no history was recorded, and
    ``warnings`` then says why when it was a failure)."""

    schema_version: str = "1.0"
    generated_at: datetime
    source: str
    mode: str = "offline"
    insecure: bool = False
    unencrypted_nodes: list[str] = Field(
        default_factory=list, description="nodes whose WinRM traffic crossed a network unencrypted"
    )
    policies: list[dict[str, Any]] = Field(default_factory=list)
    findings: list[Finding]
    warnings: list[str] = Field(default_factory=list)
    waivers: WaiverSummary | None = None
    causes: list[CauseSummary] | None = None
    since_previous: SincePrevious | None = None

    def write(self, path: Path) -> None:
        path.write_bytes(self.to_json())

    def to_json(self) -> bytes:
        """UTF-8 JSON, indented by two. The header goes through pydantic; the findings, each a flat
        model of JSON values (the engine makes evidence JSON-safe), straight from their ``__dict__``
        through orjson, which pydantic's serialiser cannot match on tens of thousands of findings. Same
        document either way (``Z`` for UTC times, enums by value); a value orjson cannot write is
        written as its ``str``, as pydantic's lax serialisation would."""
        document = self.model_dump(mode="json", exclude={"findings"})
        document["findings"] = [f.__dict__ for f in self.findings]
        return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z, default=str)

    @classmethod
    def read(cls, path: Path) -> FindingsFile:
        return cls.model_validate_json(read_limited(path, 1024 * MIB, named=True))
