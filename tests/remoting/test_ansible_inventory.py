"""Ansible inventories (INI and YAML) read as scaleguard inventories: the group convention, Ansible's variable
order, host ranges, the honoured connection variables, and every refusal (a literal password above all)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from scaleguard.cli.main import app
from scaleguard.remoting.errors import InventoryError
from scaleguard.remoting.inventory import CredentialRef, Inventory, load_inventory

INI = """\
# the shop's Ansible inventory, also used by its playbooks
[all:vars]
ansible_connection=winrm
ansible_user=CORP\\auditor
ansible_password="{{ lookup('env', 'WINRM_PASSWORD') }}"
ansible_become_method=runas

[contoso_masters]
ssis-m1.corp.example ansible_winrm_ca_trust_path=ca.pem

[contoso_workers]
ssis-w[01:03].corp.example
legacy-w9 ansible_host=10.0.2.9 ansible_port=5985 ansible_winrm_transport=kerberos,ntlm

[contoso:children]
contoso_masters
contoso_workers

[contoso:vars]
scaleguard_cluster=CONTOSO-SSIS
ansible_winrm_transport=ntlm
ansible_winrm_read_timeout_sec=90
ansible_winrm_operation_timeout_sec=30

[sqlservers]
ssis-w01.corp.example
"""

YAML = """\
all:
  vars:
    ansible_connection: winrm
    ansible_user: CORP\\auditor
    ansible_password: "{{ lookup('env', 'WINRM_PASSWORD') }}"
  children:
    contoso:
      vars:
        scaleguard_cluster: CONTOSO-SSIS
        ansible_winrm_transport: ntlm
        ansible_winrm_read_timeout_sec: 90
        ansible_winrm_operation_timeout_sec: 30
      children:
        contoso_masters:
          hosts:
            ssis-m1.corp.example:
              ansible_winrm_ca_trust_path: ca.pem
        contoso_workers:
          hosts:
            ssis-w[01:03].corp.example:
            legacy-w9:
              ansible_host: 10.0.2.9
              ansible_port: 5985
              ansible_winrm_transport: [kerberos, ntlm]
    sqlservers:
      hosts:
        ssis-w01.corp.example:
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def summary(inv: Inventory) -> list[tuple[object, ...]]:
    return sorted(
        (c.name, n.name, n.host, n.roles, n.transport.scheme, n.transport.effective_port, n.transport.auth,
         n.transport.username, n.transport.credential, n.transport.timeout, n.transport.operation_timeout,
         n.transport.ca_bundle.name if n.transport.ca_bundle else None)
        for c, n in inv.nodes()
    )


EXPECTED = sorted(
    [
        ("CONTOSO-SSIS", "ssis-m1", "ssis-m1.corp.example", ("master",), "https", 5986, "ntlm", "CORP\\auditor",
         CredentialRef("env", "WINRM_PASSWORD"), 90.0, 30, "ca.pem"),
        *[
            ("CONTOSO-SSIS", f"ssis-w0{i}", f"ssis-w0{i}.corp.example", ("worker",), "https", 5986, "ntlm",
             "CORP\\auditor", CredentialRef("env", "WINRM_PASSWORD"), 90.0, 30, None)
            for i in (1, 2, 3)
        ],
        # host variables beat group variables; port 5985 means http, as in Ansible; first transport listed
        ("CONTOSO-SSIS", "legacy-w9", "10.0.2.9", ("worker",), "http", 5985, "kerberos", "CORP\\auditor",
         CredentialRef("env", "WINRM_PASSWORD"), 90.0, 30, None),
    ]
)


@pytest.mark.parametrize(("name", "text"), [("hosts.ini", INI), ("hosts.yml", YAML)])
def test_an_ansible_inventory_reads_as_clusters_and_transports(tmp_path: Path, name: str, text: str) -> None:
    assert summary(load_inventory(write(tmp_path, name, text))) == EXPECTED


def test_inventory_import_writes_the_native_equivalent(tmp_path: Path) -> None:
    source = write(tmp_path, "hosts.ini", INI)
    out = tmp_path / "inventory.yaml"
    result = CliRunner().invoke(app, ["inventory", "import", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "1 cluster(s), 5 node entries" in result.stderr
    document = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert "clusters" in document and "WINRM_PASSWORD" in out.read_text(encoding="utf-8")
    assert summary(load_inventory(out)) == EXPECTED
    printed = CliRunner().invoke(app, ["inventory", "import", str(source)])
    assert printed.exit_code == 0 and yaml.safe_load(printed.stdout) == document


def test_the_native_format_is_still_read_as_native(tmp_path: Path) -> None:
    native = tmp_path / "inventory.yaml"
    native.write_text("clusters:\n  - name: prod\n    transport: {auth: kerberos}\n    masters: [m1.corp]\n")
    [(cluster, node)] = load_inventory(native).nodes()
    assert (cluster.name, node.name, node.transport.auth) == ("prod", "m1", "kerberos")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[c_masters]\nm1 ansible_password=Hunter2pass\n", "ansible_password must not hold a password"),
        ("[c_masters]\nm1\n[c_masters:vars]\nansible_winrm_password='{{ vault_winrm }}'\n",
         "ansible_winrm_password must not hold a password"),
        ("[c_masters]\nm1 ansible_winrm_server_cert_validation=ignore\n", "--insecure"),
        ("[c_masters]\nm1 scaleguard_credentials=x\n", "unknown variable 'scaleguard_credentials'"),
        ("[web]\nw1\n", "no group named <cluster>_masters"),
        ("[c_masters]\nm[0:99999]\n", "more than 10000 hosts"),
        ("[c_masters]\nm1 ansible_port=99999\n", "ansible_port must be 1-65535"),
        ("[c_workers]\nw1 scaleguard_credential_env=P ansible_user=u\n", "has no masters"),
        ("[c_masters]\nm1 ansible_winrm_transport=basic ansible_winrm_scheme=http ansible_user=u "
         "scaleguard_credential_env=P\n", "over plain http"),
        ("[a:children]\nb\n[b:children]\na\n[c_masters]\nm1\n", "nested deeper than"),
    ],
)
def test_unusable_ansible_inventories_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "hosts.ini", text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert message in str(caught.value)
    assert "Hunter2pass" not in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_refusals_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.ini", "[c_masters]\nm0\n\nm1 ansible_password=literal\n")
    with pytest.raises(InventoryError, match=rf"^{path}:4: host 'm1'"):
        load_inventory(path)


def test_credential_references_other_than_env(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts.yml", (
        "c_masters:\n  hosts:\n    m1:\n      ansible_user: u\n      scaleguard_credential_keyring: scaleguard-prod\n"
    ))
    [(_, node)] = load_inventory(path).nodes()
    assert node.transport.credential == CredentialRef("keyring", "scaleguard-prod")


def test_a_host_in_both_role_groups_is_one_node_with_both_roles(tmp_path: Path) -> None:
    text = "[all:vars]\nansible_winrm_transport=kerberos\n[c_masters]\nsolo.corp\n[c_workers]\nsolo.corp\n"
    path = write(tmp_path, "hosts.ini", text)
    [(_, node)] = load_inventory(path).nodes()
    assert node.roles == ("master", "worker") and node.name == "solo"
