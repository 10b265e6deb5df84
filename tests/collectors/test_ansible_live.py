"""An Ansible INI and an Ansible YAML inventory drive a live audit of the lab with the same findings as the
inventory the lab writes: one host list for the playbooks and for scaleguard."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaleguard.findings.model import Finding
from scaleguard.lab.process import LabProcess
from scaleguard.lab.scenario import demo_scenario
from scaleguard.lab.serve import PASSWORD_ENV
from scaleguard.pipeline import AuditOptions, run_audit

pytestmark = pytest.mark.lab

PASSWORD = "Lab-" + secrets.token_urlsafe(18)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    evidence = demo_scenario(defects=True).write(tmp_path_factory.mktemp("ansible-live") / "CONTOSO-SSIS")
    with LabProcess(evidence, tmp_path_factory.mktemp("ansible-lab"), PASSWORD, auth="ntlm") as running:
        yield running


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def _native(lab: LabProcess) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    document = yaml.safe_load(lab.inventory.read_text(encoding="utf-8"))
    transport = document["defaults"]["transport"]
    [cluster] = document["clusters"]
    nodes = [("masters", n) for n in cluster["masters"]] + [("workers", n) for n in cluster["workers"]]
    return transport, cluster, nodes


def _ansible_ini(lab: LabProcess, path: Path) -> Path:
    transport, cluster, nodes = _native(lab)
    lines = [
        "[all:vars]",
        "ansible_connection=winrm",
        f"ansible_user={transport['username']}",
        f"ansible_password=\"{{{{ lookup('env', '{PASSWORD_ENV}') }}}}\"",
        f"ansible_winrm_transport={transport['auth']}",
        f"ansible_winrm_scheme={transport['scheme']}",
        "ansible_winrm_server_cert_validation=validate",
        f"ansible_winrm_read_timeout_sec={transport['timeout']}",
        f"ansible_winrm_operation_timeout_sec={transport['operation_timeout']}",
        "",
    ]
    for role in ("masters", "workers"):
        lines.append(f"[lab_{role}]")
        lines += [f"{n['name']} ansible_host={n['host']} ansible_port={n['port']}" for r, n in nodes if r == role]
        lines.append("")
    lines += ["[lab:children]", "lab_masters", "lab_workers", "", "[lab:vars]", f"scaleguard_cluster={cluster['name']}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ansible_yaml(lab: LabProcess, path: Path) -> Path:
    transport, cluster, nodes = _native(lab)
    document = {
        "all": {
            "vars": {
                "ansible_connection": "winrm",
                "ansible_user": transport["username"],
                "ansible_password": f"{{{{ lookup('env', '{PASSWORD_ENV}') }}}}",
                "ansible_winrm_transport": transport["auth"],
                "ansible_winrm_scheme": transport["scheme"],
                "ansible_winrm_read_timeout_sec": transport["timeout"],
                "ansible_winrm_operation_timeout_sec": transport["operation_timeout"],
            },
            "children": {
                "lab": {
                    "vars": {"scaleguard_cluster": cluster["name"]},
                    "children": {
                        f"lab_{role}": {
                            "hosts": {
                                n["name"]: {"ansible_host": n["host"], "ansible_port": n["port"]}
                                for r, n in nodes
                                if r == role
                            }
                        }
                        for role in ("masters", "workers")
                    },
                }
            },
        }
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _findings(inventory: Path, out: Path) -> set[tuple[str, str, str, str, str]]:
    result = run_audit(AuditOptions(out_dir=out, inventory=inventory, progress=False, history=None))
    assert result.findings.mode == "live"
    return {_key(f) for f in result.findings.findings}


def _key(f: Finding) -> tuple[str, str, str, str, str]:
    return (f.cluster, f.policy, f.node, f.status.value, f.severity.value)


def test_ansible_ini_and_yaml_inventories_audit_the_lab_like_the_native_one(
    lab: LabProcess, tmp_path: Path
) -> None:
    native = _findings(lab.inventory, tmp_path / "native")
    assert {k[2] for k in native} >= {"MASTER01", "WORKER01", "WORKER02", "WORKER03"}
    assert any(k[3] == "fail" for k in native)  # the planted defects are found live
    assert _findings(_ansible_ini(lab, tmp_path / "hosts.ini"), tmp_path / "ini") == native
    assert _findings(_ansible_yaml(lab, tmp_path / "hosts.yml"), tmp_path / "yaml") == native
