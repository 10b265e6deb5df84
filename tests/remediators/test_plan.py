"""Pure planning, the parts that are not one case of findings in and steps out (those are data:
plan_cases.yaml, run by test_plan_cases.py): --max-nodes, plan.json round trips, a whole audit's
dispositions, the PFX reader, and that every remediation name has its remediator."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography import x509
from fixcases import finding, findings_file, options
from test_plan_cases import make_pfx

from scaleguard.findings.model import Status
from scaleguard.remediators import PlanInputInvalid, PlanRefused, plan
from scaleguard.remediators.model import Plan, SecretRef

EXPIRING = {"cn": ["master01.contoso.test", "MASTER01", "10.0.1.1"], "days_from": -700, "days": 710}
ISSUING_CA_CERTS: dict[str, Any] = {
    "ca": {"cn": ["Contoso Root CA"]},
    "issuing": {"cn": ["Contoso Issuing CA 01"], "issuer": "ca"},
}


def test_max_nodes_refuses_a_larger_plan(cluster: Any) -> None:
    c = cluster({"workers": ["WORKER01", "WORKER02"], "certs": {"master": EXPIRING}})
    with pytest.raises(PlanRefused, match="touches 3 nodes") as refused:
        plan(
            findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")),
            c.snapshot,
            options(max_nodes=2),
        )
    assert refused.value.plan.nodes() == ["CLUSTER/MASTER01", "CLUSTER/WORKER01", "CLUSTER/WORKER02"]
    allowed = plan(
        findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")),
        c.snapshot,
        options(max_nodes=3),
    )
    assert len(allowed.nodes()) == 3


@pytest.mark.parametrize("bad", ["WORKER/01", "WORKER\\01", "WORKER\x0701", "W" * 254])
@pytest.mark.parametrize("where", ["finding", "snapshot"])
def test_a_name_no_step_may_carry_is_refused_before_planning(cluster: Any, bad: str, where: str) -> None:
    """Found by fuzzing ``fix --findings``: such a name stopped the planner half-way with a pydantic error."""
    c = cluster({"workers": ["WORKER01", "WORKER02"], "certs": {"master": EXPIRING}})
    snapshot = c.snapshot.model_copy(deep=True)
    snapshot.clusters[0].nodes[-1].name = bad
    failing = finding("SO-M07", "MASTER01", "rotate-master-certificate")
    if where == "finding":
        failing = finding("SO-W10", bad, "rotate-worker-certificate")
    with pytest.raises(PlanInputInvalid) as refused:
        plan(findings_file(failing), snapshot, options())
    assert str(refused.value).startswith("cannot plan: 1 cluster or node name(s) no plan step may carry")
    assert repr(bad[:80]) in str(refused.value)


def test_a_service_name_outside_the_documented_pattern_is_not_one_a_step_names(cluster: Any) -> None:
    """Found by fuzzing node answers: a node listing ``SSISScaleOutWorker150[::]:0`` next to its real service
    had the restart step name it, which the step's model refuses, so planning stopped with a traceback."""
    c = cluster({"workers": ["WORKER01"], "certs": {"master": EXPIRING}})
    snapshot = c.snapshot.model_copy(deep=True)
    worker = next(n for n in snapshot.clusters[0].nodes if n.name == "WORKER01")
    assert worker.services
    real = worker.services[0]
    worker.services.append(real.model_copy(update={"name": real.name + "[::]:0"}))
    planned = plan(findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")), snapshot, options())
    restarts = [s for s in planned.steps if s.action == "restart_service" and s.node == "WORKER01"]
    assert [s.params.name for s in restarts] == [real.name]  # type: ignore[union-attr]


def test_a_collected_value_no_step_may_carry_refuses_the_plan_naming_it(cluster: Any) -> None:
    """The net under every remediator: a node value a step's model refuses (here a binding's appid that is
    no GUID) refuses the whole plan with that value, never a half-built plan or a traceback."""
    c = cluster({"nodes": {"MASTER01": {"bindings": [{"ip_port": "0.0.0.0:8391", "cert": "master", "store": None}]}}})
    snapshot = c.snapshot.model_copy(deep=True)
    master = next(n for n in snapshot.clusters[0].nodes if n.name == "MASTER01")
    assert master.bindings
    master.bindings[0].app_id = "$(whoami)"
    with pytest.raises(PlanInputInvalid) as refused:
        plan(findings_file(finding("SO-M06", "MASTER01", "repair-master-binding")), snapshot, options())
    assert "SetBinding.app_id" in str(refused.value) and "'$(whoami)'" in str(refused.value)


def test_plan_json_round_trips(cluster: Any) -> None:
    c = cluster({"certs": {"master": EXPIRING}})
    original = plan(findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")), c.snapshot, options())
    text = original.to_json()
    assert '"schema": "scaleguard-plan/2"' in text and '"from_step": "s001"' in text
    assert Plan.from_json(text) == original
    with pytest.raises(ValueError, match="not a scaleguard-plan/2 plan"):
        Plan.from_json(text.replace("scaleguard-plan/2", "other/1"))


def test_every_failing_finding_of_a_real_audit_gets_exactly_one_disposition(cluster: Any) -> None:
    c = cluster(
        {
            "workers": ["WORKER01", "WORKER02"],
            "certs": ISSUING_CA_CERTS,
            "nodes": {
                "MASTER01": {
                    "bindings": [{"ip_port": "0.0.0.0:8391", "cert": "master", "store": None}],
                    "master_service": {"StartMode": "Manual"},
                    "root_add": ["ca", "issuing"],
                    "schannel": {},
                },
                "WORKER01": {"key_readers": {"WORKER01": ["NT AUTHORITY\\SYSTEM"]}},
                "WORKER02": {"root_remove": ["WORKER02"]},
            },
        }
    )
    found = c.findings()
    failing = [f for f in found if f.status in (Status.FAIL, Status.ERROR)]
    assert {f.policy for f in failing} >= {"SO-M06", "SO-M09", "SO-M11", "SO-W09", "SO-W07"}
    result = plan(findings_file(*found), c.snapshot, options())
    keys = sorted(d.finding for d in result.dispositions)
    assert keys == sorted(f"{f.policy}@CLUSTER/{f.node}" for f in failing)
    assert all(d.outcome == "planned" for d in result.dispositions)


def test_a_pfx_is_read_once_and_its_password_stays_a_reference(tmp_path: Any) -> None:
    pfx = make_pfx(tmp_path, ["a.contoso.test", "b.contoso.test"])
    assert pfx.names == ("a.contoso.test", "b.contoso.test") and pfx.self_signed and pfx.key_bits == 2048
    cert = x509.load_der_x509_certificate(base64.b64decode(pfx.der_b64))
    assert cert.subject.rfc4514_string() == pfx.subject
    assert pfx.password == SecretRef(secret_env="PFX_PASSWORD")


def test_every_remediation_name_has_exactly_one_remediator() -> None:
    """A policy may only name a remediation the fix engine can plan (manual included)."""
    from scaleguard.findings.model import REMEDIATIONS
    from scaleguard.remediators.planner import REMEDIATORS

    names = [r.name for r in REMEDIATORS]
    assert sorted(names) == sorted(REMEDIATIONS)
