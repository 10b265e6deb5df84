"""Live and offline give the same node: agent document → snapshot goes through the evidence parsers.

Each case writes an evidence folder, reads it offline (``read_node``), and separately turns it into lab
state, renders the agent's JSON document from that state (what a node would print), validates it and
converts it (``node_from_agent``). Apart from where a fact was found (paths, sources) and what only live
collection sees (SQL versions, SSISDB), the two snapshots must be identical.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from scaleguard.collectors.agent.convert import node_from_agent
from scaleguard.collectors.agent.schema import AgentDocument
from scaleguard.collectors.evidence import read_node
from scaleguard.collectors.live import parse_agent_output
from scaleguard.lab.dispatch import dispatch
from scaleguard.lab.evidence import Binding, NodeEvidence, encode_text, key_entries
from scaleguard.lab.from_evidence import load_state
from scaleguard.remoting.channel import ChannelError
from scaleguard.remoting.inventory import InventoryNode, Transport
from scaleguard.snapshot.model import CollectionState, DiagnosticLevel, NodeSnapshot
from tests.collectors.conftest import MASTER_SERVICE, WORKER_ACCOUNT, Pki


def master(pki: Pki, **overrides: Any) -> NodeEvidence:
    node = NodeEvidence(
        name="MASTER01",
        master_settings={
            "PortNumber": 8391,
            "SSLCertThumbprint": pki.master.thumbprint,
            "SqlServerName": "M",
        },
        root=[pki.master, pki.worker, pki.md5, pki.negative],
        bindings=[
            Binding("0.0.0.0:8391", pki.master.thumbprint, store="Root"),
            Binding("[::]:8391", pki.master.thumbprint, store=None),
        ],
        services=[MASTER_SERVICE],
        host={"fqdn": "master01.corp.example", "addresses": ["10.0.2.4"]},
        schannel={"ClientAuthTrustMode": 2, "SendTrustedIssuerList": 0},
    )
    for key, value in overrides.items():
        setattr(node, key, value)
    node.keys = key_entries(node, {pki.master.thumbprint: ["NT Service\\SSISScaleOutMaster150"]})
    return node


def worker(pki: Pki, **overrides: Any) -> NodeEvidence:
    node = NodeEvidence(
        name="WORKER01",
        worker_settings={
            "MasterEndpoint": "https://MASTER01:8391",
            "MasterHttpsCertThumbprint": pki.master.thumbprint,
            "WorkerHttpsCertThumbprint": pki.worker.thumbprint,
        },
        root=[pki.master, pki.worker],
        my=[pki.worker, pki.ec],
        services=[{"Name": "SSISScaleOutWorker150", "State": 4, "StartMode": 2, "StartName": WORKER_ACCOUNT}],
    )
    for key, value in overrides.items():
        setattr(node, key, value)
    node.keys = key_entries(node, {pki.worker.thumbprint: [WORKER_ACCOUNT, "BUILTIN\\Administrators"]})
    return node


def live_twin(node_dir: Path) -> NodeSnapshot:
    """What live collection makes of the same node: lab state → agent JSON → validated → snapshot."""
    lab_node = load_state(node_dir.parent).node(node_dir.name)
    assert lab_node is not None
    wire = json.dumps(dispatch(lab_node, {"op": "collect"})).encode("ascii")
    document = parse_agent_output(wire, _inventory_node(node_dir.name))
    return node_from_agent(node_dir.name, document, insecure=False, duration_ms=1.0)


def _inventory_node(name: str) -> InventoryNode:
    return InventoryNode(name=name, host="127.0.0.1", roles=("worker",), transport=Transport())


def comparable(node: NodeSnapshot) -> dict[str, Any]:
    data = node.model_dump(exclude={"collection", "diagnostics", "ssisdb", "sql_versions"})
    for key in ("master_config", "worker_config"):
        if data[key] is not None:
            data[key].pop("path")
    for key in ("root", "my"):
        for certificate in (data[key] or {}).get("certificates", []):
            certificate.pop("source")
    data["state"] = node.collection.state
    return data


def assert_same(node_dir: Path) -> tuple[NodeSnapshot, NodeSnapshot]:
    offline, live = read_node(node_dir), live_twin(node_dir)
    assert comparable(live) == comparable(offline)
    return offline, live


def test_healthy_master_and_worker_are_identical(tmp_path: Path, pki: Pki) -> None:
    offline, live = assert_same(master(pki).write(tmp_path))
    assert live.bindings is not None and {b.cert_store for b in live.bindings} == {"Root", None}
    assert live.collection.transport == "winrm" and live.sql_versions == ["150"]
    offline, live = assert_same(worker(pki).write(tmp_path))
    assert live.my is not None and live.my.find(pki.worker.thumbprint).key_readers == [  # type: ignore[union-attr]
        WORKER_ACCOUNT,
        "BUILTIN\\Administrators",
    ]


@pytest.mark.parametrize(("fmt", "encoding"), [("json", "utf-16-le"), ("xml", "utf-16-be"), ("xml", "utf-8")])
def test_config_formats_and_encodings_are_identical(
    tmp_path: Path, pki: Pki, fmt: str, encoding: str
) -> None:
    _offline, live = assert_same(worker(pki, config_format=fmt, config_encoding=encoding).write(tmp_path))
    assert live.worker_config is not None and live.worker_config.encoding is not None


def test_broken_config_keeps_its_role_in_both(tmp_path: Path, pki: Pki) -> None:
    node_dir = worker(pki).write(tmp_path)
    (node_dir / "WorkerSettings.config").write_bytes(encode_text("<WorkerSettings><MasterEndpoint>", "utf-8"))
    offline, live = assert_same(node_dir)
    assert live.worker_config is not None and live.worker_config.parse_error


def test_netsh_text_the_parser_rejects_is_unknown_in_both(tmp_path: Path, pki: Pki) -> None:
    node_dir = master(pki).write(tmp_path)
    (node_dir / "sslcert.txt").write_bytes(encode_text("Access is denied.\n", "utf-16-le"))
    offline, live = assert_same(node_dir)
    assert live.bindings is None and offline.bindings is None


def test_missing_sslcert_is_unknown_in_both(tmp_path: Path, pki: Pki) -> None:
    _offline, live = assert_same(master(pki, bindings=None).write(tmp_path))
    assert live.bindings is None


def test_pem_exports_and_junk_files_in_stores(tmp_path: Path, pki: Pki) -> None:
    node_dir = worker(pki, cert_format="pem").write(tmp_path)
    (node_dir / "certs" / "Root" / "notes.cer").write_bytes(b"this is not a certificate")
    offline, _live = assert_same(node_dir)  # a store holds certificates only: the junk is not served
    assert any(d.level is DiagnosticLevel.LOW and "ignored" in d.message for d in offline.diagnostics)


def test_node_without_config_is_no_config_in_both(tmp_path: Path, pki: Pki) -> None:
    _offline, live = assert_same(worker(pki, worker_settings=None).write(tmp_path))
    assert live.collection.state is CollectionState.NO_CONFIG


def test_what_the_folder_lacks_stays_unknown_live(tmp_path: Path, pki: Pki) -> None:
    """No services.json / keys.json / schannel.json: the lab invents no healthy services, keys or values."""
    node_dir = worker(pki, services=None).write(tmp_path)
    (node_dir / "keys.json").unlink()
    offline, live = assert_same(node_dir)
    assert live.services is None and live.schannel is None
    cert = live.my.find(pki.worker.thumbprint) if live.my else None
    assert cert is not None and cert.has_private_key is None and cert.key_readers is None


def test_openssl_bag_attributes_keep_their_keys_live(tmp_path: Path, pki: Pki) -> None:
    """`openssl pkcs12 -nokeys` writes "Bag Attributes" lines before each PEM block; the reader skips
    them, and so the lab (which holds what the reader read) keeps the key facts of those certificates."""
    node_dir = worker(pki, cert_format="pem").write(tmp_path)
    for pem in (node_dir / "certs").rglob("*.pem"):
        preamble = b"Bag Attributes\n    localKeyID: 01 00 00 00 \nsubject=/CN=x\nissuer=/CN=x\n"
        pem.write_bytes(preamble + pem.read_bytes())
    offline, live = assert_same(node_dir)
    cert = live.my.find(pki.worker.thumbprint) if live.my else None
    assert cert is not None and cert.has_private_key is True and WORKER_ACCOUNT in (cert.key_readers or [])


def test_get_service_numbers_read_the_same_live(tmp_path: Path, pki: Pki) -> None:
    """`Get-Service | ConvertTo-Json` writes Status 1 (Stopped) and StartType 4 (Disabled) as numbers."""
    row = {"Name": "SSISScaleOutWorker150", "Status": 1, "StartType": 4, "UserName": WORKER_ACCOUNT}
    offline, live = assert_same(worker(pki, services=[row]).write(tmp_path))
    [service] = live.services or []
    assert (service.state, service.start_mode) == ("Stopped", "Disabled")


def test_ssisdb_and_registry_details_only_live_sees(tmp_path: Path, pki: Pki) -> None:
    node_dir = master(pki).write(tmp_path)
    ssisdb = {
        "master_properties": {"SSLCERT_THUMBPRINT": pki.master.thumbprint},
        "worker_agents": [
            {
                "WorkerAgentId": "5a921187-19c7-4df4-8f4f-f31e78de5857",
                "MachineName": "WORKER01",
                "IsEnabled": True,
            }
        ],
    }
    (node_dir / "ssisdb.json").write_text(json.dumps(ssisdb), encoding="utf-8")
    live = live_twin(node_dir)
    assert live.ssisdb is not None
    assert live.ssisdb.master_properties["SSLCERT_THUMBPRINT"] == pki.master.thumbprint
    assert [a.machine_name for a in live.ssisdb.worker_agents] == ["WORKER01"]
    assert read_node(node_dir).ssisdb is None


def _document(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": "scaleguard-agent/1",
        "op": "collect",
        "errors": [],
        "identity": {"computer_name": "W1"},
    }
    base.update(changes)
    return base


def test_registry_bindings_are_normalised_like_netsh() -> None:
    document = AgentDocument.model_validate(
        _document(
            configs=[],
            bindings={
                "source": "registry",
                "entries": [
                    {
                        "ip_port": "0.0.0.0:8391",
                        "cert_hash": "ab" * 20,
                        "app_id": "{a1f96506-93e0-4c91-9171-05a2f6739e13}",
                        "store": None,
                    },
                    {"ip_port": "10.0.0.1:8391", "cert_hash": "abcd", "store": "  "},
                ],
            }
        )
    )
    node = node_from_agent("W1", document, insecure=True, duration_ms=3)
    assert node.bindings is not None
    first, second = node.bindings
    assert (first.cert_hash, first.cert_store, first.port) == ("AB" * 20, None, 8391)
    assert (second.cert_hash, second.cert_store) == (None, None)
    assert node.collection.insecure and node.collection.state is CollectionState.NO_CONFIG


def test_the_live_settings_file_is_the_one_whose_service_exists() -> None:
    old = base64.b64encode(b"<MasterSettings><PortNumber>1</PortNumber></MasterSettings>").decode()
    new = base64.b64encode(b"<MasterSettings><PortNumber>8391</PortNumber></MasterSettings>").decode()
    document = AgentDocument.model_validate(
        _document(
            configs=[
                {
                    "role": "master",
                    "version": "140",
                    "path": "C:\\140\\MasterSettings.config",
                    "content_b64": new,
                },
                {
                    "role": "master",
                    "version": "150",
                    "path": "C:\\150\\MasterSettings.config",
                    "content_b64": old,
                },
            ],
            services=[{"Name": "SSISScaleOutMaster140", "State": "Running", "StartMode": "Auto"}],
        )
    )
    node = node_from_agent("M1", document, insecure=False, duration_ms=1)
    assert node.master_config is not None and node.master_config.get("PortNumber") == "8391"
    assert any("also found" in d.message for d in node.diagnostics)


def test_unreadable_sections_stay_unknown_with_the_agents_reason() -> None:
    document = AgentDocument.model_validate(
        _document(
            errors=[{"source": "stores/My", "message": "Access is denied"}],
            stores={"Root": [], "My": None},
        )
    )
    node = node_from_agent("W1", document, insecure=False, duration_ms=1)
    assert node.root is not None and node.root.certificates == []
    assert node.my is None and node.services is None and node.bindings is None
    assert any(d.message == "Access is denied" for d in node.diagnostics)


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (b"", "not JSON"),
        (b'WARNING: something\r\n{"schema": ', "not JSON"),
        (b"[" * 100_000, "not JSON"),  # RecursionError: the node was reported as "collection crashed"
        (b"9" * 5_000, "not JSON"),  # ValueError past Python's limit on digits
        (b"[1, 2]", "expected schema scaleguard-agent/1"),
        (json.dumps({"schema": "other/9"}).encode(), "expected schema scaleguard-agent/1, got 'other/9'"),
        (json.dumps({"schema": "scaleguard-agent/1", "op": "collect"}).encode(), "identity"),
        (json.dumps(_document(stores={"Root": [{"thumbprint": "x"}]})).encode(), "stores.Root.0.der_b64"),
    ],
)
def test_malformed_agent_output_is_a_clear_failure(stdout: bytes, expected: str) -> None:
    with pytest.raises(ChannelError) as caught:
        parse_agent_output(stdout, _inventory_node("W1"))
    assert caught.value.state is CollectionState.FAILED
    assert "malformed agent output from 127.0.0.1" in caught.value.reason
    assert expected in caught.value.reason


LOCKED = "The process cannot access the file because it is being used by another process."


def test_a_settings_file_that_cannot_be_read_keeps_its_role_and_is_a_parse_error_as_offline() -> None:
    """The agent used to throw for the whole list when one file would not open, so the node read as having
    no settings file at all (no_config, "neither ... was found"); the evidence reader keeps such a file as
    a ConfigFile whose parse_error says it cannot be read, and so does the live side now."""
    path = "C:\\Program Files\\Microsoft SQL Server\\150\\DTS\\Binn\\MasterSettings.config"
    document = AgentDocument.model_validate(
        _document(configs=[{"role": "master", "version": "150", "path": path, "content_b64": None,
                            "read_error": LOCKED}])
    )
    node = node_from_agent("M1", document, insecure=False, duration_ms=1)
    assert node.collection.state is CollectionState.OK and "master" in node.roles()
    assert node.master_config is not None and node.master_config.parse_error == f"the file cannot be read ({LOCKED})"
    assert any(d.source == path and d.level is DiagnosticLevel.WARNING for d in node.diagnostics)


def test_settings_files_the_agent_could_not_look_for_are_a_failed_collection() -> None:
    document = AgentDocument.model_validate(
        _document(configs=None, errors=[{"source": "configs", "message": "Requested registry access is not allowed."}])
    )
    node = node_from_agent("M1", document, insecure=False, duration_ms=1)
    assert node.collection.state is CollectionState.FAILED
    assert node.collection.reason is not None and "Requested registry access is not allowed." in node.collection.reason
