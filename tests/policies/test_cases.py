"""Every built-in policy against small clusters described in tests/policies/cases/*.yaml.

Each case is written as a real evidence folder (lab writers), read by the real evidence reader and
evaluated by the engine; the findings of the case's policies must be exactly the expected set — a
missing finding fails the test as much as an unexpected one.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from policy_cases import Case, Materialiser, load_cases

from scaleguard.findings.model import Finding
from scaleguard.policies.engine import evaluate
from scaleguard.policies.loader import load_policies
from scaleguard.policies.model import Thresholds

NOW = datetime.now(UTC).replace(microsecond=0)
CASES = load_cases()
POLICIES = load_policies([])


def _describe(findings: list[Finding]) -> str:
    return "\n".join(
        f"  {f.policy} {f.node} {f.status.value} {f.severity.value}{'' if f.applicable else ' n/a'}: {f.message}"
        for f in findings
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_policy_case(case: Case, tmp_path: Path) -> None:
    materialiser = Materialiser(case.spec, NOW)
    snapshot = materialiser.snapshot(tmp_path)
    thresholds = Thresholds(**case.spec["thresholds"]) if "thresholds" in case.spec else None
    findings = [f for f in evaluate(snapshot, POLICIES, now=NOW, thresholds=thresholds) if f.policy in case.policies]
    counts = Counter((f.policy, f.node) for f in findings)
    assert all(n == 1 for n in counts.values()), f"duplicate findings:\n{_describe(findings)}"

    actual = {(f.policy, f.node): f for f in findings}
    expected = {(e.policy, e.node): e for e in case.expected}
    assert set(actual) == set(expected), (
        f"missing {sorted(set(expected) - set(actual))}, unexpected {sorted(set(actual) - set(expected))}\n"
        + _describe(findings)
    )
    for key, want in expected.items():
        got = actual[key]
        detail = f"{key}:\n{_describe([got])}"
        assert got.status.value == want.status, detail
        if want.severity is not None:
            assert got.severity.value == want.severity, detail
        assert got.applicable is want.applicable, detail

    for key, fragments in (case.spec.get("says") or {}).items():
        policy, node = key.split()
        message = actual[(policy, node)].message
        for fragment in fragments:
            assert materialiser.fill(fragment) in message, f"{key}: {fragment!r} not in {message!r}"


def test_every_policy_has_a_passing_and_a_failing_case() -> None:
    seen: dict[str, set[str]] = {}
    for case in CASES:
        for e in case.expected:
            seen.setdefault(e.policy, set()).add(e.status)
    for policy in POLICIES:
        statuses = seen.get(policy.id, set())
        assert "pass" in statuses, f"{policy.id} has no passing case"
        assert statuses & {"fail", "error"}, f"{policy.id} has no failing case"


def test_every_grade_of_every_graded_policy_is_exercised() -> None:
    seen: set[tuple[str, str]] = set()
    for case in CASES:
        for e in case.expected:
            if e.status in ("fail", "error") and e.severity:
                seen.add((e.policy, e.severity))
    for policy in POLICIES:
        for grade in policy.grades:
            assert (policy.id, grade.severity.value) in seen, f"{policy.id}: no case fails at {grade.severity}"


def test_the_cases_cover_ha_and_missing_evidence() -> None:
    ha = [c for c in CASES if len(c.spec.get("masters", [])) > 1]
    assert {p for c in ha for p in c.policies} >= {"SO-M02", "SO-M09", "SO-W02", "SO-W08"}
    unknown = [
        c
        for c in CASES
        for over in (c.spec.get("nodes") or {}).values()
        if (over or {}).get("bindings") == "unknown" or (over or {}).get("services") == "unknown"
    ]
    assert {p for c in unknown for p in c.policies} >= {"SO-M04", "SO-M09", "SO-W11"}
