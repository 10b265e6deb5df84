"""The pure halves of applying a reviewed plan: resolving intent on the live node, and validating the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scaleguard.remediators.model import Plan, Step, Unit
from scaleguard.remediators.resolve import ResolveError, config_path_problem, resolve
from scaleguard.remediators.validate import PlanInvalid, load_plan
from scaleguard.snapshot.model import ConfigFile, HostIdentity, NodeSnapshot, Service

BINN = "C:\\Program Files\\Microsoft SQL Server\\{}\\DTS\\Binn\\{}"
THUMB = "A" * 40


def node(*, worker_path: str | None = None, services: list[str] | None = None) -> NodeSnapshot:
    return NodeSnapshot(
        name="WORKER01",
        identity=HostIdentity(computer_name="WORKER01"),
        worker_config=ConfigFile(path=worker_path) if worker_path is not None else None,
        services=[Service(name=s, state="Running") for s in services] if services is not None else None,
    )


def step(action: str, params: dict[str, Any], step_id: str = "s001", unit: str = "u01") -> Step:
    return Step.model_validate(
        {"id": step_id, "unit": unit, "cluster": "C", "node": "WORKER01", "action": action, "params": params}
    )


WRITE = ("write_config", {"config": "worker", "setting": "MasterHttpsCertThumbprint", "value": THUMB})
RESTART = ("restart_service", {"role": "worker"})


@pytest.mark.parametrize("version", ["140", "150", "160"])
def test_the_settings_file_is_the_one_the_live_node_reports(version: str) -> None:
    path = BINN.format(version, "WorkerSettings.config")
    resolved = resolve(step(*WRITE), node(worker_path=path))
    assert resolved.params.agent_fields()["path"] == path
    endpoint = resolve(step("set_master_endpoint", {"host": "m1", "port": 8391}), node(worker_path=path))
    assert endpoint.params.agent_fields() == {
        "path": path, "role": "worker", "setting": "MasterEndpoint", "value": "https://m1:8391",
    }


@pytest.mark.parametrize(
    ("path", "why"),
    [
        (BINN.format("130", "WorkerSettings.config"), "Microsoft SQL Server\\<140|150|160>"),
        (BINN.format("150", "MasterSettings.config"), "is not WorkerSettings.config"),
        ("C:\\Windows\\System32\\drivers\\etc\\hosts", "is not in a"),
        ("WorkerSettings.config", "not an absolute Windows path"),
        ("C:\\Program Files\\..\\Microsoft SQL Server\\150\\DTS\\Binn\\WorkerSettings.config", "not a plain path"),
    ],
)
def test_a_settings_file_elsewhere_is_refused(path: str, why: str) -> None:
    assert why in (config_path_problem(path, "worker") or "")
    with pytest.raises(ResolveError, match="is not"):
        resolve(step(*WRITE), node(worker_path=path))


def test_no_settings_file_or_no_collection_cannot_be_resolved() -> None:
    with pytest.raises(ResolveError, match="has no WorkerSettings.config"):
        resolve(step(*WRITE), node())
    with pytest.raises(ResolveError, match="was not collected"):
        resolve(step(*WRITE), None)


@pytest.mark.parametrize(
    ("services", "named", "expect"),
    [
        (["SSISScaleOutWorker150", "SSISScaleOutMaster150"], None, "SSISScaleOutWorker150"),
        (["ssisscaleoutworker160"], "SSISScaleOutWorker160", "ssisscaleoutworker160"),
        (["SSISScaleOutWorker140", "SSISScaleOutWorker150"], None, "2 Scale Out worker services"),
        (["SSISScaleOutWorker140"], "SSISScaleOutWorker150", "has no service SSISScaleOutWorker150"),
        ([], None, "no Scale Out worker services"),
        (None, None, "services were not collected"),
    ],
)
def test_the_service_name_is_the_live_nodes(services: list[str] | None, named: str | None, expect: str) -> None:
    params = {"role": "worker", **({"name": named} if named else {})}
    if expect.startswith("SSIS") or expect.startswith("ssis"):
        assert resolve(step("restart_service", params), node(services=services)).params.agent_fields() == {
            "name": expect
        }
    else:
        with pytest.raises(ResolveError, match=expect):
            resolve(step("restart_service", params), node(services=services))


def test_a_service_name_of_the_other_role_is_refused_by_the_schema() -> None:
    with pytest.raises(ValueError, match="is not the Scale Out worker service"):
        step("restart_service", {"role": "worker", "name": "SSISScaleOutMaster150"})


def plan_json(steps: list[Step], units: list[Unit] | None = None, **fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    unit_list = units or [
        Unit(id="u01", remediation="repin-worker-master-thumbprint", cluster="C", target="WORKER01",
             summary="-", steps=[s.id for s in steps])
    ]
    plan = Plan(generated_at=now, expires_at=now + timedelta(days=1), units=unit_list, steps=steps)
    return {**json.loads(plan.to_json()), **fields}


def _ref_to_a_step_that_creates_nothing(raw: dict[str, Any]) -> None:
    raw["steps"][1]["params"]["value"] = {"from_step": "s001", "field": "thumbprint"}


def _depends_on_a_later_step(raw: dict[str, Any]) -> None:
    raw["steps"][0]["depends_on"] = ["s002"]


def _same_id_twice(raw: dict[str, Any]) -> None:
    raw["steps"][1]["id"] = "s001"


def _step_in_no_unit(raw: dict[str, Any]) -> None:
    raw["units"][0]["steps"] = ["s001"]


def _expect_of_another_setting(raw: dict[str, Any]) -> None:
    raw["steps"][1]["expect"] = {"kind": "setting", "role": "master", "setting": "SSLCertThumbprint", "value": None}


def _old_schema(raw: dict[str, Any]) -> None:
    raw["schema"] = "scaleguard-plan/1"


def _string_for_an_integer(raw: dict[str, Any]) -> None:
    raw["steps"].append({**raw["steps"][0], "id": "s003", "action": "set_master_endpoint",
                         "params": {"host": "m1", "port": "8391"}})
    raw["units"][0]["steps"].append("s003")


def _action_not_a_name(value: object) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        raw["steps"][1]["action"] = value

    return edit


BROKEN: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "reference to a step that creates nothing": (
        _ref_to_a_step_that_creates_nothing,
        "step s002: <thumbprint of s001>",
    ),
    "dependency on a later step": (_depends_on_a_later_step, "step s001: depends on s002"),
    "one id twice": (_same_id_twice, "step s001: the id is used twice"),
    "a step in no unit": (_step_in_no_unit, "step s002: unit u01 does not list it"),
    "expect about another setting": (_expect_of_another_setting, "step s002: Value error, expect (setting)"),
    "schema 1": (_old_schema, "plan: schema 'scaleguard-plan/1'"),
    "a string for an integer (strict types)": (_string_for_an_integer, "step s003: params.port"),
    # found by fuzzing: an unhashable action crashed the check of the parameters with a TypeError
    "an action that is a list": (_action_not_a_name(["write_config"]), "step s002: action"),
    "an action that is an object": (_action_not_a_name({"write_config": 1}), "step s002: action"),
    "an action that is a number": (_action_not_a_name(7), "step s002: action"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_plan_that_does_not_hold_together_is_refused_naming_the_step(case: str) -> None:
    raw = plan_json([step(*RESTART), step(*WRITE, step_id="s002")])
    load_plan(json.dumps(raw).encode())  # the unbroken plan loads
    edit, reason = BROKEN[case]
    edit(raw)
    with pytest.raises(PlanInvalid) as refused:
        load_plan(json.dumps(raw).encode())
    assert any(line.startswith(reason) for line in refused.value.errors), refused.value.errors


def test_the_sha256_is_of_the_exact_bytes() -> None:
    raw = plan_json([step(*RESTART)])
    compact, indented = json.dumps(raw).encode(), json.dumps(raw, indent=2).encode()
    assert load_plan(compact).plan == load_plan(indented).plan
    assert load_plan(compact).sha256 != load_plan(indented).sha256
