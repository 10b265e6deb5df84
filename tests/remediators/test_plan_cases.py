"""Pure planning against the cases in plan_cases.yaml: findings in, units and steps out.

Each case's cluster is written as a real evidence folder and read back (the policy cases' spec language,
:mod:`fixcases`), planned with fixed options, and compared with the case's expectations; the keys are
described at the top of the YAML file. Every planned step's parameters and texts go through the same
models and :func:`describe` the review table uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from fixcases import FIXED_GUID, Cluster, finding, findings_file, options

from scaleguard.findings.model import Status
from scaleguard.lab.certs import CertSpec, make_certificate
from scaleguard.remediators import MasterPfx, plan
from scaleguard.remediators.describe import describe
from scaleguard.remediators.model import Plan, SecretRef, Step, StepRef
from scaleguard.remediators.pfx import load_master_pfx
from scaleguard.remediators.validate import plan_problems

CASES: dict[str, dict[str, Any]] = yaml.safe_load(
    (Path(__file__).with_name("plan_cases.yaml")).read_text(encoding="utf-8")
)["cases"]
CONSTANTS = {
    "appid": "{a1f96506-93e0-4c91-9171-05a2f6739e13}",  # what the evidence writer puts on the master binding
    "guid": FIXED_GUID,
    "master_service": "SSISScaleOutMaster150",
    "worker_service": "SSISScaleOutWorker150",
    "worker_account": "NT Service\\SSISScaleOutWorker150",
}
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_:,]+)\}")


def make_pfx(folder: Path, names: list[str]) -> MasterPfx:
    issued = make_certificate(CertSpec(common_names=tuple(names[:1]), san_dns=tuple(names[1:]), key_seed=77))
    data = pkcs12.serialize_key_and_certificates(
        b"m", issued.key, issued.certificate, None, BestAvailableEncryption(b"s3cret")  # type: ignore[arg-type]
    )
    path = folder / "master.pfx"
    path.write_bytes(data)
    return load_master_pfx(path, "s3cret", SecretRef(secret_env="PFX_PASSWORD"))


class Filler:
    """Turns a case's placeholders into the values of its materialised cluster."""

    def __init__(self, cluster: Cluster, pfx: MasterPfx | None) -> None:
        self.cluster = cluster
        self.pfx = pfx

    def one(self, token: str) -> Any:
        kind, _, arg = token.partition(":")
        if token in CONSTANTS:
            return CONSTANTS[token]
        if token == "pfx" and self.pfx is not None:
            return self.pfx.thumbprint
        if token == "pfx_der" and self.pfx is not None:
            return self.pfx.der_b64
        if kind == "ref":
            return StepRef(from_step=arg, field="thumbprint")
        if kind == "refder":
            return StepRef(from_step=arg, field="der_b64")
        if kind == "der":
            return self.cluster.der_b64(arg)
        if kind in ("min", "max"):
            thumbs = [self.cluster.thumb(name) for name in arg.split(",")]
            return min(thumbs) if kind == "min" else max(thumbs)
        return self.cluster.thumb(token)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, str):
            return value
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return self.one(whole.group(1))
        return _PLACEHOLDER.sub(lambda m: str(self.one(m.group(1))), value)


def params(step: Step) -> dict[str, Any]:
    """The parameters that run (None fields left out, secrets and refs as their models)."""
    values = {name: getattr(step.params, name) for name in type(step.params).model_fields}
    return {
        k: v.model_dump(exclude_none=True) if isinstance(v, SecretRef) else v
        for k, v in values.items()
        if v is not None
    }


def _findings(items: list[str]) -> Any:
    made = []
    for item in items:
        policy, node, remediation, *status = item.split()
        made.append(finding(policy, node, remediation, status=Status(status[0]) if status else Status.FAIL))
    return findings_file(*made)


@pytest.mark.parametrize("name", sorted(CASES))
def test_plan_case(name: str, tmp_path: Path) -> None:  # noqa: C901, PLR0912 - one branch per expectation kind
    case = CASES[name]
    cluster = Cluster(case.get("cluster") or {}, tmp_path / "evidence")
    pfx = make_pfx(tmp_path, case["pfx"]) if "pfx" in case else None
    fill = Filler(cluster, pfx)
    for key in case.get("failing", []):
        policy, node = key.split()
        assert (policy, node) in cluster.failing(), f"the case must plant {key}"
    planned_with = options(master_pfx=pfx, **case.get("options", {}))
    result: Plan = plan(_findings(case["findings"]), cluster.snapshot, planned_with)
    assert plan_problems(result) == []  # what the planner writes is a plan validation accepts
    by_id = {s.id: s for s in result.steps}

    if "steps" in case:
        want = [fill(row) for row in case["steps"]]
        got = [
            [s.id, s.unit, s.node, s.action, params(s)][: len(row)]
            for s, row in zip(result.steps, want, strict=False)
        ]
        assert len(result.steps) == len(want) and got == want
    if "tail" in case:
        want = [fill(row) for row in case["tail"]]
        assert [[s.unit, s.node, s.action, params(s)] for s in result.steps[-len(want) :]] == want
    if "actions" in case:
        assert [[s.node, s.action] for s in result.steps] == case["actions"]
    for step_id, (node, action) in (case.get("step_nodes") or {}).items():
        assert (by_id[step_id].node, by_id[step_id].action) == (node, action)
    for step_id, want in (case.get("step_params") or {}).items():
        assert params(by_id[step_id]) == fill(want), step_id
    for step_id, want in (case.get("step_params_has") or {}).items():
        got = params(by_id[step_id])
        assert {k: got.get(k) for k in want} == fill(want), step_id
    for action, count in (case.get("counts") or {}).items():
        assert [s.action for s in result.steps].count(action) == count
    for step_id, deps in (case.get("depends_on") or {}).items():
        assert by_id[step_id].depends_on == deps, step_id
    for step_id, texts in (case.get("describe") or {}).items():
        shown = describe(by_id[step_id])
        for key, value in fill(texts).items():
            part, _, how = key.partition("_")
            actual = getattr(shown, part)
            if how == "starts":
                assert actual.startswith(value), (step_id, actual)
            elif how == "has":
                assert all(fragment in actual for fragment in value), (step_id, actual)
            else:
                assert actual == value, (step_id, key)
    if "units" in case:
        assert len(result.units) == len(case["units"])
        for unit, want in zip(result.units, case["units"], strict=True):
            assert {k: getattr(unit, k) for k in want} == want
    for unit_id, (node, action) in (case.get("unit_has_step") or {}).items():
        assert [node, action] in [[result.step(s).node, result.step(s).action] for s in result.unit(unit_id).steps]
    for key, (outcome, unit) in (case.get("outcomes") or {}).items():
        found = next(d for d in result.dispositions if d.finding == key)
        assert (found.outcome, found.unit) == (outcome, unit), key
    if "manual" in case:
        manual = {f"{m.policy} {m.node}": m for m in result.manual}
        assert set(manual) == set(case["manual"])
        for key, fragments in fill(case["manual"]).items():
            assert all(fragment in manual[key].reason for fragment in fragments), manual[key].reason
        for key, fields in (case.get("manual_fields") or {}).items():
            assert {k: getattr(manual[key], k) for k in fields} == fields
        for key, groups in (case.get("manual_steps_has") or {}).items():
            for words in groups:
                assert any(all(w in step for w in words) for step in manual[key].steps), (key, words)
    if case.get("empty"):
        assert result.empty
    if case.get("no_dispositions"):
        assert not result.dispositions
    for fragment in case.get("warnings_has", []):
        assert any(fragment in w for w in result.warnings), result.warnings
    for fragment in case.get("warnings_lack", []):
        assert not any(fragment in w for w in result.warnings), result.warnings
    for fragment in case.get("json_lacks", []):
        assert fragment not in result.to_json()
