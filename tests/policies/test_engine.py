"""Engine behaviour that no single built-in policy shows: errors, purity, which nodes get which policies."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from policy_cases import Materialiser

from scaleguard.findings.model import FindingsFile, Status
from scaleguard.policies.engine import evaluate, render
from scaleguard.policies.loader import load_policies
from scaleguard.policies.model import Policy, Thresholds
from scaleguard.snapshot.model import Snapshot

NOW = datetime.now(UTC).replace(microsecond=0)


def user_policies(tmp_path: Path, text: str) -> list[Policy]:
    folder = tmp_path / "user-pack"
    folder.mkdir(exist_ok=True)
    (folder / "policy.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return [p for p in load_policies([folder]) if p.id.startswith("XX-")]


def cluster(tmp_path: Path, **spec: object) -> Snapshot:
    return Materialiser(dict(spec), NOW).snapshot(tmp_path / "evidence")


BASE = """\
    name: {name}
    title: A title
    severity: medium
    scope: worker
    description: For the engine tests.
    remediation: manual
    let:
      host: node.name
    message: 'problem on {{host}}'
"""


def policy_text(pid: str, name: str, body: str) -> str:
    return f"id: {pid}\n" + textwrap.dedent(BASE).format(name=name) + textwrap.dedent(body)


def test_cel_runtime_error_is_an_error_finding(tmp_path: Path) -> None:
    policies = user_policies(
        tmp_path,
        policy_text(
            "XX-W01",
            "divides-by-zero",
            """\
        check: worker.endpoint.port / 0 == 1
        """,
        ),
    )
    findings = evaluate(cluster(tmp_path), policies, now=NOW)
    assert [(f.policy, f.node, f.status) for f in findings] == [("XX-W01", "WORKER01", Status.ERROR)]
    assert "could not be evaluated (check)" in findings[0].message
    assert "division by zero" in findings[0].message
    assert findings[0].evidence["stage"] == "check"


def test_check_must_give_a_boolean_or_null(tmp_path: Path) -> None:
    policies = user_policies(
        tmp_path,
        policy_text(
            "XX-W01",
            "gives-a-string",
            """\
        check: node.name
        """,
        ),
    )
    finding = evaluate(cluster(tmp_path), policies, now=NOW)[0]
    assert finding.status is Status.ERROR
    assert "must give true, false or null, not str 'WORKER01'" in finding.message


def test_a_failing_let_is_an_error_too(tmp_path: Path) -> None:
    text = policy_text("XX-W01", "let-fails", "check: 'true'\n").replace(
        "  host: node.name", "  host: worker_cert.key_bits + 'bits'"
    )
    finding = evaluate(cluster(tmp_path), user_policies(tmp_path, text), now=NOW)[0]
    assert finding.status is Status.ERROR and "(let)" in finding.message


def test_for_each_must_give_named_items(tmp_path: Path) -> None:
    text = """\
        id: XX-C01
        name: bad-items
        title: A title
        severity: low
        scope: cluster
        description: For the engine tests.
        remediation: manual
        for_each: "[1, 2]"
        check: 'true'
        message: never
        """
    finding = evaluate(cluster(tmp_path), user_policies(tmp_path, text), now=NOW)[0]
    assert (finding.node, finding.status) == ("CLUSTER", Status.ERROR)
    assert "(for_each)" in finding.message


def test_uncollected_nodes_get_only_the_collection_finding(tmp_path: Path) -> None:
    snapshot = cluster(
        tmp_path,
        workers=["WORKER01", "WORKER02"],
        nodes={"WORKER02": {"collection": {"state": "timed_out", "reason": "deadline of 60 s"}}},
    )
    findings = evaluate(snapshot, load_policies([]), now=NOW)
    on_worker02 = [(f.policy, f.status) for f in findings if f.node == "WORKER02"]
    assert on_worker02 == [("SO-C01", Status.ERROR)]
    assert {f.policy for f in findings if f.node == "WORKER01"} == {f"SO-W{i:02d}" for i in range(1, 14)} | {"SO-C01"}


def test_policy_scopes_run_per_master_and_per_worker(tmp_path: Path) -> None:
    snapshot = cluster(tmp_path, masters=["MASTER01", "MASTER02"], workers=["WORKER01", "WORKER02", "WORKER03"])
    findings = evaluate(snapshot, load_policies([]), now=NOW)
    per_policy: dict[str, list[str]] = {}
    for f in findings:
        per_policy.setdefault(f.policy, []).append(f.node)
    assert per_policy["SO-M05"] == ["MASTER01", "MASTER02"]
    assert per_policy["SO-W08"] == ["WORKER01", "WORKER02", "WORKER03"]
    assert per_policy["SO-C02"] == ["CLUSTER"]
    assert per_policy["SO-C01"] == ["MASTER01", "MASTER02", "WORKER01", "WORKER02", "WORKER03"]
    assert all(f.status is Status.PASS for f in findings if f.policy != "SO-C03"), [
        (f.policy, f.node, f.message) for f in findings if f.status is not Status.PASS
    ]


def test_evaluation_is_pure_and_repeatable(tmp_path: Path) -> None:
    snapshot = cluster(tmp_path, nodes={"WORKER01": {"worker_service": {"State": "Stopped"}}})
    before = snapshot.model_dump_json()
    policies = load_policies([])
    first = evaluate(snapshot, policies, now=NOW)
    second = evaluate(snapshot, policies, now=NOW)
    assert snapshot.model_dump_json() == before
    assert [f.model_dump() for f in first] == [f.model_dump() for f in second]


def test_findings_are_the_findings_json_contract(tmp_path: Path) -> None:
    findings = evaluate(cluster(tmp_path), load_policies([]), now=NOW)
    document = json.loads(FindingsFile(generated_at=NOW, source="x", findings=findings).model_dump_json())
    for entry in document["findings"]:
        assert {"policy", "node", "status", "severity", "message", "evidence", "remediation"} <= set(entry)
    m07 = next(e for e in document["findings"] if e["policy"] == "SO-M07")
    assert m07["evidence"]["not_after"].startswith(str(NOW.year + 1)[:3])  # datetimes become ISO text
    assert m07["subject"] == m07["evidence"]["thumbprint"]


def test_store_facts_are_built_when_a_policy_reads_them(tmp_path: Path) -> None:
    text = policy_text(
        "XX-W01",
        "no-expired-root",
        """\
        requires: [node.root]
        check: '!node.root.exists(c, c.expired)'
        """,
    ).replace(
        "  host: node.name",
        "  host: node.name\n  expired: node.root.filter(c, c.expired).map(c, c.thumbprint)",
    )
    text = text.replace("problem on {host}", "expired in Root on {host}: {expired}")
    policies = user_policies(tmp_path, text)
    healthy = evaluate(cluster(tmp_path / "a"), policies, now=NOW)[0]
    assert healthy.status is Status.PASS
    spec = {
        "certs": {"gone": {"cn": ["Old CA"], "days_from": -800, "days": 365}},
        "nodes": {"WORKER01": {"root_add": ["gone"]}},
    }
    materialiser = Materialiser(spec, NOW)
    finding = evaluate(materialiser.snapshot(tmp_path / "b"), policies, now=NOW)[0]
    assert finding.status is Status.FAIL
    assert finding.evidence["expired"] == [materialiser.cert("gone").thumbprint]


def test_a_check_that_is_also_a_required_path_is_given_its_fact(tmp_path: Path) -> None:
    text = policy_text("XX-W01", "in-root", "requires: [worker.in_root]\ncheck: worker.in_root\n")
    finding = evaluate(cluster(tmp_path), user_policies(tmp_path, text), now=NOW)[0]
    assert (finding.status, finding.message) == (Status.PASS, "A title")


def test_null_check_is_not_assessed_with_the_message(tmp_path: Path) -> None:
    policies = user_policies(tmp_path, policy_text("XX-W01", "cannot-decide", "check: 'null'\n"))
    finding = evaluate(cluster(tmp_path), policies, now=NOW)[0]
    assert finding.status is Status.NOT_ASSESSED and finding.applicable
    assert finding.message == "Could not decide from the collected facts: problem on WORKER01"


def test_render_is_for_people() -> None:
    values = {"a": None, "b": ["x", "y"], "c": [], "d": True, "e": datetime(2030, 1, 2, 3, 4, tzinfo=UTC)}
    assert render("{a}|{b}|{c}|{d}|{e}", values) == "unknown|x, y|none|true|2030-01-02 03:04 UTC"


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="high days <= medium days"):
        Thresholds(expiry_high_days=90, expiry_medium_days=60)
    assert Thresholds().facts() == {"expiry_high_days": 30, "expiry_medium_days": 60, "min_rsa_bits": 2048}


def test_a_required_whole_value_is_checked_in_python_not_converted_for_cel(tmp_path: Path) -> None:
    from scaleguard.policies import engine

    text = policy_text(
        "XX-W01",
        "needs-the-cert",
        """\
        requires: [worker_cert]
        check: worker_cert == null || worker_cert.days_left > 0
        """,
    )
    policy = user_policies(tmp_path, text)[0]
    spec = engine._spec_of([policy])
    assert spec["worker_cert"] == frozenset({"days_left"}), "only the key the expressions read"
    finding = evaluate(cluster(tmp_path), [policy], now=NOW)[0]
    assert finding.status is Status.PASS
