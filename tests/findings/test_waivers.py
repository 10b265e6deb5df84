"""Waivers: active, expired, stale, over-long, malformed — each with the outcome an auditor relies on."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from scaleguard.findings.model import Finding, Severity, Status
from scaleguard.findings.waivers import DEFAULT_MAX_DAYS, WaiverError, apply_waivers, load_waivers

TODAY = date(2026, 5, 1)


def finding(policy: str, node: str, status: Status = Status.FAIL, cluster: str = "prod") -> Finding:
    return Finding(
        policy=policy,
        cluster=cluster,
        node=node,
        status=status,
        severity=Severity.HIGH,
        message=f"{policy} on {node}",
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "waivers.yaml"
    path.write_text(text, encoding="utf-8")
    return path


ACTIVE = """\
waivers:
  - policy: SO-W13
    node: "wrk-0*"
    reason: old certificates go in change CHG-1234
    owner: jane.doe
    expires: 2026-06-15
"""


def test_active_waiver_marks_matching_findings_waived_and_keeps_them(tmp_path: Path) -> None:
    findings = [
        finding("SO-W13", "WRK-01"),
        finding("SO-W13", "WRK-02"),
        finding("SO-W13", "WRK-11"),
        finding("SO-W02", "WRK-01"),
    ]
    waivers = load_waivers(write(tmp_path, ACTIVE), today=TODAY)
    outcome = apply_waivers(findings, waivers, today=TODAY)

    assert [f.status for f in findings] == [Status.WAIVED, Status.WAIVED, Status.FAIL, Status.FAIL]
    assert len(findings) == 4  # waived findings stay in the output
    waiver = findings[0].waiver
    assert waiver is not None
    assert waiver["reason"] == "old certificates go in change CHG-1234"
    assert waiver["owner"] == "jane.doe"
    assert waiver["expires"] == "2026-06-15"
    assert waiver["original_status"] == "fail"
    assert waiver["source"].endswith("waivers.yaml:2")
    assert outcome.applied == 2 and not outcome.expired and not outcome.stale


def test_policy_glob_and_cluster_pattern(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
- policy: so-w1?
  cluster: "PROD"
  reason: r
  owner: o
  expires: "2026-05-01"
""",
    )
    findings = [finding("SO-W11", "a"), finding("SO-W11", "a", cluster="staging"), finding("SO-W02", "a")]
    apply_waivers(findings, load_waivers(path, today=TODAY), today=TODAY)
    assert [f.status for f in findings] == [Status.WAIVED, Status.FAIL, Status.FAIL]


def test_waiver_is_valid_through_its_expiry_day_and_expired_the_next(tmp_path: Path) -> None:
    path = write(tmp_path, ACTIVE.replace("2026-06-15", "2026-05-01"))
    on_the_day = [finding("SO-W13", "WRK-01")]
    apply_waivers(on_the_day, load_waivers(path, today=TODAY), today=TODAY)
    assert on_the_day[0].status is Status.WAIVED

    day_after = date(2026, 5, 2)
    later = [finding("SO-W13", "WRK-01"), finding("SO-W13", "WRK-02")]
    outcome = apply_waivers(later, load_waivers(path, today=day_after), today=day_after)
    assert [f.status for f in later] == [Status.FAIL, Status.FAIL]  # the findings come back
    assert [f.waiver for f in later] == [None, None]
    assert [(w.policy, n) for w, n in outcome.expired] == [("SO-W13", 2)]
    summary = outcome.summary(day_after)
    assert summary["expired"][0]["expires"] == "2026-05-01" and summary["expired"][0]["would_match"] == 2
    assert any("expired on 2026-05-01" in line for line in outcome.warnings(day_after))


def test_stale_waiver_is_reported_with_the_reason(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        ACTIVE
        + """\
  - policy: SO-W02
    node: WRK-01
    reason: fixed already
    owner: bob
    expires: 2026-05-20
  - policy: SO-M99
    cluster: "*"
    reason: typo in the id
    owner: bob
    expires: 2026-05-20
""",
    )
    findings = [finding("SO-W13", "WRK-01"), finding("SO-W02", "WRK-01", status=Status.PASS)]
    outcome = apply_waivers(findings, load_waivers(path, today=TODAY), today=TODAY)
    stale = outcome.summary(TODAY)["stale"]
    assert [(s["policy"], s["matched_passes"]) for s in stale] == [("SO-W02", 1), ("SO-M99", 0)]
    assert stale[0]["why"] == "the findings it matches now pass"
    assert stale[1]["why"] == "it matches no finding of this audit"
    assert findings[1].status is Status.PASS and findings[1].waiver is None  # a pass is never "waived"


def test_second_waiver_on_the_same_finding_is_not_stale(tmp_path: Path) -> None:
    path = write(tmp_path, ACTIVE + ACTIVE.removeprefix("waivers:\n").replace("jane.doe", "second"))
    findings = [finding("SO-W13", "WRK-01")]
    outcome = apply_waivers(findings, load_waivers(path, today=TODAY), today=TODAY)
    assert findings[0].waiver and findings[0].waiver["owner"] == "jane.doe"  # first in file order wins
    assert outcome.stale == []


def test_error_and_not_assessed_can_be_waived(tmp_path: Path) -> None:
    path = write(tmp_path, ACTIVE.replace("SO-W13", "SO-C01"))
    findings = [
        finding("SO-C01", "WRK-01", status=Status.ERROR),
        finding("SO-C01", "WRK-02", status=Status.NOT_ASSESSED),
    ]
    apply_waivers(findings, load_waivers(path, today=TODAY), today=TODAY)
    assert [(f.status, (f.waiver or {}).get("original_status")) for f in findings] == [
        (Status.WAIVED, "error"),
        (Status.WAIVED, "not_assessed"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (ACTIVE.replace("    expires: 2026-06-15\n", ""), 2, "waiver has no expiry"),
        (ACTIVE.replace("2026-06-15", "2026-12-31"), 6, "244 days away; waivers may last at most 90 days"),
        ("max_days: 30\n" + ACTIVE, 7, "45 days away; waivers may last at most 30 days"),
        (ACTIVE.replace("    owner: jane.doe\n", ""), 2, "waiver has no owner"),
        (ACTIVE.replace('    node: "wrk-0*"\n', ""), 2, "needs a node and/or cluster pattern"),
        (ACTIVE.replace("expires:", "expire:"), 6, "unknown waiver key 'expire'"),
        (ACTIVE.replace("2026-06-15", "next week"), 6, "'next week' is not a date"),
        (ACTIVE.replace("2026-06-15", "[2026-06-15]"), 6, "expires a YAML sequence is not a date"),
        (ACTIVE.replace("2026-06-15", "{on: 2026-06-15}"), 6, "expires a YAML mapping is not a date"),
        (
            ACTIVE.replace("    owner: jane.doe\n", "    owner: jane.doe\n    owner: joe\n"),
            6,
            "duplicate key",
        ),
        ("max_days: -4\n" + ACTIVE, 1, "max_days must be a positive whole number"),
    ],
)
def test_rejected_waiver_files_name_file_line_and_reason(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(WaiverError) as caught:
        load_waivers(path, today=TODAY)
    assert f"{path}:{line}: " in str(caught.value)
    assert reason in str(caught.value)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "waivers:\n  - policy: SO-W13\n    node: [unclosed\n    reason: x\n")
    with pytest.raises(WaiverError, match=rf"{path}:\d+: not valid YAML"):
        load_waivers(path, today=TODAY)


def test_unreadable_file_is_a_waiver_error(tmp_path: Path) -> None:
    with pytest.raises(WaiverError, match="cannot read the waiver file"):
        load_waivers(tmp_path / "missing.yaml", today=TODAY)


def test_cli_maximum_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "max_days: 365\n" + ACTIVE.replace("2026-06-15", "2026-12-31"))
    assert load_waivers(path, today=TODAY).max_days == 365
    with pytest.raises(WaiverError, match="at most 60 days"):
        load_waivers(path, today=TODAY, max_days=60)
    assert DEFAULT_MAX_DAYS == 90


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        ACTIVE
        + ACTIVE.removeprefix("waivers:\n")
        .replace("    reason: old certificates go in change CHG-1234\n", "")
        .replace("2026-06-15", "2027-06-15"),
    )
    with pytest.raises(WaiverError) as caught:
        load_waivers(path, today=TODAY)
    message = str(caught.value)
    assert "waiver has no reason" in message and "days away" in message


def test_empty_file_is_no_waivers(tmp_path: Path) -> None:
    assert load_waivers(write(tmp_path, ""), today=TODAY).waivers == ()
