"""Lab node state: built from what the project's evidence reader read, changed only through the dispatch table,
and never kinder than Windows (unknown stays unknown, one key behind every store copy, services take time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaleguard.collectors.agent.schema import AgentDocument
from scaleguard.lab.dispatch import HANDLERS, dispatch, dispatch_timed
from scaleguard.lab.evidence import NodeEvidence
from scaleguard.lab.from_evidence import load_state
from scaleguard.lab.scenario import demo_scenario
from scaleguard.lab.serve import LabError, load_faults
from scaleguard.lab.state import ActionError, LabFaults, LabService


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
    assert {c.thumbprint for c in master.root or []} == {
        p.stem for p in (demo / "MASTER01" / "certs" / "Root").iterdir()
    }
    assert master.ssisdb is not None and master.ssisdb.worker_agents
    assert master.ssisdb.source == "MASTER01/ssisdb.json"


def test_a_folder_of_clusters_is_also_accepted_and_node_names_may_repeat(demo: Path, tmp_path: Path) -> None:
    assert [c.name for c in load_state(demo.parent).clusters] == ["contoso"]
    for name in ("east", "west"):
        demo_scenario(1, seed=3).write(tmp_path / name)
    state = load_state(tmp_path)
    assert [(n.cluster, n.name) for n in state.nodes()] == [
        ("east", "MASTER01"), ("east", "WORKER01"), ("west", "MASTER01"), ("west", "WORKER01"),
    ]
    west = state.node("MASTER01", "west")
    assert west is not None and west.cluster == "west"
    with pytest.raises(ValueError, match="several clusters"):
        load_state(tmp_path, {"MASTER01": LabFaults(down=True)})
    faulty = load_state(tmp_path, {"west/MASTER01": LabFaults(down=True)})
    assert [n.faults.down for n in faulty.nodes()] == [False, False, True, False]


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


def test_the_dispatch_table_is_explicit_and_unknown_ops_are_refused(demo: Path) -> None:
    node = load_state(demo).node("WORKER01")
    assert node is not None
    with pytest.raises(ActionError, match="unknown op 'format-c'"):
        dispatch(node, {"op": "format-c"})
    assert all(callable(handler) for handler in HANDLERS.values())
    assert {"collect", "set_binding", "restart_service"} <= set(HANDLERS)


# --- the healthy SSISDB default -------------------------------------------------------------------------


def _cluster(tmp_path: Path, *, masters: int = 1, master_thumbprint: str | None = "AB" * 20) -> Path:
    folder = tmp_path / "C1"
    settings = {"PortNumber": 8391} | ({"SSLCertThumbprint": master_thumbprint} if master_thumbprint else {})
    for index in range(masters):
        NodeEvidence(name=f"MASTER0{index + 1}", master_settings=settings).write(folder)
    for name in ("WORKER01", "WORKER02"):
        NodeEvidence(name=name, worker_settings={"DisplayName": f"{name} display"}).write(folder)
    return folder


def test_without_ssisdb_json_the_masters_share_a_healthy_ssisdb(tmp_path: Path) -> None:
    state = load_state(_cluster(tmp_path, masters=2, master_thumbprint="ab " * 20))
    first, second = state.node("MASTER01"), state.node("MASTER02")
    assert first is not None and second is not None and first.ssisdb is second.ssisdb  # one database
    assert first.ssisdb is not None and first.ssisdb.source == "lab default"
    assert first.ssisdb.master_properties == {"SSLCERT_THUMBPRINT": "AB" * 20}
    agents = first.ssisdb.worker_agents
    assert [(a["MachineName"], a["DisplayName"], a["IsEnabled"]) for a in agents] == [
        ("WORKER01", "WORKER01 display", True), ("WORKER02", "WORKER02 display", True),
    ]
    document = AgentDocument.model_validate(dispatch(first, {"op": "collect"}))
    assert document.ssisdb is not None and len({a.WorkerAgentId for a in document.ssisdb.worker_agents}) == 2


def test_no_ssisdb_default_is_invented_without_a_configured_thumbprint(tmp_path: Path) -> None:
    node = load_state(_cluster(tmp_path, master_thumbprint=None)).node("MASTER01")
    assert node is not None and node.ssisdb is None
    document = dispatch(node, {"op": "collect", "sections": ["ssisdb"]})
    assert document["ssisdb"] is None and document["errors"][0]["source"] == "ssisdb"


def test_a_bad_or_disagreeing_ssisdb_json_stops_the_lab(tmp_path: Path) -> None:
    folder = _cluster(tmp_path, masters=2)
    (folder / "MASTER01" / "ssisdb.json").write_text('{"master_properties": "nope"}', encoding="utf-8")
    with pytest.raises(ValueError, match="not what SSISDB answers"):
        load_state(folder)
    (folder / "MASTER01" / "ssisdb.json").write_text('{"master_properties": {"A": "1"}}', encoding="utf-8")
    (folder / "MASTER02" / "ssisdb.json").write_text('{"master_properties": {"A": "2"}}', encoding="utf-8")
    with pytest.raises(ValueError, match="differ"):
        load_state(folder)


def test_a_settings_file_the_reader_could_not_read_is_not_served(tmp_path: Path) -> None:
    folder = _cluster(tmp_path)
    config = folder / "WORKER01" / "WorkerSettings.config"
    config.unlink()
    config.mkdir()  # exists, but not a file the reader can read
    with pytest.raises(ValueError, match="could not be read"):
        load_state(folder)


# --- strictness -----------------------------------------------------------------------------------------


def _keyed_master(tmp_path: Path) -> Path:
    from scaleguard.lab.certs import CertSpec, make_certificate

    cert = make_certificate(CertSpec(("MASTER01",), key_seed=77))
    node = NodeEvidence(name="MASTER01", master_settings={"SSLCertThumbprint": cert.thumbprint},
                        root=[cert], my=[cert])
    node.keys = [
        {"Thumbprint": cert.thumbprint, "HasPrivateKey": True, "KeyReaders": ["NT AUTHORITY\\SYSTEM"],
         "PSParentPath": f"Microsoft.PowerShell.Security\\Certificate::LocalMachine\\{store}"}
        for store in ("Root", "My")
    ]
    node.write(tmp_path / "C1")
    return tmp_path / "C1"


def test_store_copies_of_a_certificate_share_one_key(tmp_path: Path) -> None:
    node = load_state(_keyed_master(tmp_path)).node("MASTER01")
    assert node is not None and node.root and node.my
    [root], [my] = node.root, node.my
    assert root.key is not None and root.key is my.key
    request = {"store": "My", "thumbprint": my.thumbprint, "account": "NT Service\\SSISScaleOutMaster150"}
    dispatch(node, {"op": "grant_key_read", **request})
    assert root.key.readers == ["NT AUTHORITY\\SYSTEM", "NT Service\\SSISScaleOutMaster150"]  # same ACL
    removed = dispatch(
        node, {"op": "remove_certificate", "store": "My", "thumbprint": my.thumbprint, "delete_key": True}
    )
    # the agent never deletes a key another store's copy uses (actions.ps1 Test-KeyUsedElsewhere) ...
    assert (removed["key_deleted"], removed["key_kept_for"]) == (False, "Root") and root.usable_key is not None
    root.key.deleted = True  # ... but if the key file goes another way, every copy linked to it loses it
    assert root.has_private_key is True and root.usable_key is None  # the link stays, the key file is gone
    [entry] = dispatch(node, {"op": "collect", "sections": ["stores"]})["stores"]["Root"]
    assert (entry["has_private_key"], entry["key_readers"]) == (True, None)
    with pytest.raises(ActionError, match="binding not changed"):
        dispatch(node, {"op": "set_binding", "ip_port": "0.0.0.0:8391", "cert_hash": root.thumbprint,
                        "cert_store": "Root", "app_id": "{a1f96506-93e0-4c91-9171-05a2f6739e13}"})
    with pytest.raises(ActionError, match="Keyset does not exist"):
        dispatch(node, {"op": "grant_key_read", **request, "store": "Root"})


def test_unknown_facts_are_refused_not_assumed(tmp_path: Path) -> None:
    folder = _keyed_master(tmp_path)
    (folder / "MASTER01" / "keys.json").unlink()
    node = load_state(folder).node("MASTER01")
    assert node is not None and node.root is not None and node.services is None
    [root] = node.root
    assert root.has_private_key is None
    for request, message in (
        ({"op": "grant_key_read", "store": "Root", "thumbprint": root.thumbprint, "account": "X"}, "does not know"),
        ({"op": "set_binding", "ip_port": "0.0.0.0:8391", "cert_hash": root.thumbprint, "cert_store": "Root",
          "app_id": "{a1f96506-93e0-4c91-9171-05a2f6739e13}"}, "does not know"),
        ({"op": "start_service", "name": "SSISScaleOutMaster150"}, "does not know the services"),
    ):
        with pytest.raises(ActionError, match=message):
            dispatch(node, request)


def test_service_transitions_take_time_and_read_as_pending() -> None:
    now = [100.0]
    service = LabService("SSISScaleOutWorker150", "Stopped", "Auto", clock=lambda: now[0])
    assert service.change("Running", 2.0) == 102.0
    assert service.state == "Start Pending"
    now[0] = 101.9
    assert service.state == "Start Pending"
    now[0] = 102.0
    assert service.state == "Running"
    service.change("Stopped", 1.0)
    service.change("Running", 1.0)  # a restart: stop, then start, one after the other
    assert service.state == "Stop Pending" and service.settles_at == 104.0
    now[0] = 103.5
    assert service.state == "Start Pending"
    now[0] = 104.0
    assert service.state == "Running"


def test_a_service_request_ends_when_the_service_gets_there(tmp_path: Path) -> None:
    folder = tmp_path / "C1"
    NodeEvidence(name="WORKER01", worker_settings={"DisplayName": "W"},
                 services=[{"Name": "SSISScaleOutWorker150", "State": "Running", "StartMode": "Auto"}]).write(folder)
    node = load_state(folder, service_s=30.0).node("WORKER01")
    assert node is not None
    answer, ends_at = dispatch_timed(node, {"op": "restart_service", "name": "SSISScaleOutWorker150", "wait_s": 60})
    assert answer["restarted"] is True
    service = node.service("SSISScaleOutWorker150")
    assert service is not None and service.state == "Stop Pending" and ends_at == service.settles_at
    [row] = dispatch(node, {"op": "collect", "sections": ["services"]})["services"]
    assert row["State"] == "Stop Pending"  # what a concurrent audit sees meanwhile
    _, nothing_to_wait = dispatch_timed(node, {"op": "collect", "sections": ["identity"]})
    assert nothing_to_wait == 0.0


def test_the_lab_reads_one_cluster_or_a_folder_of_clusters_and_refuses_a_linked_one(tmp_path: Path) -> None:
    single = demo_scenario(defects=False).write(tmp_path / "one" / "CONTOSO-SSIS")
    assert [c.name for c in load_state(single).clusters] == ["CONTOSO-SSIS"]
    several = tmp_path / "several"
    demo_scenario(defects=False).write(several / "CONTOSO-SSIS")
    other = demo_scenario(2, defects=False)
    other.cluster = "FABRIKAM-SSIS"
    other.write(tmp_path / "outside" / "FABRIKAM-SSIS")
    assert [c.name for c in load_state(tmp_path / "one").clusters] == ["CONTOSO-SSIS"]
    (several / "FABRIKAM-SSIS").symlink_to(tmp_path / "outside" / "FABRIKAM-SSIS", target_is_directory=True)
    with pytest.raises(ValueError, match="links are not followed"):
        load_state(several)
    (tmp_path / "empty" / "NOTANODE").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no node folders"):
        load_state(tmp_path / "empty")
