"""Execution: a validated plan run against live nodes, journaled, rolled back per unit, verified by a new audit.

This is the only part of scaleguard that changes a node. Planning (pure) lives in
:mod:`scaleguard.remediators`; see ``docs/architecture.md`` for the whole flow.
"""
