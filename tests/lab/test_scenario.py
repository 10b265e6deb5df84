"""The example lab: files as Windows writes them, real certificates, exactly the planted defects."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scaleguard.lab.scenario import (
    MASTER_SERVICE,
    PUBLIC_ROOT_CAS,
    WORKER_SERVICE,
    Scenario,
    demo_scenario,
    fleet_scenario,
)

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, Path]:
    scenario = demo_scenario(now=NOW)
    return scenario, scenario.write(tmp_path_factory.mktemp("lab") / "CONTOSO-SSIS")


def ps_json(path: Path) -> object:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), f"{path.name}: PowerShell's Out-File writes a BOM"
    return json.loads(raw.decode("utf-8-sig"))


def store(node_dir: Path, name: str) -> dict[str, x509.Certificate]:
    certs = {}
    for path in sorted((node_dir / "certs" / name).iterdir()):
        cert = x509.load_der_x509_certificate(path.read_bytes())
        thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()
        assert path.stem == thumbprint
        certs[thumbprint] = cert
    return certs


def setting(node_dir: Path, file_name: str, key: str) -> str:
    text = (node_dir / file_name).read_bytes().decode("utf-8-sig")
    return text.split(f"<{key}>", 1)[1].split(f"</{key}>", 1)[0]


def test_files_carry_windows_encodings(demo: tuple[Scenario, Path]) -> None:
    _, folder = demo
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["MASTER01", "README.txt", "WORKER01", "WORKER02", "WORKER03"]
    master = folder / "MASTER01"
    sslcert = (master / "sslcert.txt").read_bytes()
    assert sslcert.startswith(b"\xff\xfe") and "\r\n" in sslcert.decode("utf-16")
    config = (master / "MasterSettings.config").read_bytes()
    assert config.startswith(b"\xef\xbb\xbf<?xml") and b"\r\n" in config
    services = ps_json(master / "services.json")
    assert services == {"Name": MASTER_SERVICE, "State": "Running", "StartMode": "Auto",
                        "StartName": f"NT Service\\{MASTER_SERVICE}"}, "a lone service is a bare object"
    assert ps_json(master / "host.json") == {"fqdn": "master01.contoso.local", "addresses": ["10.0.2.8"]}
    assert ps_json(master / "schannel.json") == {"ClientAuthTrustMode": None, "SendTrustedIssuerList": None}
    assert b'":  ' in (master / "keys.json").read_bytes(), "ConvertTo-Json's two spaces after the colon"


def test_master_is_set_up_as_documented_but_for_the_binding_store(demo: tuple[Scenario, Path]) -> None:
    _, folder = demo
    master = folder / "MASTER01"
    thumbprint = setting(master, "MasterSettings.config", "SSLCertThumbprint")
    assert setting(master, "MasterSettings.config", "PortNumber") == "8391"
    root = store(master, "Root")
    names = {a.value for a in root[thumbprint].subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)}
    assert {"MASTER01", "master01.contoso.local", "10.0.2.8"} <= names
    keys = ps_json(master / "keys.json")
    assert isinstance(keys, list)
    keyed = {row["Thumbprint"]: row for row in keys if row["HasPrivateKey"]}
    assert set(keyed) == {thumbprint}
    assert f"NT SERVICE\\{MASTER_SERVICE}" in keyed[thumbprint]["KeyReaders"]
    sslcert = (master / "sslcert.txt").read_bytes().decode("utf-16")
    assert "0.0.0.0:8391" in sslcert and thumbprint.lower() in sslcert
    assert "Certificate Store Name       : (null)" in sslcert  # planted defect (SO-M06)
    for worker in ("WORKER01", "WORKER02", "WORKER03"):
        own = setting(folder / worker, "WorkerSettings.config", "WorkerHttpsCertThumbprint")
        assert own in root, f"{worker}'s certificate must be trusted by the master"


def test_workers_trust_and_pin_the_master(demo: tuple[Scenario, Path]) -> None:
    _, folder = demo
    master_tp = setting(folder / "MASTER01", "MasterSettings.config", "SSLCertThumbprint")
    for worker in ("WORKER01", "WORKER02", "WORKER03"):
        node = folder / worker
        root, my = store(node, "Root"), store(node, "My")
        own = setting(node, "WorkerSettings.config", "WorkerHttpsCertThumbprint")
        assert master_tp in root and own in root and list(my) == [own]
        assert setting(node, "WorkerSettings.config", "MasterEndpoint") == "https://master01.contoso.local:8391"
        pinned = setting(node, "WorkerSettings.config", "MasterHttpsCertThumbprint")
        if worker == "WORKER02":  # planted: still pins the certificate from before the rotation
            assert pinned != master_tp and pinned in root
            assert root[pinned].not_valid_after_utc < NOW
        else:
            assert pinned == master_tp
        assert len(root) + len(my) >= 15, "a realistic store: public roots, the enterprise root, both certs"


def test_worker03_key_and_expiry_defects(demo: tuple[Scenario, Path]) -> None:
    _, folder = demo
    readers = {}
    for worker in ("WORKER01", "WORKER03"):
        node = folder / worker
        own = setting(node, "WorkerSettings.config", "WorkerHttpsCertThumbprint")
        keys = ps_json(node / "keys.json")
        assert isinstance(keys, list)
        (row,) = [r for r in keys if r["Thumbprint"] == own and r["PSParentPath"].endswith("\\My")]
        readers[worker] = row["KeyReaders"]
        days = (store(node, "My")[own].not_valid_after_utc - NOW).days
        assert days in (19, 20) if worker == "WORKER03" else days > 365
    assert f"NT SERVICE\\{WORKER_SERVICE}" in readers["WORKER01"]
    assert f"NT SERVICE\\{WORKER_SERVICE}" not in readers["WORKER03"]


def test_readme_documents_every_planted_defect(demo: tuple[Scenario, Path]) -> None:
    scenario, folder = demo
    readme = (folder / "README.txt").read_text(encoding="utf-8")
    assert scenario.expected_failures() == {
        ("SO-M06", "MASTER01"), ("SO-M11", "MASTER01"), ("SO-W02", "WORKER02"),
        ("SO-W09", "WORKER03"), ("SO-W10", "WORKER03"),
    }
    for defect in scenario.defects:
        assert defect.description in readme and ", ".join(defect.policies) in readme


def test_healthy_lab_plants_nothing(tmp_path: Path) -> None:
    scenario = demo_scenario(2, defects=False)
    folder = scenario.write(tmp_path / "ok")
    assert scenario.defects == [] and "none - every check should pass" in (folder / "README.txt").read_text()
    sslcert = (folder / "MASTER01" / "sslcert.txt").read_bytes().decode("utf-16")
    assert "Certificate Store Name       : Root" in sslcert
    assert all(cert.issuer == cert.subject for cert in store(folder / "MASTER01", "Root").values()), (
        "no issuing CA in the master's Root"
    )


def test_seed_makes_identifiers_repeatable() -> None:
    def ids(seed: int) -> list[object]:
        nodes = demo_scenario(2, seed=seed).nodes
        return [(n.name, n.host, (n.worker_settings or {}).get("AgentId")) for n in nodes]

    assert ids(7) == ids(7)
    assert ids(7) != ids(8)


def test_fleet_shares_public_roots_and_sprinkles_defects(tmp_path: Path) -> None:
    scenario = fleet_scenario(30, defect_every=10)
    assert len(scenario.nodes) == 31
    assert [d.node for d in scenario.defects] == ["WORKER10", "WORKER20", "WORKER30"]
    assert [d.policies for d in scenario.defects] == [("SO-W02",), ("SO-W10",), ("SO-W09",)]
    folder = scenario.write(tmp_path / "fleet")
    first, last = store(folder / "WORKER01", "Root"), store(folder / "WORKER29", "Root")
    shared = set(first) & set(last)
    assert len(shared) == len(PUBLIC_ROOT_CAS) + 2, "public roots, the enterprise root, the master cert"
    worker_sizes = {len(store(folder / n.name, "Root")) + len(store(folder / n.name, "My"))
                    for n in scenario.nodes[1:] if n.name != "WORKER10"}
    assert worker_sizes == {15}
    assert len(store(folder / "MASTER01", "Root")) == len(PUBLIC_ROOT_CAS) + 2 + 30


def audited(folder: Path, out: Path) -> tuple[set[tuple[str, str]], list[str]]:
    """(failing (policy, node) pairs, anything that is neither pass nor fail) from the real pipeline."""
    from scaleguard.pipeline import AuditOptions, run_audit

    result = run_audit(AuditOptions(out_dir=out, evidence=folder, progress=False))
    findings = result.findings.findings
    failing = {(f.policy, f.node) for f in findings if f.status.value == "fail"}
    other = [f"{f.policy} {f.node} {f.status.value}" for f in findings
             if f.status.value not in ("pass", "fail") and f.applicable]
    return failing, other


def test_the_audit_finds_exactly_the_planted_defects(demo: tuple[Scenario, Path], tmp_path: Path) -> None:
    scenario, folder = demo
    failing, other = audited(folder, tmp_path / "out")
    assert failing == scenario.expected_failures()
    assert other == [], "a complete evidence folder leaves nothing unassessed"


def test_a_fleet_fails_exactly_on_its_sprinkled_defects(tmp_path: Path) -> None:
    scenario = fleet_scenario(12, defect_every=4)
    failing, other = audited(scenario.write(tmp_path / "CONTOSO-SSIS"), tmp_path / "out")
    assert failing == scenario.expected_failures() == {
        ("SO-W02", "WORKER04"), ("SO-W10", "WORKER08"), ("SO-W09", "WORKER12"),
    }
    assert other == []
