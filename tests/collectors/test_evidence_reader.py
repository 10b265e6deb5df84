"""The offline evidence reader, fed folders written the way Windows writes them (scaleguard.lab.evidence)."""

from __future__ import annotations

import base64
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scaleguard.collectors import evidence as evidence_module
from scaleguard.collectors.evidence import read_evidence, read_node
from scaleguard.lab.evidence import Binding, NodeEvidence, encode_text, key_entries, powershell_json
from scaleguard.snapshot.model import (
    CollectionState,
    ConfigFile,
    Diagnostic,
    DiagnosticLevel,
    HostIdentity,
    NodeSnapshot,
    Schannel,
    Service,
    SslBinding,
)
from tests.collectors.conftest import MASTER_SERVICE, WORKER_ACCOUNT, Pki

MIB = 1024 * 1024


def _master(pki: Pki, **overrides: object) -> NodeEvidence:
    node = NodeEvidence(
        name="MASTER01",
        master_settings={
            "PortNumber": 8391,
            "SSLCertThumbprint": pki.master.thumbprint,
            "SqlServerName": "MASTER01",
        },
        root=[pki.master, pki.worker, pki.worker2],
        bindings=[Binding("0.0.0.0:8391", pki.master.thumbprint, store="Root")],
        services=[MASTER_SERVICE],
        host={"fqdn": "master01.corp.example", "addresses": ["10.0.2.4"]},
        schannel={"ClientAuthTrustMode": 2, "SendTrustedIssuerList": 0},
    )
    for key, value in overrides.items():
        setattr(node, key, value)
    node.keys = key_entries(node, {pki.master.thumbprint: ["NT Service\\SSISScaleOutMaster150"]})
    return node


def _worker(pki: Pki, name: str = "WORKER01", **overrides: object) -> NodeEvidence:
    cert = pki.worker if name == "WORKER01" else pki.worker2
    node = NodeEvidence(
        name=name,
        worker_settings={
            "MasterEndpoint": "https://MASTER01:8391",
            "MasterHttpsCertThumbprint": pki.master.thumbprint,
            "WorkerHttpsCertThumbprint": cert.thumbprint,
        },
        root=[pki.master, cert],
        my=[cert],
        bindings=[],
        services=[
            {
                "Name": "SSISScaleOutWorker150",
                "State": "Running",
                "StartMode": "Auto",
                "StartName": WORKER_ACCOUNT,
            }
        ],
    )
    for key, value in overrides.items():
        setattr(node, key, value)
    node.keys = key_entries(node, {cert.thumbprint: [WORKER_ACCOUNT]})
    return node


def _only(snapshot_nodes: list[NodeSnapshot], name: str) -> NodeSnapshot:
    [node] = [n for n in snapshot_nodes if n.name == name]
    return node


def test_healthy_cluster_is_read_completely(tmp_path: Path, pki: Pki) -> None:
    cluster = tmp_path / "PROD-SSIS"
    _master(pki).write(cluster)
    _worker(pki).write(cluster)
    _worker(pki, "WORKER02").write(cluster)
    before = datetime.now(UTC)

    snapshot = read_evidence(cluster)

    assert snapshot.cluster == "PROD-SSIS"
    assert snapshot.mode == "offline"
    assert snapshot.source == str(cluster)
    assert before <= snapshot.collected_at <= datetime.now(UTC)
    assert snapshot.collected_at.tzinfo is not None
    assert [n.name for n in snapshot.nodes] == ["MASTER01", "WORKER01", "WORKER02"]
    assert [n.roles() for n in snapshot.nodes] == [["master"], ["worker"], ["worker"]]

    master = snapshot.nodes[0]
    assert master.diagnostics == []
    assert master.collection.state == CollectionState.OK
    assert master.collection.transport == "evidence"
    assert master.collection.duration_ms is not None and master.collection.duration_ms >= 0
    assert master.identity == HostIdentity(
        computer_name="MASTER01", fqdn="master01.corp.example", addresses=["10.0.2.4"]
    )
    assert master.master_config == ConfigFile(
        path="MasterSettings.config",
        encoding="utf-8-sig",
        format="xml",
        settings={
            "PortNumber": "8391",
            "SSLCertThumbprint": pki.master.thumbprint,
            "SqlServerName": "MASTER01",
        },
    )
    assert master.worker_config is None
    assert master.bindings == [
        SslBinding(
            ip_port="0.0.0.0:8391",
            cert_hash=pki.master.thumbprint,
            app_id="{a1f96506-93e0-4c91-9171-05a2f6739e13}",
            cert_store="Root",
        )
    ]
    assert master.services == [
        Service(
            name="SSISScaleOutMaster150",
            state="Running",
            start_mode="Auto",
            account="NT Service\\SSISScaleOutMaster150",
        )
    ]
    assert master.schannel == Schannel(client_auth_trust_mode=2, send_trusted_issuer_list=0)
    assert (master.ssisdb, master.sql_versions) == (None, None)
    assert master.root is not None and master.my is not None
    assert sorted(c.thumbprint for c in master.root.certificates) == sorted(
        [pki.master.thumbprint, pki.worker.thumbprint, pki.worker2.thumbprint]
    )
    assert master.my.certificates == []
    master_cert = master.root.find(pki.master.thumbprint)
    assert master_cert is not None
    assert master_cert.source == f"certs/Root/{pki.master.thumbprint}.cer"
    assert (master_cert.has_private_key, master_cert.key_readers) == (
        True,
        ["NT Service\\SSISScaleOutMaster150"],
    )
    assert master_cert.common_names == ["MASTER01", "10.0.2.4"]
    assert base64.b64decode(master_cert.der_b64 or "") == pki.master.der
    worker_in_master_root = master.root.find(pki.worker.thumbprint)
    assert worker_in_master_root is not None
    assert (worker_in_master_root.has_private_key, worker_in_master_root.key_readers) == (False, None)

    worker = snapshot.nodes[1]
    assert worker.diagnostics == []
    assert worker.identity == HostIdentity(computer_name="WORKER01")
    assert worker.worker_config is not None
    assert worker.worker_config.settings == {
        "MasterEndpoint": "https://MASTER01:8391",
        "MasterHttpsCertThumbprint": pki.master.thumbprint,
        "WorkerHttpsCertThumbprint": pki.worker.thumbprint,
    }
    assert worker.bindings == []
    assert worker.schannel is None
    assert worker.my is not None and worker.root is not None
    own = worker.my.find(pki.worker.thumbprint)
    assert own is not None and (own.has_private_key, own.key_readers) == (True, [WORKER_ACCOUNT])
    root_copy = worker.root.find(pki.worker.thumbprint)
    assert root_copy is not None and root_copy.source == f"certs/Root/{pki.worker.thumbprint}.cer"
    # the lab's keys.json has a row per store; each store entry gets its own row's facts
    assert (root_copy.has_private_key, root_copy.key_readers) == (True, [WORKER_ACCOUNT])
    master_in_worker_root = worker.root.find(pki.master.thumbprint)
    assert master_in_worker_root is not None and master_in_worker_root.has_private_key is False


def test_snapshot_json_round_trip(tmp_path: Path, pki: Pki) -> None:
    from scaleguard.snapshot.model import Snapshot

    _master(pki).write(tmp_path / "c")
    snapshot = Snapshot(clusters=[read_evidence(tmp_path / "c")])
    snapshot.write(tmp_path / "snapshot.json")
    assert Snapshot.read(tmp_path / "snapshot.json") == snapshot


def test_a_node_can_be_master_and_worker(tmp_path: Path, pki: Pki) -> None:
    node = _master(pki)
    node.worker_settings = {
        "MasterEndpoint": "https://localhost:8391",
        "WorkerHttpsCertThumbprint": pki.worker.thumbprint,
    }
    node.write(tmp_path)
    snapshot = read_node(tmp_path / "MASTER01")
    assert snapshot.roles() == ["master", "worker"]
    assert snapshot.worker_config is not None and snapshot.worker_config.path == "WorkerSettings.config"


def test_empty_node_folder_is_no_config_and_everything_unknown(tmp_path: Path) -> None:
    (tmp_path / "c" / "GHOST").mkdir(parents=True)
    [node] = read_evidence(tmp_path / "c").nodes
    assert node.collection.state == CollectionState.NO_CONFIG
    assert node.collection.reason == "the node folder is empty"
    assert (
        node.master_config,
        node.worker_config,
        node.root,
        node.my,
        node.bindings,
        node.services,
        node.schannel,
    ) == (None, None, None, None, None, None, None)
    assert node.identity == HostIdentity(computer_name="GHOST")
    assert node.diagnostics == [
        Diagnostic(
            level=DiagnosticLevel.WARNING,
            source="certs",
            message="missing: the Root and My stores are unknown (export them to certs/Root, certs/My)",
        ),
        Diagnostic(
            level=DiagnosticLevel.WARNING,
            source="sslcert.txt",
            message="missing (netsh http show sslcert > sslcert.txt); HTTP.sys bindings unknown",
        ),
    ]


def test_node_without_any_config_keeps_its_other_evidence(tmp_path: Path, pki: Pki) -> None:
    _master(pki, master_settings=None).write(tmp_path)
    node = read_node(tmp_path / "MASTER01")
    assert node.collection.state == CollectionState.NO_CONFIG
    assert (
        node.collection.reason
        == "neither MasterSettings.config nor WorkerSettings.config is in the node folder"
    )
    assert node.bindings is not None and len(node.bindings) == 1
    assert node.root is not None and len(node.root.certificates) == 3


def test_missing_sslcert_is_unknown_not_empty(tmp_path: Path, pki: Pki) -> None:
    _worker(pki, bindings=None).write(tmp_path)
    node = read_node(tmp_path / "WORKER01")
    assert node.bindings is None
    assert node.diagnostics == [
        Diagnostic(
            level=DiagnosticLevel.WARNING,
            source="sslcert.txt",
            message="missing (netsh http show sslcert > sslcert.txt); HTTP.sys bindings unknown",
        )
    ]


def test_sslcert_that_is_not_netsh_output_is_unknown(tmp_path: Path, pki: Pki) -> None:
    _worker(pki).write(tmp_path)
    (tmp_path / "WORKER01" / "sslcert.txt").write_bytes(encode_text("Access is denied.\n", "utf-16-le"))
    node = read_node(tmp_path / "WORKER01")
    assert node.bindings is None
    assert node.diagnostics == [
        Diagnostic(
            level=DiagnosticLevel.WARNING,
            source="sslcert.txt",
            message="not `netsh http show sslcert` output (19 characters in 1 line(s), no binding block "
            "and no bindings header); HTTP.sys bindings unknown",
        )
    ]


def test_sslcert_file_not_found_message_means_no_bindings(tmp_path: Path, pki: Pki) -> None:
    _worker(pki).write(tmp_path)
    (tmp_path / "WORKER01" / "sslcert.txt").write_bytes(
        encode_text("\nThe system cannot find the file specified.\n\n", "utf-16-le")
    )
    node = read_node(tmp_path / "WORKER01")
    assert (node.bindings, node.diagnostics) == ([], [])


def test_missing_store_folder_is_unknown_and_the_other_store_is_still_read(tmp_path: Path, pki: Pki) -> None:
    _worker(pki).write(tmp_path)
    for file in (tmp_path / "WORKER01" / "certs" / "Root").iterdir():
        file.unlink()
    (tmp_path / "WORKER01" / "certs" / "Root").rmdir()
    node = read_node(tmp_path / "WORKER01")
    assert node.root is None
    assert node.my is not None and [c.thumbprint for c in node.my.certificates] == [pki.worker.thumbprint]
    assert (
        Diagnostic(
            level=DiagnosticLevel.WARNING,
            source="certs/Root",
            message="missing: LocalMachine\\Root is unknown",
        )
        in node.diagnostics
    )


def test_empty_store_folder_is_an_empty_store(tmp_path: Path, pki: Pki) -> None:
    _master(pki).write(tmp_path)
    node = read_node(tmp_path / "MASTER01")
    assert node.my is not None and node.my.certificates == []


def test_names_are_matched_case_insensitively(tmp_path: Path, pki: Pki) -> None:
    _worker(pki).write(tmp_path)
    folder = tmp_path / "WORKER01"
    (folder / "WorkerSettings.config").rename(folder / "workersettings.CONFIG")
    (folder / "sslcert.txt").rename(folder / "SSLCERT.TXT")
    (folder / "certs" / "My").rename(folder / "certs" / "MY")
    (folder / "certs").rename(folder / "Certs")
    node = read_node(folder)
    assert node.worker_config is not None and node.worker_config.path == "workersettings.CONFIG"
    assert node.bindings == []
    assert node.my is not None and node.my.certificates[0].source == f"Certs/MY/{pki.worker.thumbprint}.cer"
    assert node.diagnostics == []


def test_certificate_file_variants_and_bad_files(tmp_path: Path, pki: Pki) -> None:
    _master(pki, root=[]).write(tmp_path)
    root = tmp_path / "MASTER01" / "certs" / "Root"
    (root / "master.CER").write_bytes(pki.master.der)
    (root / "worker.crt").write_bytes(pki.worker.pem())
    (root / "bundle.pem").write_bytes(pki.ca.pem() + pki.issued.pem())
    (root / "legacy.der").write_bytes(pki.md5.der)
    b64 = base64.b64encode(pki.worker2.der).decode()
    (root / "worker2.cer").write_text("\r\n".join(b64[i : i + 64] for i in range(0, len(b64), 64)))
    (root / "again.cer").write_bytes(pki.master.der)  # the same certificate exported twice
    (root / "notes.cer").write_bytes(b"this is not a certificate\r\n")
    (root / "readme.txt").write_text("exported on Monday")
    (root / "sub").mkdir()

    node = read_node(tmp_path / "MASTER01")

    assert node.root is not None
    assert [(c.source, c.thumbprint) for c in node.root.certificates] == [
        ("certs/Root/again.cer", pki.master.thumbprint),
        ("certs/Root/bundle.pem#1", pki.ca.thumbprint),
        ("certs/Root/bundle.pem#2", pki.issued.thumbprint),
        ("certs/Root/legacy.der", pki.md5.thumbprint),
        ("certs/Root/worker.crt", pki.worker.thumbprint),
        ("certs/Root/worker2.cer", pki.worker2.thumbprint),
    ]
    assert [c.self_signed for c in node.root.certificates] == [True, True, False, True, True, True]
    assert node.diagnostics == [
        Diagnostic(
            level=DiagnosticLevel.INFO,
            source="certs/Root/master.CER",
            message=f"the same certificate as certs/Root/again.cer ({pki.master.thumbprint}); counted once",
        ),
        Diagnostic(
            level=DiagnosticLevel.LOW,
            source="certs/Root/notes.cer",
            message="ignored: not a certificate: no DER structure, PEM block or base64 text "
            "(27 bytes)",
        ),
        Diagnostic(
            level=DiagnosticLevel.INFO,
            source="certs/Root/readme.txt",
            message="ignored: '.txt' is not a certificate export (.cer, .crt, .pem, .der)",
        ),
        Diagnostic(
            level=DiagnosticLevel.INFO,
            source="certs/Root/sub",
            message="ignored: a folder inside a certificate store folder",
        ),
    ]


def _sparse(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        handle.write(os.urandom(4096))
        handle.truncate(size)


def test_huge_junk_files_are_not_read(tmp_path: Path, pki: Pki) -> None:
    _master(pki).write(tmp_path)
    folder = tmp_path / "MASTER01"
    _sparse(folder / "certs" / "Root" / "huge.cer", 50 * MIB)
    _sparse(folder / "MasterSettings.config", 50 * MIB)
    try:
        node = read_node(folder)
    finally:
        (folder / "certs" / "Root" / "huge.cer").unlink()
        (folder / "MasterSettings.config").unlink()
    assert (
        node.collection.state == CollectionState.OK
    )  # still a master: the broken file is a finding, not a gap
    assert node.master_config == ConfigFile(
        path="MasterSettings.config",
        parse_error="the file is too large to be a settings file (50.0 MiB; limit 4.0 MiB)",
    )
    assert node.root is not None and len(node.root.certificates) == 3
    assert node.diagnostics == [
        Diagnostic(
            level=DiagnosticLevel.WARNING,
            source="MasterSettings.config",
            message="the file is too large to be a settings file (50.0 MiB; limit 4.0 MiB)",
        ),
        Diagnostic(
            level=DiagnosticLevel.LOW,
            source="certs/Root/huge.cer",
            message="ignored: the file is too large to be a certificate (50.0 MiB; limit 1.0 MiB)",
        ),
    ]


def test_special_files_are_never_opened_for_reading(tmp_path: Path, pki: Pki) -> None:
    _worker(pki, bindings=None).write(tmp_path)
    folder = tmp_path / "WORKER01"
    os.mkfifo(folder / "certs" / "My" / "pipe.cer")
    (folder / "sslcert.txt").mkdir()
    node = read_node(folder)
    assert node.bindings is None
    assert node.my is not None and [c.thumbprint for c in node.my.certificates] == [pki.worker.thumbprint]
    assert node.diagnostics == [
        Diagnostic(
            level=DiagnosticLevel.LOW,
            source="certs/My/pipe.cer",
            message="ignored: the file is not a regular file (it is a named pipe)",
        ),
        Diagnostic(
            level=DiagnosticLevel.WARNING,
            source="sslcert.txt",
            message="is not a regular file (it is a folder); treated as unknown",
        ),
    ]


def test_truncated_and_garbage_configs(tmp_path: Path, pki: Pki) -> None:
    _master(pki).write(tmp_path)
    _worker(pki).write(tmp_path)
    master_file = tmp_path / "MASTER01" / "MasterSettings.config"
    master_file.write_bytes(master_file.read_bytes()[:-30])
    (tmp_path / "WORKER01" / "WorkerSettings.config").write_bytes(
        os.urandom(64).replace(b"<", b"x") + b"\x00"
    )
    master, worker = read_evidence(tmp_path).nodes
    assert master.master_config is not None and master.master_config.format == "xml"
    assert master.master_config.settings == {}
    assert (master.master_config.parse_error or "").startswith("not well-formed XML: ")
    assert [d.source for d in master.diagnostics] == ["MasterSettings.config"]
    assert master.diagnostics[0].level == DiagnosticLevel.WARNING
    assert worker.worker_config is not None
    assert worker.worker_config.settings == {}
    assert worker.worker_config.parse_error is not None
    assert worker.collection.state == CollectionState.OK


@pytest.mark.parametrize(
    ("config_format", "encoding", "label"),
    [
        ("xml", "utf-16-le", "utf-16-le"),
        ("xml", "utf-16-be", "utf-16-be"),
        ("xml", "utf-8", "utf-8"),
        ("json", "utf-16-le", "utf-16-le"),
        ("json", "utf-8-sig", "utf-8-sig"),
    ],
)
def test_config_encodings_and_formats(
    tmp_path: Path, pki: Pki, config_format: str, encoding: str, label: str
) -> None:
    _worker(pki, config_format=config_format, config_encoding=encoding).write(tmp_path)
    node = read_node(tmp_path / "WORKER01")
    assert node.worker_config is not None
    assert (node.worker_config.format, node.worker_config.encoding) == (config_format, label)
    assert node.worker_config.get("WorkerHttpsCertThumbprint") == pki.worker.thumbprint
    mismatch = config_format == "xml" and encoding.startswith("utf-16")
    expected = [
        Diagnostic(
            level=DiagnosticLevel.INFO,
            source="WorkerSettings.config",
            message=f"the XML declaration says 'utf-8' but the bytes are {label}; read as {label}",
        )
    ]
    assert node.diagnostics == (expected if mismatch else [])


def test_sslcert_in_utf8_and_utf16_be(tmp_path: Path, pki: Pki) -> None:
    for encoding in ("utf-8", "utf-16-be"):
        _master(pki, sslcert_encoding=encoding).write(tmp_path / encoding)
        node = read_node(tmp_path / encoding / "MASTER01")
        assert node.bindings is not None and [b.cert_hash for b in node.bindings] == [pki.master.thumbprint]


@pytest.mark.parametrize("thumbprint_form", ["spaced", "lower", "lrm"])
def test_dirty_thumbprints_in_configs_are_kept_verbatim(
    tmp_path: Path, pki: Pki, thumbprint_form: str
) -> None:
    thumb = pki.master.thumbprint
    raw = {
        "spaced": " ".join(thumb[i : i + 2] for i in range(0, 40, 2)),
        "lower": thumb.lower(),
        "lrm": "\u200e" + thumb,
    }[thumbprint_form]
    _master(pki, master_settings={"PortNumber": 8391, "SSLCertThumbprint": raw}).write(tmp_path)
    node = read_node(tmp_path / "MASTER01")
    assert node.master_config is not None and node.master_config.get("SSLCertThumbprint") == raw


def test_hostile_strings_are_kept_as_data(tmp_path: Path, pki: Pki) -> None:
    script, formula = "<script>alert(1)</script>", "=cmd|' /C calc'!A0"
    _worker(
        pki,
        worker_settings={"MasterEndpoint": script, "DisplayName": formula},
        config_format="json",
        services=[{"Name": formula, "State": script, "StartMode": "Auto"}],
        host={"fqdn": script, "addresses": [formula]},
    ).write(tmp_path)
    folder = tmp_path / "WORKER01"
    (folder / "MasterSettings.config").write_text(
        f"<MasterSettings><SqlServerName>&lt;script&gt;alert(1)&lt;/script&gt;</SqlServerName>"
        f"<SSLCertThumbprint>{formula}</SSLCertThumbprint></MasterSettings>"
    )
    node = read_node(folder)
    assert node.worker_config is not None
    assert node.worker_config.settings == {"MasterEndpoint": script, "DisplayName": formula}
    assert node.master_config is not None
    assert node.master_config.settings == {"SqlServerName": script, "SSLCertThumbprint": formula}
    assert node.services == [Service(name=formula, state=script, start_mode="Auto")]
    assert node.identity == HostIdentity(computer_name="WORKER01", fqdn=script, addresses=[formula])


def test_services_with_numeric_state_as_a_lone_object(tmp_path: Path, pki: Pki) -> None:
    _worker(
        pki,
        services=[{"Name": "SSISScaleOutWorker150", "State": 1, "StartMode": 3, "StartName": WORKER_ACCOUNT}],
    ).write(tmp_path)
    text = (tmp_path / "WORKER01" / "services.json").read_bytes().decode("utf-8-sig")
    assert text.startswith("{") and '"State":  1' in text  # ConvertTo-Json's quirks, as written by the lab
    node = read_node(tmp_path / "WORKER01")
    assert node.services == [
        Service(name="SSISScaleOutWorker150", state="Stopped", start_mode="Manual", account=WORKER_ACCOUNT)
    ]


def test_empty_services_export_means_no_services(tmp_path: Path, pki: Pki) -> None:
    _worker(pki).write(tmp_path)
    (tmp_path / "WORKER01" / "services.json").write_bytes(b"")
    node = read_node(tmp_path / "WORKER01")
    assert node.services == []
    assert node.diagnostics == [
        Diagnostic(
            level=DiagnosticLevel.INFO,
            source="services.json",
            message="is empty: no SSIS Scale Out service was exported",
        )
    ]


def test_optional_files_absent_are_unknown_without_noise(tmp_path: Path, pki: Pki) -> None:
    node_evidence = _worker(pki, services=None, host=None, schannel=None)
    node_evidence.keys = None
    node_evidence.write(tmp_path)
    node = read_node(tmp_path / "WORKER01")
    assert (node.services, node.schannel) == (None, None)
    assert node.identity == HostIdentity(computer_name="WORKER01")
    assert node.my is not None and (
        node.my.certificates[0].has_private_key,
        node.my.certificates[0].key_readers,
    ) == (None, None)
    assert node.diagnostics == []


def test_keys_without_reader_column_and_rows_for_unexported_certificates(tmp_path: Path, pki: Pki) -> None:
    node_evidence = _worker(pki)
    node_evidence.keys = [
        {
            "Thumbprint": pki.worker.thumbprint.lower(),
            "HasPrivateKey": True,
            "PSParentPath": "Microsoft.PowerShell.Security\\Certificate::LocalMachine\\My",
        },
        {
            "Thumbprint": pki.ca.thumbprint,
            "HasPrivateKey": False,
            "PSParentPath": "Microsoft.PowerShell.Security\\Certificate::LocalMachine\\Root",
        },
    ]
    node_evidence.write(tmp_path)
    node = read_node(tmp_path / "WORKER01")
    assert node.my is not None
    assert (node.my.certificates[0].has_private_key, node.my.certificates[0].key_readers) == (True, None)
    assert node.root is not None and all(c.has_private_key is None for c in node.root.certificates)
    assert node.diagnostics == [
        Diagnostic(
            level=DiagnosticLevel.INFO,
            source="keys.json",
            message=f"1 row(s) name certificates not exported under certs/: Root\\{pki.ca.thumbprint}",
        )
    ]


def test_broken_json_files_are_warnings_and_unknown(tmp_path: Path, pki: Pki) -> None:
    _master(pki).write(tmp_path)
    folder = tmp_path / "MASTER01"
    (folder / "services.json").write_text('[{"Name": "SSISScaleOutMaster150", ')
    (folder / "schannel.json").write_bytes(b"\xff\xfe" + "oops".encode("utf-16-le"))
    node = read_node(folder)
    assert (node.services, node.schannel) == (None, None)
    assert [(d.level, d.source) for d in node.diagnostics] == [
        (DiagnosticLevel.WARNING, "services.json"),
        (DiagnosticLevel.WARNING, "schannel.json"),
    ]
    assert node.diagnostics[1].message.startswith("not valid JSON: ")


def test_schannel_file_is_read(tmp_path: Path, pki: Pki) -> None:
    _master(pki, schannel={"ClientAuthTrustMode": 0}).write(tmp_path)
    node = read_node(tmp_path / "MASTER01")
    assert node.schannel == Schannel(client_auth_trust_mode=0, send_trusted_issuer_list=None)


def test_negative_serial_md5_and_multi_cn_through_the_reader(tmp_path: Path, pki: Pki) -> None:
    _master(pki, root=[pki.negative, pki.md5, pki.semicolon_cn], cert_format="pem").write(tmp_path)
    node = read_node(tmp_path / "MASTER01")
    assert node.root is not None
    facts = {c.common_names[0]: (c.serial, c.signature_hash, c.common_names) for c in node.root.certificates}
    assert facts["NEGATIVE01"] == ("CFC7", "sha256", ["NEGATIVE01"])
    assert facts["LEGACY01"][1:] == ("md5", ["LEGACY01"])
    assert facts["WorkerMachine;CN=10.0.2.9"][2] == ["WorkerMachine;CN=10.0.2.9", "WorkerMachine", "10.0.2.9"]


def test_cluster_level_strays_are_skipped_and_logged(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    _worker(pki).write(tmp_path)
    (tmp_path / "README.txt").write_text("collected by ops")
    (tmp_path / ".git").mkdir()
    (tmp_path / "__MACOSX").mkdir()
    with caplog.at_level(logging.INFO, logger="scaleguard.collectors.evidence"):
        snapshot = read_evidence(tmp_path)
    assert [n.name for n in snapshot.nodes] == ["WORKER01"]
    assert [r.getMessage() for r in caplog.records] == [
        f"evidence {tmp_path}: 'README.txt' is not a node folder; ignored"
    ]


def test_evidence_path_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="does not exist or is not a folder"):
        read_evidence(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        read_evidence(tmp_path / "file")


def test_an_artefact_that_crashes_costs_only_itself(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    _worker(pki).write(tmp_path)

    def explode(value: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(evidence_module, "services_from_json", explode)
    node = read_node(tmp_path / "WORKER01")
    assert node.services is None
    assert node.collection.state == CollectionState.OK
    assert node.worker_config is not None and node.my is not None and node.bindings == []
    assert node.diagnostics == [
        Diagnostic(
            level=DiagnosticLevel.ERROR,
            source="services.json",
            message="could not be read (RuntimeError: boom); treated as unknown",
        )
    ]


def test_a_config_parser_crash_keeps_the_role(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    _worker(pki).write(tmp_path)

    def explode(*args: object, **kwargs: object) -> object:
        raise MemoryError("out of memory")

    monkeypatch.setattr(evidence_module, "parse_config_with_notes", explode)
    node = read_node(tmp_path / "WORKER01")
    assert node.worker_config == ConfigFile(
        path="WorkerSettings.config", parse_error="could not be read (MemoryError: out of memory)"
    )
    assert node.collection.state == CollectionState.OK
    assert node.diagnostics == [
        Diagnostic(
            level=DiagnosticLevel.ERROR,
            source="WorkerSettings.config",
            message="could not be read (MemoryError: out of memory)",
        )
    ]


def test_a_node_that_crashes_costs_only_itself(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    _master(pki).write(tmp_path)
    _worker(pki).write(tmp_path)
    original = evidence_module._NodeReader.read

    def flaky(self: evidence_module._NodeReader) -> NodeSnapshot:
        if self.name == "WORKER01":
            raise OSError("disk on fire")
        return original(self)

    monkeypatch.setattr(evidence_module._NodeReader, "read", flaky)
    master, worker = read_evidence(tmp_path).nodes
    assert master.collection.state == CollectionState.OK and master.master_config is not None
    assert worker.collection.state == CollectionState.FAILED
    assert worker.collection.reason == "the node folder could not be read: OSError: disk on fire"
    assert worker.diagnostics == [
        Diagnostic(
            level=DiagnosticLevel.ERROR,
            source=".",
            message="the node folder could not be read: OSError: disk on fire",
        )
    ]


def test_keys_json_in_utf16_with_lone_object(tmp_path: Path, pki: Pki) -> None:
    node_evidence = _worker(pki)
    node_evidence.write(tmp_path)
    row = {
        "Thumbprint": pki.worker.thumbprint,
        "HasPrivateKey": True,
        "PSParentPath": "Microsoft.PowerShell.Security\\Certificate::LocalMachine\\My",
        "KeyReaders": [],
    }
    (tmp_path / "WORKER01" / "keys.json").write_bytes(encode_text(powershell_json([row]), "utf-16-le"))
    node = read_node(tmp_path / "WORKER01")
    assert node.my is not None and (
        node.my.certificates[0].has_private_key,
        node.my.certificates[0].key_readers,
    ) == (True, [])
    assert node.root is not None and all(c.has_private_key is None for c in node.root.certificates)


def test_collected_at_is_now(tmp_path: Path, pki: Pki) -> None:
    _worker(pki).write(tmp_path)
    snapshot = read_evidence(tmp_path)
    assert abs(datetime.now(UTC) - snapshot.collected_at) < timedelta(seconds=30)
    assert json.loads(snapshot.model_dump_json())["mode"] == "offline"
