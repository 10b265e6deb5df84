"""The lab refuses what Windows refuses, and is slower where Windows is slower (``docs/windows-conformance.md``).

Every test is named in a row of that table; ``test_the_table_lists_exactly_the_scripts_operations`` keeps
the table's operations equal to the ops ``actions.ps1`` and ``collect.ps1`` dispatch on, and every test the
table names must exist.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from pathlib import Path
from typing import Any

import pytest

from scaleguard.apply.transport import actions_script
from scaleguard.collectors.agent import agent_script
from scaleguard.lab.actions import BACKUP_ROOT, windows_full_path
from scaleguard.lab.certs import CertSpec, make_certificate, pfx_for_server_2016
from scaleguard.lab.dispatch import dispatch
from scaleguard.lab.evidence import encode_text, settings_xml
from scaleguard.lab.state import (
    SECRET_KEY,
    ActionError,
    LabBinding,
    LabCert,
    LabNode,
    LabService,
    PartialChangeError,
)

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "windows-conformance.md"
MASTER = make_certificate(CertSpec(("MASTER01",), key_seed=51))
OTHER = make_certificate(CertSpec(("OTHER",), key_seed=52))
APP = "{11111111-1111-1111-1111-111111111111}"
SERVICE = "SSISScaleOutMaster150"


def node() -> LabNode:
    config = encode_text(settings_xml("MasterSettings", {"PortNumber": 8391, "SSLCertThumbprint": "old"}), "utf-8")
    target = LabNode(
        name="MASTER01",
        cluster="C",
        master_config=config,
        root=[LabCert(MASTER.der)],
        my=[LabCert(OTHER.der)],
        bindings=[LabBinding("0.0.0.0:8391", MASTER.thumbprint, APP, None)],
        services=[LabService(SERVICE, "Running", "Auto", f"NT Service\\{SERVICE}")],
    )
    for cert in [*(target.root or []), *(target.my or [])]:
        cert.key = target.new_key(cert.thumbprint, "capi", ["NT AUTHORITY\\SYSTEM"])
    return target


def run(target: LabNode, **request: Any) -> dict[str, Any]:
    return dispatch(target, request)


# --- the table itself ---------------------------------------------------------------------------------------


def script_ops() -> set[str]:
    ops = set(re.findall(r"^\s+'([a-z_]+)' \{ \$result = Invoke-", actions_script(), flags=re.M))
    ops |= set(re.findall(r"\$op -eq '([a-z_]+)'", actions_script()))  # batch
    ops |= set(re.findall(r"\$request\.op -ne '([a-z_]+)'", agent_script()))
    return ops


def table_rows() -> list[list[str]]:
    text = TABLE.read_text(encoding="utf-8")
    section = text[text.index("## Agent operations") :]
    lines = section.split("\n## ", 1)[0].splitlines()
    return [
        [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        for line in lines
        if line.startswith("| `")
    ]


def test_the_table_lists_exactly_the_scripts_operations() -> None:
    rows = table_rows()
    assert all(len(row) == 5 for row in rows), [row[0] for row in rows if len(row) != 5]
    listed = {op for row in rows for op in re.findall(r"`([a-z_]+)`", row[0])}
    assert {"collect", "set_binding", "batch", "lease_acquire"} <= script_ops()
    assert listed == script_ops()
    tests = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("test_*.py"))
    for row in rows:
        named = re.findall(r"`(test_[a-z0-9_]+)`", row[-1])
        assert named, f"row without a test: {row[0]}"
        for test in named:
            assert f"def {test}(" in tests, test


# --- finding 2: a binding store is Root or My, or absent; never null ----------------------------------------


def test_binding_restore_with_a_null_store_is_refused_unless_left_out() -> None:
    target = node()
    request = {"op": "set_binding", "ip_port": "0.0.0.0:8391", "cert_hash": OTHER.thumbprint, "app_id": APP}
    with pytest.raises(ActionError, match="must be Root or My, or left out"):
        dispatch(target, {**request, "cert_store": None})
    assert target.bindings is not None and target.bindings[0].cert_hash == MASTER.thumbprint
    result = dispatch(target, request)  # left out: HTTP.sys uses MY, where OTHER is, with its key
    assert target.bindings[0].store is None and target.bindings[0].cert_hash == OTHER.thumbprint
    assert result["verb"] == "update"


# --- finding 5: services take time, and a hung one is a definite error inside the wait --------------------


def test_service_transitions_take_time_and_a_hung_start_is_a_partial_change() -> None:
    target = node()
    target.service_s = 0.2
    started = time.monotonic()
    assert run(target, op="restart_service", name=SERVICE, wait_s=5)["restarted"] is True
    assert time.monotonic() - started >= 0.4  # a stop and a start
    run(target, op="stop_service", name=SERVICE, wait_s=5)
    target.faults.stuck_services = [SERVICE]
    started = time.monotonic()
    with pytest.raises(PartialChangeError, match="did not reach Running within 1 s") as raised:
        run(target, op="start_service", name=SERVICE, wait_s=1)
    assert 1.0 <= time.monotonic() - started < 2.0
    assert raised.value.result == {"name": SERVICE, "was_running": False}
    assert target.service(SERVICE).state == "Start Pending"  # type: ignore[union-attr]  # Win32_Service's words


def test_a_service_too_slow_for_the_wait_is_refused_the_same_way() -> None:
    target = node()
    target.service_s = 1.5
    with pytest.raises(PartialChangeError, match="did not reach Stopped within 1 s"):
        run(target, op="stop_service", name=SERVICE, wait_s=1)


# --- lab divergences removed: no defaults ---------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["key_bits", "hash", "valid_days", "friendly_name", "store"])
def test_create_certificate_has_no_defaults(missing: str) -> None:
    target = node()
    request = {
        "op": "create_certificate",
        "store": "My",
        "common_names": ["W1"],
        "key_bits": 2048,
        "hash": "sha256",
        "valid_days": 30,
        "friendly_name": "SSIS Scale Out Worker",
    }
    del request[missing]
    with pytest.raises(ActionError):
        dispatch(target, request)
    assert len(target.my) == 1


@pytest.mark.parametrize("op", ["import_certificate", "copy_certificate", "remove_certificate", "grant_key_read"])
def test_a_thumbprint_is_always_required(op: str) -> None:
    target = node()
    request = {
        "op": op,
        "store": "Root",
        "from_store": "My",
        "to_store": "Root",
        "account": "NT Service\\SSISScaleOutWorker150",
        "der_b64": base64.b64encode(OTHER.der).decode(),
    }
    with pytest.raises(ActionError, match="thumbprint"):
        dispatch(target, request)


# --- lab divergence removed: AES-256 PFX files -----------------------------------------------------------------


def test_an_aes_pfx_is_refused_as_server_2016_refuses_it() -> None:
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

    target = node()
    aes = pkcs12.serialize_key_and_certificates(
        b"m",
        OTHER.key,
        OTHER.certificate,
        None,
        BestAvailableEncryption(b"pw"),  # type: ignore[arg-type]
    )
    request = {"op": "import_pfx", "store": "Root", "thumbprint": OTHER.thumbprint, SECRET_KEY: "pw"}
    with pytest.raises(ActionError, match="network password is not correct.*TripleDES"):
        dispatch(target, {**request, "pfx_b64": base64.b64encode(aes).decode()})
    assert target.find_cert("Root", OTHER.thumbprint) is None
    triple_des = pfx_for_server_2016(OTHER, b"pw")
    dispatch(target, {**request, "pfx_b64": base64.b64encode(triple_des).decode()})
    assert target.find_cert("Root", OTHER.thumbprint) is not None


def test_a_password_in_the_json_is_not_the_password() -> None:
    target = node()
    data = base64.b64encode(pfx_for_server_2016(OTHER, b"pw")).decode()
    with pytest.raises(ActionError, match="network password is not correct"):
        run(target, op="import_pfx", store="Root", thumbprint=OTHER.thumbprint, pfx_b64=data, password="pw")


# --- lab divergence removed: write_config writes the bytes it is given; locked files ------------------------


def write_request(target: LabNode, content: bytes) -> dict[str, Any]:
    current = target.master_config or b""
    return {
        "op": "write_config",
        "path": target.config_path("master"),
        "content_b64": base64.b64encode(content).decode(),
        "expected_sha256": hashlib.sha256(current).hexdigest(),
        "backup_name": "run1\\s001-MasterSettings.config",
    }


def test_write_config_writes_exactly_the_bytes_it_is_given() -> None:
    target = node()
    anything = b"\xff\xfenot even XML \x00"
    result = dispatch(target, write_request(target, anything))
    assert target.master_config == anything and result["after_sha256"] == hashlib.sha256(anything).hexdigest()


def test_a_locked_config_is_not_written_and_nothing_changes() -> None:
    target = node()
    before = target.master_config
    target.faults.locked_files = [target.config_path("master")]
    with pytest.raises(ActionError, match="being used by another process"):
        dispatch(target, write_request(target, b"<MasterSettings/>"))
    assert target.master_config == before
    assert not any(k.endswith(".scaleguard-new") for k in target.files)


# --- finding 8: backups ------------------------------------------------------------------------------------------


def test_a_backup_whose_hash_changed_is_not_restored() -> None:
    target = node()
    original = target.master_config
    written = dispatch(target, write_request(target, b"<MasterSettings>new</MasterSettings>"))
    backup = f"{BACKUP_ROOT}\\run1\\s001-MasterSettings.config"
    target.files[backup] = b"<MasterSettings>planted by someone</MasterSettings>"
    restore = {
        "op": "restore_file",
        "path": target.config_path("master"),
        "backup_name": "run1\\s001-MasterSettings.config",
        "backup_sha256": written["backup_sha256"],
        "expected_sha256": written["after_sha256"],
    }
    with pytest.raises(ActionError, match="does not have the SHA-256 recorded"):
        dispatch(target, restore)
    assert target.master_config == b"<MasterSettings>new</MasterSettings>"
    target.files[backup] = original or b""
    assert dispatch(target, restore)["restored"] is True and target.master_config == original
    with pytest.raises(ActionError, match="backup_sha256"):
        dispatch(target, {k: v for k, v in restore.items() if k != "backup_sha256"})


def test_an_untrusted_backup_folder_refuses_every_backup() -> None:
    target = node()
    target.faults.untrusted_backup_folder = True
    before = target.master_config
    with pytest.raises(ActionError, match="not SYSTEM or Administrators; backups refused"):
        dispatch(target, write_request(target, b"x"))
    assert target.master_config == before and not target.files


# --- finding 9: the config path -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "\\\\fileserver\\share\\Microsoft SQL Server\\150\\DTS\\Binn\\MasterSettings.config",
        "\\\\?\\C:\\Program Files\\Microsoft SQL Server\\150\\DTS\\Binn\\MasterSettings.config",
        "Program Files\\Microsoft SQL Server\\150\\DTS\\Binn\\MasterSettings.config",
        "D:\\Evil\\DTS\\Binn\\MasterSettings.config",
        "C:\\Program Files\\Microsoft SQL Server\\150\\DTS\\Binn\\..\\..\\..\\x\\DTS\\Binn\\MasterSettings.config",
    ],
)
def test_a_config_path_outside_the_nodes_binn_is_refused(path: str) -> None:
    with pytest.raises(ActionError, match="local drive path|only MasterSettings"):
        run(node(), op="read_file", path=path)


def test_a_config_path_is_resolved_like_getfullpath() -> None:
    target = node()
    odd = "c:/Program Files/Microsoft SQL Server/150/DTS/x/../Binn/./MasterSettings.config"
    assert windows_full_path(odd) == "c:\\Program Files\\Microsoft SQL Server\\150\\DTS\\Binn\\MasterSettings.config"
    assert run(target, op="read_file", path=odd)["path"] == target.config_path("master")


# --- also: -DeleteKey and Deny entries ---------------------------------------------------------------------------


def test_delete_key_keeps_a_key_another_store_copy_uses() -> None:
    target = node()
    run(target, op="copy_certificate", from_store="My", to_store="Root", thumbprint=OTHER.thumbprint)
    removed = run(target, op="remove_certificate", store="My", thumbprint=OTHER.thumbprint, delete_key=True)
    assert removed["key_deleted"] is False and removed["key_kept_for"] == "Root"
    kept = target.find_cert("Root", OTHER.thumbprint)
    assert kept is not None and kept.usable_key is not None  # the shared key file still exists
    alone = run(target, op="remove_certificate", store="Root", thumbprint=OTHER.thumbprint, delete_key=True)
    assert alone["key_deleted"] is True and alone["key_kept_for"] is None


def test_a_key_that_no_longer_opens_is_not_deleted_and_the_certificate_is_removed() -> None:
    """A copy whose key file is gone still says HasPrivateKey (the link stays); the agent asks for the key's
    deletion only when it opens, so the removal answers key_deleted false, as the lab does."""
    target = node()
    cert = target.find_cert("My", OTHER.thumbprint)
    assert cert is not None and cert.key is not None
    cert.key.deleted = True
    removed = run(target, op="remove_certificate", store="My", thumbprint=OTHER.thumbprint, delete_key=True)
    assert (removed["removed"], removed["had_key"], removed["key_deleted"]) == (True, True, False)
    assert target.find_cert("My", OTHER.thumbprint) is None


def test_a_deny_entry_makes_a_grant_fail_instead_of_pretending() -> None:
    target = node()
    cert = target.find_cert("Root", MASTER.thumbprint)
    assert cert is not None
    assert cert.key is not None
    cert.key.denied = ["NT Service\\SSISScaleOutWorker150"]
    with pytest.raises(ActionError, match="Deny entry"):
        run(target, op="grant_key_read", store="Root", thumbprint=MASTER.thumbprint, account="SSISScaleOutWorker150")
    assert cert.key.readers == ["NT AUTHORITY\\SYSTEM"]


def test_a_restored_certificate_needs_its_key_to_still_exist() -> None:
    target = node()
    removed = run(
        target,
        op="remove_certificate",
        store="My",
        thumbprint=OTHER.thumbprint,
        delete_key=True,
        backup_name="run1\\s002-x.cer",
    )
    assert removed["key_deleted"] is True
    with pytest.raises(ActionError, match="no longer exists"):
        run(
            target,
            op="restore_certificate",
            store="My",
            thumbprint=OTHER.thumbprint,
            had_key=True,
            backup_name="run1\\s002-x.cer",
            backup_sha256=removed["backup_sha256"],
        )


# --- finding 12: an unreadable key says why --------------------------------------------------------------------


def test_an_unreadable_private_key_is_an_agent_error_with_its_reason() -> None:
    from scaleguard.collectors.agent.convert import node_from_agent
    from scaleguard.collectors.agent.schema import AgentDocument

    target = node()
    key = (target.root or [])[0].key
    assert key is not None
    key.deleted = True  # the container is gone; the copy still links to it
    document = run(target, op="collect")
    entry = document["stores"]["Root"][0]
    assert entry["has_private_key"] is True and entry["key_readers"] is None and entry["key_file"] is None
    [error] = [e for e in document["errors"] if e["source"].startswith("stores/")]
    assert error == {
        "source": f"stores/Root/{MASTER.thumbprint}",
        "message": "private key not readable: Keyset does not exist",
    }
    snapshot = node_from_agent("MASTER01", AgentDocument.model_validate(document), insecure=False, duration_ms=1)
    assert any("Keyset does not exist" in d.message for d in snapshot.diagnostics)


def test_an_acl_the_lab_does_not_know_is_an_agent_error_as_an_unreadable_acl_is_on_windows() -> None:
    """Get-Acl answers or throws, and collect.ps1 records the throw: readers are never null in silence."""
    target = node()
    key = (target.root or [])[0].key
    assert key is not None
    key.readers = None  # the evidence did not export who may read this key
    document = run(target, op="collect")
    entry = document["stores"]["Root"][0]
    assert entry["key_file"] == key.file and entry["key_readers"] is None
    [error] = [e for e in document["errors"] if e["source"].startswith("stores/")]
    assert error == {
        "source": f"stores/Root/{MASTER.thumbprint}",
        "message": "key ACL not readable: the lab's evidence does not say",
    }


def test_schannel_values_the_lab_does_not_know_are_an_agent_error_as_on_windows() -> None:
    """collect.ps1 answers a SCHANNEL section whenever it can read the key (absent values are nulls in it);
    the section is null only after a throw it records, so the lab never answers null in silence either."""
    target = node()
    target.schannel = None  # the evidence has no schannel.json
    document = run(target, op="collect")
    assert document["schannel"] is None
    assert {"source": "schannel", "message": "the SCHANNEL values are not in the lab's evidence"} in document["errors"]


# --- finding 10: built-in service accounts are matched by SID ---------------------------------------------------


def test_builtin_accounts_are_one_account_whatever_the_spelling() -> None:
    target = node()
    request = {"store": "Root", "thumbprint": MASTER.thumbprint}
    assert run(target, op="grant_key_read", account="LocalSystem", **request)["already"] is True  # SYSTEM reads
    assert run(target, op="grant_key_read", account="NT AUTHORITY\\NetworkService", **request)["already"] is False
    assert run(target, op="grant_key_read", account="Network Service", **request)["already"] is True
    assert run(target, op="revoke_key_read", account="S-1-5-20", **request)["revoked"] is True


# --- batch and the cluster lease ---------------------------------------------------------------------------------


def test_a_refused_round_with_a_read_after_it_is_the_refusal_not_the_read() -> None:
    """actions.ps1's exit code comes back from a round that reads the node after it (transport.py reads
    $AgentExitCode from its runspace), so a refused batch is exit 1 with no read, as the lab answers."""
    target = node()
    request = {"op": "batch", "actions": [{"op": "lease_acquire"}], "collect": {"op": "collect"}}
    with pytest.raises(ActionError, match="a batch cannot hold"):
        run(target, **request)


def test_a_batch_stops_at_a_partial_change_and_carries_what_was_before() -> None:
    target = node()
    target.faults.stuck_services = [SERVICE]
    answer = run(
        target,
        op="batch",
        actions=[
            {"op": "stop_service", "name": SERVICE, "wait_s": 1},
            {"op": "start_service", "name": SERVICE, "wait_s": 1},
            {"op": "delete_schannel_value", "name": "ClientAuthTrustMode"},
        ],
    )
    first, second = answer["results"]  # the third never ran
    assert first == {"ok": True, "result": {"name": SERVICE, "was_running": True}}
    assert second["ok"] is False and second["partial"] is True
    assert second["result"] == {"name": SERVICE, "was_running": False}


def test_a_batch_takes_its_secret_from_the_round_never_from_an_action() -> None:
    target = node()
    data = base64.b64encode(pfx_for_server_2016(OTHER, b"pw")).decode()
    item = {"op": "import_pfx", "store": "Root", "thumbprint": OTHER.thumbprint, "pfx_b64": data}
    smuggled = run(target, op="batch", actions=[{**item, SECRET_KEY: "pw"}])
    assert smuggled["results"][0]["ok"] is False  # a key set inside the JSON is not the secret
    given = dispatch(target, {"op": "batch", "actions": [item], SECRET_KEY: "pw"})
    assert given["results"][0]["ok"] is True


def test_the_lease_is_held_by_one_run_at_a_time() -> None:
    target = node()
    first = {"run_id": "20261206T030000-abcd", "operator": "alice", "host": "admin01", "ttl_s": 600}
    second = {**first, "run_id": "20261206T030500-ef01", "operator": "bob"}
    assert run(target, op="lease_acquire", **first)["acquired"] is True
    refused = run(target, op="lease_acquire", **second)
    assert refused["acquired"] is False and refused["holder"]["run_id"] == first["run_id"]
    assert run(target, op="lease_renew", **first)["renewed"] is True
    with pytest.raises(ActionError, match="has not expired"):
        run(target, op="lease_break", holder=first["run_id"])
    assert run(target, op="lease_release", run_id=first["run_id"])["released"] is True
    assert run(target, op="lease_acquire", **second)["acquired"] is True


# --- set_config_setting: a runbook's settings edit, made on the node ---------------------------------------------

THUMB = "84A8A22B1690E523610203BC5DAB744BE12C1137"


def setting_request(**changes: Any) -> dict[str, Any]:
    return {"op": "set_config_setting", "role": "master", "setting": "SSLCertThumbprint", "value": THUMB,
            "backup_name": "20260101T000000-ab12\\s001-MasterSettings.config", **changes}


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_set_config_setting_changes_only_the_value_and_keeps_the_encoding(encoding: str, newline: str) -> None:
    target = node()
    text = settings_xml("MasterSettings", {"PortNumber": 8391, "SSLCertThumbprint": "old"}).replace("\n", newline)
    target.master_config = text.encode(encoding)
    result = dispatch(target, setting_request())
    assert target.master_config == text.replace(">old<", f">{THUMB}<").encode(encoding)
    assert result["changed"] and result["old_value"] == "old" and result["path"] == target.config_path("master")
    assert target.files[result["backup_path"]] == text.encode(encoding)
    assert result["backup_sha256"] == hashlib.sha256(text.encode(encoding)).hexdigest()
    again = dispatch(target, setting_request(backup_name="20260101T000000-ab12\\s002-MasterSettings.config"))
    assert again["changed"] is False and again["backup_path"] is None  # already the value: nothing written


def test_set_config_setting_runs_again_after_a_locked_file_but_never_overwrites_another_backup() -> None:
    """A runbook's backup name is fixed: the backup a run left when File.Replace met a locked file holds the
    bytes still there, so a second run keeps it and edits; a backup of other bytes is still refused."""
    target = node()
    text = settings_xml("MasterSettings", {"PortNumber": 8391, "SSLCertThumbprint": "old"}).encode()
    target.master_config = text
    target.faults.locked_files = [target.config_path("master")]
    with pytest.raises(ActionError, match="being used by another process"):
        dispatch(target, setting_request())
    assert target.master_config == text and list(target.files.values()) == [text]
    target.faults.locked_files = []
    result = dispatch(target, setting_request())
    assert result["changed"] is True and target.master_config == text.replace(b">old<", f">{THUMB}<".encode())
    assert target.files[result["backup_path"]] == text
    other = node()
    other.master_config = text
    other.files[result["backup_path"]] = b"earlier"
    with pytest.raises(ActionError, match="already exists"):
        dispatch(other, setting_request())
    assert other.master_config == text and other.files[result["backup_path"]] == b"earlier"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"<MasterSettings><PortNumber>8391</PortNumber></MasterSettings>", "no <SSLCertThumbprint> element"),
        (b"<M><SSLCertThumbprint>a</SSLCertThumbprint><SSLCertThumbprint>b</SSLCertThumbprint></M>", "more than once"),
        (b"<M><!-- <SSLCertThumbprint>x</SSLCertThumbprint> --><SSLCertThumbprint>b</SSLCertThumbprint></M>",
         "more than once"),
        (b"<M><SSLCertThumbprint><![CDATA[a]]></SSLCertThumbprint></M>", "not plain text"),
        (b'{"SSLCertThumbprint": "old"}', "no <SSLCertThumbprint> element"),
        (b"<M><SSLCertThumbprint>\xe9</SSLCertThumbprint></M>", "not UTF-8 or UTF-16"),
    ],
    ids=["missing", "twice", "in-a-comment-too", "cdata", "json", "not-utf8"],
)
def test_set_config_setting_refuses_what_it_cannot_edit_plainly(content: bytes, reason: str) -> None:
    target = node()
    target.master_config = content
    with pytest.raises(ActionError, match=re.escape(reason)):
        dispatch(target, setting_request())
    assert target.master_config == content and not target.files


@pytest.mark.parametrize(
    "changes",
    [{"role": "worker"}, {"setting": "PortNumber"}, {"value": "https://x:1; rm"}, {"value": THUMB.lower()},
     {"role": "admin"}],
    ids=["no-worker-file", "not-a-thumbprint-setting", "not-a-thumbprint", "lower-case", "unknown-role"],
)
def test_set_config_setting_refuses_a_request_outside_its_three_settings(changes: dict[str, Any]) -> None:
    target = node()
    before = target.master_config
    with pytest.raises(ActionError):
        dispatch(target, setting_request(**changes))
    assert target.master_config == before
