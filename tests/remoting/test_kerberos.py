"""Kerberos end to end: a real MIT KDC (k5test), real pywinrm + pyspnego/GSSAPI, the lab accepting Kerberos.

Everything lives in this module's tmp folders: the realm's database, krb5.conf, keytab, ticket caches and
replay cache (KRB5_CONFIG, KRB5CCNAME, KRB5_KTNAME, KRB5RCACHEDIR point there). Hosts are on 127.0.0.1; the
SPN of each is ``HTTP/<node>.lab.test`` (the inventory's ``spn_hostname``), and the krb5.conf turns off DNS
canonicalisation and reverse lookups so no name is resolved, /etc/hosts included.

Over HTTP the lab refuses any message that is not sealed with the Kerberos session key (as Windows does with
AllowUnencrypted=false), so a collection that succeeds there ran with WinRM message encryption.
"""

from __future__ import annotations

import secrets
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from scaleguard.cli.main import app
from scaleguard.collectors.live import collect_inventory
from scaleguard.findings.model import Status
from scaleguard.lab.process import LabProcess
from scaleguard.lab.scenario import demo_scenario
from scaleguard.lab.serve import PASSWORD_ENV, Lab, LabOptions, spn_hostname, start_lab
from scaleguard.pipeline import AuditOptions, run_audit
from scaleguard.remoting.errors import InventoryError
from scaleguard.snapshot.model import CollectionState

pytestmark = pytest.mark.lab

PASSWORD = "Krb-" + secrets.token_urlsafe(12)
USER = "scaleguard"
DOMAIN = "lab.test"
NODES = ("MASTER01", "WORKER01", "WORKER02")


@dataclass
class Kdc:
    realm: Any  # k5test.K5Realm
    folder: Path

    @property
    def name(self) -> str:
        return str(self.realm.realm)

    def kinit(self, ccache: Path, password: str = PASSWORD) -> None:
        self.realm.run([self.realm._kinit, "-c", f"FILE:{ccache}", f"{USER}@{self.name}"], input=password + "\n")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
        udp.bind(("127.0.0.1", port))  # the KDC listens on both
        return port


@pytest.fixture(scope="module")
def kdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kdc]:
    from k5test import K5Realm

    folder = tmp_path_factory.mktemp("kdc")
    no_dns = {
        "libdefaults": {
            "rdns": "false",
            "dns_canonicalize_hostname": "false",
            "dns_lookup_kdc": "false",
            "dns_lookup_realm": "false",
            "forwardable": "true",
        },
        "realms": {"$realm": {"kdc": "127.0.0.1:$port0", "admin_server": "127.0.0.1:$port1"}},
        "domain_realm": {f".{DOMAIN}": "$realm"},  # as an AD domain maps to its realm
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(folder))  # k5test makes its realm folder with mkdtemp
        realm = K5Realm(
            realm="SCALEGUARD.TEST",
            portbase=_free_port(),
            krb5_conf=no_dns,
            create_user=False,
            create_host=False,
            get_creds=False,
        )
    try:
        realm.addprinc(f"{USER}@{realm.realm}", PASSWORD)
        for node in NODES:
            principal = f"HTTP/{spn_hostname(node, DOMAIN)}@{realm.realm}"
            realm.addprinc(principal)
            realm.extract_keytab(principal, realm.keytab)
        with pytest.MonkeyPatch.context() as patch:
            for name in ("KRB5_CONFIG", "KRB5_KDC_PROFILE", "KRB5CCNAME", "KRB5_KTNAME", "KRB5RCACHEDIR"):
                patch.setenv(name, realm.env[name])
            patch.setenv("KRB5_CLIENT_KTNAME", str(folder / "no-client-keytab"))
            yield Kdc(realm, folder)
    finally:
        realm.stop()


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


class KerberosLab:
    """A cluster served by an in-process lab that only speaks Kerberos, and its (editable) inventory."""

    def __init__(self, folder: Path, *, https: bool = False) -> None:
        self.evidence = folder / "evidence" / "contoso"
        demo_scenario(len(NODES) - 1, seed=5).write(self.evidence)  # with the demo's planted defects
        self.inventory = folder / "inventory.yaml"
        self.journal = folder / "journal.sqlite"
        self.lab: Lab = start_lab(
            LabOptions(evidence=self.evidence, inventory_out=self.inventory, auth="kerberos", https=https)
        )
        self.lab.write_inventory()

    def edit(self, defaults: dict[str, Any] | None = None, **per_node: dict[str, Any]) -> None:
        """Change the inventory's default transport and some nodes' transports (as a user would)."""
        document = yaml.safe_load(self.inventory.read_text(encoding="utf-8"))
        document["defaults"]["transport"].update(defaults or {})
        for cluster in document["clusters"]:
            for entry in cluster["masters"] + cluster["workers"]:
                entry.setdefault("transport", {}).update(per_node.get(entry["name"], {}))
        self.inventory.write_text(yaml.safe_dump(document), encoding="utf-8")

    def states(self) -> dict[str, tuple[CollectionState, str]]:
        snapshot = collect_inventory(self.inventory, concurrency=3, insecure=False, progress=False)
        return {n.name: (n.collection.state, n.collection.reason or "") for n in snapshot.clusters[0].nodes}

    def fix(self, *args: str) -> Any:
        return CliRunner().invoke(
            app, ["fix", "--inventory", str(self.inventory), "--journal", str(self.journal), *args]
        )


@pytest.fixture
def served(kdc: Kdc, tmp_path: Path) -> Iterator[Any]:
    started: list[KerberosLab] = []

    def serve(**options: Any) -> KerberosLab:
        started.append(KerberosLab(tmp_path / f"lab{len(started)}", **options))
        return started[-1]

    yield serve
    for item in started:
        item.lab.close()


def test_kerberos_collects_every_node_with_message_encryption_over_http(served: Any) -> None:
    lab = served()
    inventory = lab.inventory.read_text(encoding="utf-8")
    assert "scheme: http\n" in inventory and "auth: kerberos" in inventory
    assert lab.states() == dict.fromkeys(NODES, (CollectionState.OK, ""))


def test_kerberos_with_message_encryption_turned_off_is_refused_by_the_lab_over_http(served: Any) -> None:
    lab = served()
    lab.edit({"message_encryption": "never"})
    states = lab.states()
    assert {state for state, _ in states.values()} == {CollectionState.AUTH_REFUSED}


def test_kerberos_over_https_validates_tls_and_sends_a_channel_binding(served: Any) -> None:
    lab = served(https=True)
    assert lab.states() == dict.fromkeys(NODES, (CollectionState.OK, ""))


def test_kerberos_over_https_without_the_ca_fails_tls_unless_insecure_which_is_recorded(served: Any) -> None:
    lab = served(https=True)
    document = yaml.safe_load(lab.inventory.read_text(encoding="utf-8"))
    del document["defaults"]["transport"]["ca_bundle"]
    lab.inventory.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert {state for state, _ in lab.states().values()} == {CollectionState.FAILED}  # TLS validated
    snapshot = collect_inventory(lab.inventory, concurrency=3, insecure=True, progress=False)
    nodes = snapshot.clusters[0].nodes
    assert [(n.collection.state, n.collection.insecure) for n in nodes] == [(CollectionState.OK, True)] * 3


def test_negotiate_wraps_kerberos_in_spnego(served: Any) -> None:
    lab = served()
    lab.edit({"auth": "negotiate"})
    assert lab.states() == dict.fromkeys(NODES, (CollectionState.OK, ""))


@pytest.mark.parametrize("delegate", [False, True])
def test_kerberos_delegation_forwards_the_ticket_only_when_asked(served: Any, delegate: bool) -> None:
    lab = served()
    lab.edit({"delegate": delegate})
    assert lab.states() == dict.fromkeys(NODES, (CollectionState.OK, ""))
    forwarded = [server.delegated_logons > 0 for server in lab.lab.servers]
    assert forwarded == [delegate] * len(NODES)


def test_kerberos_uses_an_existing_ticket_cache_without_a_password(
    served: Any, kdc: Kdc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ccache = tmp_path / "ccache"
    kdc.kinit(ccache)
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{ccache}")
    lab = served()
    monkeypatch.delenv(PASSWORD_ENV)  # nothing but the ticket cache can log on
    document = yaml.safe_load(lab.inventory.read_text(encoding="utf-8"))
    del document["defaults"]["transport"]["credential"], document["defaults"]["transport"]["username"]
    lab.inventory.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert lab.states() == dict.fromkeys(NODES, (CollectionState.OK, ""))


def test_kerberos_wrong_password_and_unknown_spn_are_each_that_hosts_error(
    served: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WRONG_PASSWORD", PASSWORD + "-wrong")
    lab = served()
    lab.edit(
        WORKER01={"credential": {"env": "WRONG_PASSWORD"}},
        WORKER02={"spn_hostname": "nosuch.lab.test"},
    )
    states = lab.states()
    assert states["MASTER01"] == (CollectionState.OK, "")
    state, reason = states["WORKER01"]
    assert state is CollectionState.AUTH_REFUSED
    assert "wrong password" in reason and PASSWORD not in reason
    state, reason = states["WORKER02"]
    assert state is CollectionState.AUTH_REFUSED
    assert "HTTP/nosuch.lab.test@SCALEGUARD.TEST not found in Kerberos database" in reason
    assert "spn_hostname" in reason

    result = run_audit(AuditOptions(out_dir=tmp_path / "audit", inventory=lab.inventory, progress=False))
    errors = {f.node: f for f in result.findings.findings if f.policy == "SO-C01" and f.status is Status.ERROR}
    assert set(errors) == {"WORKER01", "WORKER02"}
    assert any(f.policy != "SO-C01" and f.node == "MASTER01" for f in result.findings.findings)


def test_kerberos_fix_apply_repairs_the_planted_defects_over_encrypted_winrm(served: Any) -> None:
    lab = served()
    applied = lab.fix("--apply", "--yes")
    assert applied.exit_code == 0, applied.output
    assert "fixed" in applied.output and "still" not in applied.output
    again = lab.fix("--apply", "--yes")
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_kerberos_without_gssapi_is_one_usage_error_before_connecting(
    served: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = served()
    monkeypatch.setattr(
        "scaleguard.collectors.live.kerberos_unavailable_reason", lambda: "the Python GSSAPI bindings are missing"
    )
    with pytest.raises(InventoryError) as raised:
        collect_inventory(lab.inventory, concurrency=3, insecure=False, progress=False)
    assert str(raised.value).count("GSSAPI bindings are missing") == 1
    assert "MASTER01, WORKER01, WORKER02" in str(raised.value)
    result = CliRunner().invoke(app, ["collect", "--inventory", str(lab.inventory), "--out", str(lab.journal)])
    assert result.exit_code == 2 and result.output.count("GSSAPI") == 1, result.output


def test_kerberos_lab_refuses_a_request_without_a_ticket(served: Any) -> None:
    import requests

    lab = served()
    port = next(iter(lab.lab.ports.values()))
    answer = requests.post(f"http://127.0.0.1:{port}/wsman", data=b"<x/>", timeout=10)
    assert answer.status_code == 401
    assert "Negotiate" in answer.headers["WWW-Authenticate"]



def test_kerberos_lab_serve_runs_as_its_own_process_from_the_keytab(kdc: Kdc, tmp_path: Path) -> None:
    evidence = tmp_path / "evidence" / "contoso"
    demo_scenario(len(NODES) - 1, seed=5).write(evidence)
    with LabProcess(evidence, tmp_path / "lab", PASSWORD, auth="kerberos") as lab:  # env: KRB5_KTNAME
        snapshot = collect_inventory(lab.inventory, concurrency=3, insecure=False, progress=False)
    states = [(n.name, n.collection.state) for n in snapshot.clusters[0].nodes]
    assert states == [(node, CollectionState.OK) for node in NODES]


def test_kerberos_lab_serve_without_a_keytab_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KRB5_KTNAME", raising=False)
    evidence = tmp_path / "evidence" / "contoso"
    demo_scenario(1, seed=5).write(evidence)
    args = ["lab", "serve", "--evidence", str(evidence), "--inventory-out", str(tmp_path / "i.yaml")]
    result = CliRunner().invoke(app, [*args, "--auth", "kerberos"])
    assert result.exit_code == 2 and "KRB5_KTNAME" in result.output, result.output
    assert not (tmp_path / "i.yaml").exists()
