"""The history identity of a finding: what it is about, normalised as Windows compares it."""

from __future__ import annotations

from scaleguard.findings.fingerprint import fingerprint
from scaleguard.findings.model import Finding, Severity, Status

TP = "3f1c9a0be2d4c6f8a0b1c2d3e4f5a6b7c8d9e0f1"


def finding(**changes: object) -> Finding:
    base: dict[str, object] = {
        "policy": "SO-W02",
        "cluster": "prod",
        "node": "WRK01",
        "status": Status.FAIL,
        "severity": Severity.CRITICAL,
        "message": "pins the old master",
        "subject": TP,
    }
    base.update(changes)
    return Finding.model_validate(base)


def test_same_subject_written_differently_is_the_same_finding() -> None:
    reference = fingerprint(finding())
    assert fingerprint(finding(node="wrk01")) == reference
    assert (
        fingerprint(finding(subject="\u200e" + " ".join(TP[i : i + 2] for i in range(0, 40, 2)).upper()))
        == reference
    )
    assert fingerprint(finding(message="reworded", evidence={"x": 1}, status=Status.ERROR)) == reference


def test_what_the_finding_is_about_changes_the_identity() -> None:
    reference = fingerprint(finding())
    others = {
        fingerprint(finding(policy="SO-W03")),
        fingerprint(finding(cluster="staging")),
        fingerprint(finding(node="WRK02")),
        fingerprint(finding(subject="A" * 40)),
        fingerprint(finding(subject=None)),
    }
    assert reference not in others and len(others) == 5
    assert len(reference) == 64


def test_parts_cannot_bleed_into_each_other() -> None:
    assert fingerprint(finding(node="a", subject="b c")) != fingerprint(finding(node="a b", subject="c"))
