"""Lab node state: built from evidence folders, mutated only through registered actions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaleguard.lab.scenario import demo_scenario
from scaleguard.lab.serve import LabError, load_faults
from scaleguard.lab.state import (
    ACTIONS,
    ActionError,
    LabFaults,
    LabNode,
    action,
    dispatch,
    load_actions,
    load_state,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lab-state") / "contoso"
    demo_scenario(2, seed=3).write(folder)
    return folder


def test_state_holds_the_raw_material_of_every_node(demo: Path) -> None:
    state = load_state(demo)
    [cluster] = state.clusters
    assert cluster.name == "contoso"
    assert [n.name for n in cluster.nodes] == ["MASTER01", "WORKER01", "WORKER02"]
    master = state.node("master01")
    assert master is not None and master.roles() == ["master"]
    assert master.master_config == (demo / "MASTER01" / "MasterSettings.config").read_bytes()
    assert (
        master.config_path("master")
        == "C:\\Program Files\\Microsoft SQL Server\\150\\DTS\\Binn\\MasterSettings.config"
    )
    assert master.bindings and master.bindings[0].ip_port == "0.0.0.0:8391"
    assert {c.thumbprint for c in master.root} == {
        p.stem for p in (demo / "MASTER01" / "certs" / "Root").iterdir()
    }
    assert master.ssisdb is not None and master.ssisdb.worker_agents


def test_a_folder_of_clusters_is_also_accepted(demo: Path) -> None:
    assert [c.name for c in load_state(demo.parent).clusters] == ["contoso"]


def test_faults_are_attached_by_node_name_and_unknown_names_refused(demo: Path) -> None:
    state = load_state(demo, {"worker01": LabFaults(hang="receive")})
    node = state.node("WORKER01")
    assert node is not None and node.faults.hang == "receive"
    with pytest.raises(ValueError, match="unknown node"):
        load_state(demo, {"WORKER99": LabFaults(down=True)})


def test_fault_files_are_checked(tmp_path: Path) -> None:
    good = tmp_path / "faults.json"
    good.write_text(json.dumps({"W1": {"expired_shells": 1, "tls_name": "x"}}), encoding="utf-8")
    assert load_faults(good)["W1"] == LabFaults(expired_shells=1, tls_name="x")
    for content, message in (
        ({"W1": {"explode": True}}, "unknown lab fault"),
        ({"W1": {"hang": "forever"}}, "hang must be"),
        (["W1"], "expected an object"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(content), encoding="utf-8")
        with pytest.raises(LabError, match=message):
            load_faults(bad)


def test_collect_renders_the_agent_document_and_sections_can_be_chosen(demo: Path) -> None:
    load_actions()
    node = load_state(demo).node("WORKER01")
    assert node is not None
    document = dispatch(node, {"op": "collect"})
    assert document["schema"] == "scaleguard-agent/1"
    assert [c["role"] for c in document["configs"]] == ["worker"]
    assert document["ssisdb"] is None  # only masters have SSISDB
    only = dispatch(node, {"op": "collect", "sections": ["services"]})
    assert set(only) == {"schema", "op", "errors", "services"}
    with pytest.raises(ActionError, match="unknown section"):
        dispatch(node, {"op": "collect", "sections": ["passwords"]})


def test_unknown_ops_are_refused_and_new_ops_can_be_registered(demo: Path) -> None:
    node = load_state(demo).node("WORKER01")
    assert node is not None
    with pytest.raises(ActionError, match="unknown op 'format-c'"):
        dispatch(node, {"op": "format-c"})

    @action("test-stop-service")
    def stop_service(target: LabNode, request: dict[str, object]) -> dict[str, object]:
        service = target.service(str(request["name"]))
        if service is None:
            raise ActionError("no such service")
        before, service.state = service.state, "Stopped"
        return {"before": before, "after": service.state}

    try:
        assert dispatch(node, {"op": "test-stop-service", "name": "SSISScaleOutWorker150"}) == {
            "before": "Running",
            "after": "Stopped",
        }
        services = dispatch(node, {"op": "collect", "sections": ["services"]})["services"]
        assert services[0]["State"] == "Stopped"  # the next collect sees what the action did
    finally:
        ACTIONS.pop("test-stop-service")
