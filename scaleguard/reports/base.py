"""What every report format shares: the inputs it may read and the one method it must offer.

A reporter sees only the two artefacts (snapshot and findings) and the clock the audit ran with, so any
report can be rebuilt later from ``snapshot.json`` + ``findings.json`` without touching a node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from scaleguard.findings.model import FindingsFile
from scaleguard.policies.model import Thresholds
from scaleguard.snapshot.model import Snapshot


@dataclass(frozen=True)
class ReportContext:
    snapshot: Snapshot
    findings: FindingsFile
    now: datetime
    """The audit's clock: days-left figures must agree with the verdicts, not with the render time."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    """The limits the policies judged with (``--expiry-high-days`` ...): expiry bands use the same."""


class Reporter(Protocol):
    """One output file. ``render`` is pure: same context, same bytes."""

    @property
    def filename(self) -> str: ...

    def render(self, ctx: ReportContext) -> bytes: ...


def write_atomic(path: Path, data: bytes) -> Path:
    """Written next to its name and renamed into place, so a reader (a CI job picking up ``report.html``, a
    scraper reading ``metrics.prom``) never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.replace(path)
    return path
