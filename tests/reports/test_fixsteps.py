"""Every remediation a policy may name has the documented manual step a report reader acts on."""

from __future__ import annotations

from scaleguard.findings.model import REMEDIATIONS
from scaleguard.reports.fixsteps import FIX_STEPS


def test_every_remediation_name_has_a_documented_step() -> None:
    assert sorted(FIX_STEPS) == sorted(REMEDIATIONS)
    assert all(step.strip() for step in FIX_STEPS.values())
