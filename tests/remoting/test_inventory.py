"""Inventory YAML: what a correct file gives, and a clear file:line error for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaleguard.remoting.errors import InventoryError
from scaleguard.remoting.inventory import CredentialRef, load_inventory

GOOD = """\
version: 1
defaults:
  transport:
    scheme: https
    auth: ntlm
    ca_bundle: ca.pem
    username: CORP\\auditor
    credential: {env: SG_PASSWORD}
    timeout: 90
clusters:
  - name: prod
    transport: {port: 15986}
    masters:
      - ssis-m1.corp.example
      - {host: 10.0.0.2, name: SSIS-M2}
    workers:
      - ssis-w1.corp.example
      - {host: w2.corp.example, port: 5999, transport: {auth: kerberos, timeout: 300}}
  - name: test
    masters:
      - {host: t1, name: T1}
    workers:
      - {host: t1, name: T1}
"""
ONE_CLUSTER = "clusters:\n  - {name: c, masters: [m]}\n"


def write(tmp_path: Path, text: str, name: str = "inventory.yaml") -> Path:
    (tmp_path / "ca.pem").write_text("not checked here", encoding="utf-8")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    return str(caught.value)


def test_a_good_inventory(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, GOOD))
    prod, test = inventory.clusters
    assert [n.name for n in prod.masters] == ["ssis-m1", "SSIS-M2"]
    assert [n.name for n in prod.workers] == ["ssis-w1", "w2"]
    m1 = prod.masters[0]
    assert m1.endpoint == "https://ssis-m1.corp.example:15986/wsman"
    assert m1.transport.username == "CORP\\auditor"
    assert m1.transport.credential == CredentialRef(kind="env", name="SG_PASSWORD")
    assert m1.transport.ca_bundle == tmp_path / "ca.pem"
    assert m1.transport.timeout == 90
    w2 = prod.workers[1]
    assert (w2.transport.auth, w2.transport.timeout, w2.transport.effective_port) == ("kerberos", 300, 5999)
    assert w2.transport.username == "CORP\\auditor"  # inherited key by key
    # the same host listed as master and worker is one node with both roles
    assert [(n.name, n.roles) for n in test.nodes] == [("T1", ("master", "worker"))]
    assert test.nodes[0].transport.effective_port == 5986


def test_defaults_when_nothing_is_said(tmp_path: Path) -> None:
    text = (
        "clusters:\n  - name: c\n    transport: {username: u, credential: {prompt: true}}\n"
        "    masters: [m1]\n"
    )
    node = load_inventory(write(tmp_path, text)).clusters[0].nodes[0]
    assert node.endpoint == "https://m1:5986/wsman"  # HTTPS, validated, NTLM: the safe defaults
    assert (node.transport.auth, node.transport.credential) == ("ntlm", CredentialRef("prompt"))
    assert (node.transport.timeout, node.transport.operation_timeout) == (120.0, 20)


def test_kerberos_needs_no_password_but_ntlm_does(tmp_path: Path) -> None:
    kerberos = "clusters:\n  - name: c\n    transport: {auth: kerberos}\n    masters: [m1, m2]\n"
    assert load_inventory(write(tmp_path, kerberos)).clusters[0].nodes[0].transport.credential is None
    message = errors_of(tmp_path, "clusters:\n  - name: c\n    masters: [m1, m2]\n")
    assert message.count("auth ntlm needs username and credential") == 1  # once per cluster, not per node


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("clusters:\n  - name: c\n    masters: [m]\n    wokers: [w]\n", ":4: cluster: unknown key 'wokers'"),
        (
            "defaults:\n  transport:\n    password: hunter2\nclusters: []\n",
            ":3: defaults.transport: 'password' looks like a password",
        ),
        (
            "defaults:\n  transport:\n    credential: hunter2\nclusters:\n  - {name: c, masters: [m]}\n",
            ":3: defaults.transport: credential must say where the password is",
        ),
        (
            "defaults:\n  transport:\n    credential: {password: hunter2}\n" + ONE_CLUSTER,
            ":3: defaults.transport credential: 'password' looks like a password",
        ),
        (
            "clusters:\n  - name: c\n    masters:\n      - {name: M1}\n",
            ":4: cluster 'c': a master without 'host'",
        ),
        (
            "clusters:\n  - name: c\n    masters:\n      - {host: m, port: 70000}\n",
            ":4: cluster 'c' master 'm' port must be a whole number from 1 to 65535",
        ),
        (
            "clusters:\n  - name: c\n    masters:\n      - {host: m, port: http}\n",
            ":4: cluster 'c' master 'm' port must be a whole number",
        ),
        (
            "clusters:\n  - name: c\n    transport: {scheme: ftp}\n    masters: [m]\n",
            ":3: cluster 'c' transport: scheme must be http or https",
        ),
        (
            "clusters:\n  - name: c\n    transport: {auth: digest}\n    masters: [m]\n",
            ":3: cluster 'c' transport: auth must be one of",
        ),
        ("clusters:\n  - name: c\n    workers: [w]\n", ":2: cluster 'c' has no masters"),
        ("clusters:\n  - masters: [m]\n", ":2: cluster without a name"),
        ("clusters:\n  - name: c\n    masters: [m, m]\n", ":3: cluster 'c': node 'm' is listed twice"),
        (
            "clusters:\n  - {name: c, masters: [m]}\n  - {name: C, masters: [n]}\n",
            "cluster 'C' is given twice",
        ),
        (
            "defaults:\n  transport: {ca_bundle: nowhere.pem}\nclusters:\n  - {name: c, masters: [m]}\n",
            ":2: defaults.transport ca_bundle: file",
        ),
        (  # found by fuzzing: OSError (name too long) and RuntimeError (no such user) escaped as crashes
            "defaults:\n  transport: {ca_bundle: " + "a" * 300 + "}\nclusters:\n  - {name: c, masters: [m]}\n",
            ":2: defaults.transport ca_bundle: 'aaaa",
        ),
        (
            "defaults:\n  transport: {ca_bundle: ~no-such-user-zz/ca.pem}\nclusters:\n  - {name: c, masters: [m]}\n",
            ":2: defaults.transport ca_bundle: '~no-such-user-zz/ca.pem' cannot be a file here",
        ),
        (
            "defaults:\n  transport: {timeout: 10, operation_timeout: 20}\n" + ONE_CLUSTER,
            ":2: defaults.transport: operation_timeout (20) must be below timeout (10)",
        ),
        (
            "defaults:\n  transport: {auth: certificate}\nclusters:\n  - {name: c, masters: [m]}\n",
            "auth certificate needs client_cert and client_key",
        ),
        (
            "defaults:\n  transport: {auth: credssp, scheme: https}\nclusters:\n  - {name: c, masters: [m]}\n",
            ":2: defaults.transport: auth credssp is not supported",
        ),
        (
            "clusters:\n  - name: c\n    transport: {scheme: http, auth: basic, username: u, credential: {env: P}}\n"
            "    masters:\n      - srv1.corp.example\n",
            ":5: cluster 'c' master 'srv1.corp.example': Basic over plain http",
        ),
        (
            "clusters:\n  - name: c\n    transport: {scheme: http, auth: kerberos, message_encryption: never}\n"
            "    masters:\n      - {host: 10.0.0.5}\n",
            ":5: cluster 'c' master '10.0.0.5': kerberos with message_encryption: never over plain http",
        ),
        (
            "defaults:\n  transport: {auth: ntlm, delegate: true, username: u, credential: {env: P}}\n" + ONE_CLUSTER,
            ":2: defaults.transport: delegate only applies to auth kerberos or negotiate",
        ),
        (
            "defaults:\n  transport: {auth: kerberos, spn_hostname: HTTP/m.corp}\n" + ONE_CLUSTER,
            ":2: defaults.transport spn_hostname must be a bare name",
        ),
        (
            "defaults:\n  transport: {auth: kerberos, credential: {env: P}}\n" + ONE_CLUSTER,
            "auth kerberos with a credential needs the username",
        ),
        (
            "defaults:\n  transport: {auth: kerberos, message_encryption: sometimes}\n" + ONE_CLUSTER,
            ":2: defaults.transport: message_encryption must be auto or never",
        ),
        (
            "defaults:\n  transport: {auth: kerberos, allow_unencrypted: yes please}\n" + ONE_CLUSTER,
            ":2: defaults.transport allow_unencrypted must be true or false",
        ),
        (
            "defaults:\n  transport: {credential: {prompt: no}}\nclusters:\n  - {name: c, masters: [m]}\n",
            "write prompt: true",
        ),
        (
            "defaults:\n  transport: {credential: {env: A, keyring: B}}\n" + ONE_CLUSTER,
            "credential needs exactly one of env, keyring, prompt",
        ),
        ("clusters: [\n", "not valid YAML"),
        ("", "is empty"),
        ("defaults: {}\n", "no 'clusters:' list"),
        ("clusters: []\n", "clusters is empty"),
        ("- a\n- b\n", ":1: inventory must be a mapping"),
    ],
)
def test_every_mistake_is_named_with_its_line(tmp_path: Path, text: str, expected: str) -> None:
    message = errors_of(tmp_path, text)
    assert f"inventory.yaml{expected}" in message or expected in message, message
    assert "hunter2" not in message  # a password written by mistake is never echoed back


def test_all_mistakes_are_reported_at_once(tmp_path: Path) -> None:
    text = "clusters:\n  - name: c\n    masters:\n      - {host: m, port: 0}\n    colour: blue\n  - name: d\n"
    message = errors_of(tmp_path, text)
    assert ":4:" in message and ":5:" in message and "cluster 'd' has no masters" in message


def test_an_unreadable_inventory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot be read"):
        load_inventory(tmp_path / "missing.yaml")


def test_ssisdb_machine_names_match_nodes_by_name_host_or_first_label(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, GOOD))
    prod = inventory.clusters[0]
    assert prod.knows("SSIS-W1")  # first label of ssis-w1.corp.example
    assert prod.knows("ssis-m2")  # by name
    assert prod.knows("w2.corp.example")
    assert not prod.knows("SSIS-W9")


def test_kerberos_transport_settings_per_cluster_and_node(tmp_path: Path) -> None:
    text = (
        "defaults:\n  transport: {auth: kerberos, username: auditor@CORP.EXAMPLE, credential: {env: P}}\n"
        "clusters:\n  - name: c\n    transport: {delegate: true, spn_service: WSMAN}\n"
        "    masters:\n      - {host: 10.0.0.5, transport: {spn_hostname: ssis-m1.corp.example}}\n"
        "    workers: [w1.corp.example]\n"
    )
    master, worker = load_inventory(write(tmp_path, text)).clusters[0].nodes
    assert (master.transport.spn_hostname, master.transport.spn_service, master.transport.delegate) == (
        "ssis-m1.corp.example",
        "WSMAN",
        True,
    )
    assert (worker.transport.spn_hostname, worker.transport.delegate) == (None, True)
    assert master.transport.message_encryption == "auto" and not master.travels_unencrypted


def test_unencrypted_http_is_refused_unless_allowed_per_host_and_loopback_is_exempt(tmp_path: Path) -> None:
    basic = "{scheme: http, auth: basic, username: u, credential: {env: P}}"
    text = (
        f"defaults:\n  transport: {basic}\n"
        "clusters:\n  - name: c\n    masters:\n      - 127.0.0.1\n      - localhost\n      - '::1'\n"
        "    workers:\n      - {host: w1.corp.example, transport: {allow_unencrypted: true}}\n"
        "      - {host: w2.corp.example, transport: {scheme: https}}\n"
        "      - {host: w3.corp.example, transport: {auth: ntlm}}\n"
    )
    nodes = {n.host: n for n in load_inventory(write(tmp_path, text)).clusters[0].nodes}
    assert [h for h, n in nodes.items() if n.travels_unencrypted] == ["w1.corp.example"]
    assert nodes["127.0.0.1"].transport.unencrypted and nodes["127.0.0.1"].loopback  # on the machine itself
    assert not nodes["w3.corp.example"].transport.unencrypted  # NTLM seals every message over http
