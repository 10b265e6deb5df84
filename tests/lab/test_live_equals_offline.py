"""A live audit of an evidence folder over ``lab serve`` equals its offline audit, for every policy case folder.

Every case of ``tests/policies/cases`` is written as its evidence folder (as ``test_cases.py`` writes it), plus a
few folders in the formats Windows tools really produce (openssl ``Bag Attributes`` PEM, ``Get-Service``
numbers, no ``keys.json``/``services.json``/``schannel.json``). All of them are served by ONE ``lab serve``
process as the clusters of one evidence root, collected over WinRM in one go, and compared with the offline
reading of the same folder, evaluated at the same instant.

The rule compared, finding by finding: the same set of (policy, node), and for each the same status,
severity, applicability and message (less where a settings file was looked for: a Windows path live, the
node folder offline). SO-C03 is the one exception, by design: it is a live-only policy
(``modes: [live]``), so offline it is always ``not_assessed`` and not applicable. Live, its status must be
what the same policy says of the offline snapshot with the lab's SSISDB attached (its ``ssisdb.json``, else
the healthy default), so the SSISDB the lab serves is seen to reach the policy intact.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaleguard.collectors.evidence import read_evidence
from scaleguard.collectors.live import collect_inventory
from scaleguard.findings.model import Finding
from scaleguard.lab.from_evidence import load_state
from scaleguard.lab.process import LabProcess
from scaleguard.lab.serve import PASSWORD_ENV
from scaleguard.lab.state import LabState
from scaleguard.policies.engine import evaluate
from scaleguard.policies.loader import load_policies
from scaleguard.policies.model import Thresholds
from scaleguard.snapshot.model import ClusterSnapshot, Snapshot, SsisDb, WorkerAgent
from tests.policies.policy_cases import Case, Materialiser, load_cases

pytestmark = pytest.mark.lab

NOW = datetime.now(UTC).replace(microsecond=0)
POLICIES = load_policies([])
PASSWORD = "Equal-Pa55"
LIVE_ONLY = "SO-C03"


@dataclass
class Folder:
    """One cluster folder of the evidence root: a policy case, or a format variant of the healthy case."""

    name: str
    spec: dict[str, Any]
    edit: str | None = None  # a format variant applied after writing


def _variants() -> list[Folder]:
    healthy = next(c for c in load_cases() if c.name == "healthy").spec
    return [
        Folder("variant-bag-attributes", healthy, "bag-attributes"),
        Folder("variant-get-service", healthy, "get-service"),
        Folder("variant-bare", healthy, "bare"),
    ]


def _edit(cluster_dir: Path, edit: str | None) -> None:
    """Rewrite a written folder the way other Windows tools would have written it."""
    if edit == "bag-attributes":  # openssl pkcs12 -nokeys -out x.pem: each block after "Bag Attributes"
        for cer in cluster_dir.rglob("*.cer"):
            body = base64.encodebytes(cer.read_bytes()).decode("ascii")
            text = (
                "Bag Attributes\n    localKeyID: 01 00 00 00 \n    friendlyName: exported\n"
                "subject=CN = x\n\nissuer=CN = x\n\n"
                f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"
            )
            cer.with_suffix(".pem").write_text(text, encoding="ascii")
            cer.unlink()
    elif edit == "get-service":  # Get-Service | Select Name,Status,StartType,UserName | ConvertTo-Json
        for services in cluster_dir.rglob("services.json"):
            rows = yaml.safe_load(services.read_text(encoding="utf-8-sig"))
            rows = rows if isinstance(rows, list) else [rows]
            name = rows[0]["Name"]
            services.write_text(
                f'{{"Name": "{name}", "Status": 1, "StartType": 4, "UserName": "NT Service\\\\{name}"}}',
                encoding="utf-8",
            )
    elif edit == "bare":  # only what the README marks as required
        for optional in ("keys.json", "services.json", "schannel.json", "host.json"):
            for path in cluster_dir.rglob(optional):
                path.unlink()


@dataclass
class Root:
    path: Path
    folders: dict[str, Folder]
    lab: LabProcess


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Root]:
    base = tmp_path_factory.mktemp("equal")
    evidence = base / "evidence"
    folders: dict[str, Folder] = {}
    cases: list[Case] = load_cases()
    for index, case in enumerate(cases):
        folders[f"case{index:03d}"] = Folder(case.id, case.spec)
    for variant in _variants():
        folders[variant.name] = variant
    for cluster, folder in folders.items():
        Materialiser(folder.spec, NOW).write(evidence / cluster)
        _edit(evidence / cluster, folder.edit)
    with LabProcess(evidence, base / "lab", PASSWORD, service_ms=0, host_timeout=120) as lab:
        yield Root(evidence, folders, lab)


def _by_key(findings: list[Finding]) -> dict[tuple[str, str], Finding]:
    keyed = {(f.policy, f.node): f for f in findings}
    assert len(keyed) == len(findings), "duplicate (policy, node) findings"
    return keyed


def _judged(finding: Finding) -> tuple[str, str, bool, str]:
    """What is compared. Where a settings file was looked for is known live only (the agent searches the
    DTS\\Binn folders; offline it is the node folder), so that part of a message is left out."""
    message = re.sub(r"C:\\Program Files\\Microsoft SQL Server\\\d{3}\\DTS\\Binn\\", "", finding.message)
    message = message.split(" is in the node folder", 1)[0].split(" was found (", 1)[0]
    return finding.status.value, finding.severity.value, finding.applicable, message


def _with_lab_ssisdb(offline: ClusterSnapshot, lab: LabState) -> Snapshot:
    """The offline snapshot as a live audit would judge it with the SSISDB the lab serves."""
    [lab_cluster] = [c for c in lab.clusters if c.name == offline.cluster]
    copy = offline.model_copy(deep=True)
    copy.mode = "live"
    for node, lab_node in zip(copy.nodes, lab_cluster.nodes, strict=True):
        if lab_node.ssisdb is not None and "master" in lab_node.roles():
            node.ssisdb = SsisDb(
                master_properties=dict(lab_node.ssisdb.master_properties),
                worker_agents=[WorkerAgent(
                    worker_agent_id=a["WorkerAgentId"], machine_name=a.get("MachineName"),
                    display_name=a.get("DisplayName"), is_enabled=a.get("IsEnabled"),
                ) for a in lab_node.ssisdb.worker_agents],
            )
    return Snapshot(clusters=[copy])


def test_live_findings_equal_offline_findings_for_every_case_folder(root: Root) -> None:
    live = _collect(root)
    live_by_cluster = {c.cluster: c for c in live.clusters}
    assert len(root.folders) == len(load_cases()) + len(_variants())  # every case folder, none skipped
    assert set(live_by_cluster) == set(root.folders)
    lab_state = load_state(root.path)  # what the lab process built, built again here to read its SSISDB
    differences: list[str] = []
    for cluster, folder in root.folders.items():
        thresholds = Thresholds(**folder.spec["thresholds"]) if "thresholds" in folder.spec else None
        offline_cluster = read_evidence(root.path / cluster)
        offline = _by_key(evaluate(Snapshot(clusters=[offline_cluster]), POLICIES, now=NOW, thresholds=thresholds))
        online = _by_key(evaluate(Snapshot(clusters=[live_by_cluster[cluster]]), POLICIES, now=NOW,
                                  thresholds=thresholds))
        expected_c03 = _by_key(evaluate(_with_lab_ssisdb(offline_cluster, lab_state), POLICIES, now=NOW,
                                        thresholds=thresholds))
        assert set(online) == set(offline), f"{folder.name}: {sorted(set(online) ^ set(offline))}"
        for key, want in offline.items():
            got = online[key]
            if key[0] == LIVE_ONLY:
                assert (want.status.value, want.applicable) == ("not_assessed", False), folder.name
                want = expected_c03[key]
            if _judged(got) != _judged(want):
                differences.append(f"{folder.name} {key}: offline {_judged(want)} live {_judged(got)}")
    assert not differences, "\n".join(differences)


def _collect(root: Root) -> Snapshot:
    previous = os.environ.get(PASSWORD_ENV)
    os.environ[PASSWORD_ENV] = PASSWORD
    try:
        return collect_inventory(root.lab.inventory, concurrency=16, insecure=False, progress=False)
    finally:
        if previous is None:
            os.environ.pop(PASSWORD_ENV, None)
        else:
            os.environ[PASSWORD_ENV] = previous


def test_a_healthy_folder_without_ssisdb_json_audits_live_with_exit_0(root: Root, tmp_path: Path) -> None:
    [cluster] = [name for name, f in root.folders.items() if f.name == "SO-C01::healthy"]
    assert not list((root.path / cluster).rglob("ssisdb.json"))
    document = yaml.safe_load(root.lab.inventory.read_text(encoding="utf-8"))
    document["clusters"] = [c for c in document["clusters"] if c["name"] == cluster]
    inventory = tmp_path / "healthy.yaml"
    inventory.write_text(yaml.safe_dump(document), encoding="utf-8")
    env = {**os.environ, PASSWORD_ENV: PASSWORD,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "SCALEGUARD_HISTORY": str(tmp_path / "h.db")}
    result = subprocess.run(
        [sys.executable, "-m", "scaleguard.cli.main", "audit", "--inventory", str(inventory),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    findings = yaml.safe_load((tmp_path / "out" / "findings.json").read_text(encoding="utf-8"))
    [c03] = [f for f in findings["findings"] if f["policy"] == LIVE_ONLY]
    assert c03["status"] == "pass"
