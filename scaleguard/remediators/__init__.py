"""Remediation: failing findings → a reviewable plan → ordered, journaled, reversible changes on nodes.

``plan`` is pure (findings + snapshot in, :class:`Plan` out); :mod:`scaleguard.apply.runner` runs a
plan through the node agent with per-unit rollback, and :mod:`scaleguard.apply.journal` keeps every
step so a run can be undone. The ordering rules are in docs/architecture.md ("Remediation: plan, then apply").
"""

from scaleguard.remediators.base import MasterPfx, PlanOptions
from scaleguard.remediators.model import Plan, Step, Unit
from scaleguard.remediators.planner import PlanInputInvalid, PlanRefused, plan

__all__ = ["MasterPfx", "Plan", "PlanOptions", "PlanInputInvalid", "PlanRefused", "Step", "Unit", "plan"]
