"""The lab's fix actions: each one changes a node completely or not at all, and says what was before."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from scaleguard.apply.transport import AGENT_OPS
from scaleguard.lab.certs import CertSpec, make_certificate, pfx_for_server_2016
from scaleguard.lab.dispatch import HANDLERS, dispatch
from scaleguard.lab.evidence import encode_text, settings_xml
from scaleguard.lab.state import SECRET_KEY, ActionError, LabBinding, LabCert, LabNode, LabService, PartialChangeError
from scaleguard.remediators.configedit import edit_setting

MASTER_CERT = make_certificate(CertSpec(("MASTER01",), key_seed=41))
OTHER_CERT = make_certificate(CertSpec(("OTHER",), key_seed=42))
BACKUP = "C:\\ProgramData\\scaleguard\\backup\\run1\\s001-MasterSettings.config"


def node() -> LabNode:
    config = encode_text(
        settings_xml("MasterSettings", {"PortNumber": 8391, "SSLCertThumbprint": "old"}), "utf-16-le"
    )
    target = LabNode(
        name="MASTER01",
        cluster="C",
        master_config=config,
        root=[LabCert(MASTER_CERT.der)],
        my=[LabCert(OTHER_CERT.der)],
        bindings=[
            LabBinding("0.0.0.0:8391", MASTER_CERT.thumbprint, "{11111111-1111-1111-1111-111111111111}", None)
        ],
        services=[
            LabService("SSISScaleOutMaster150", "Running", "Auto", "NT Service\\SSISScaleOutMaster150")
        ],
    )
    for cert in [*(target.root or []), *(target.my or [])]:
        cert.key = target.new_key(cert.thumbprint, "capi", ["NT AUTHORITY\\SYSTEM"])
    return target


def run(target: LabNode, **request: Any) -> dict[str, Any]:
    return dispatch(target, request)


def write_request(target: LabNode, value: str, **extra: Any) -> dict[str, Any]:
    path = target.config_path("master")
    current = target.master_config or b""
    return {
        "op": "write_config",
        "path": path,
        "setting": "SSLCertThumbprint",
        "value": value,
        "content_b64": base64.b64encode(edit_setting(current, "SSLCertThumbprint", value).content).decode(),
        "expected_sha256": hashlib.sha256(current).hexdigest(),
        "backup_name": "run1\\s001-MasterSettings.config",
        **extra,
    }


def test_every_plan_action_has_a_lab_handler() -> None:
    assert set(AGENT_OPS) <= set(HANDLERS)


def test_config_is_written_only_after_a_backup_and_only_as_read() -> None:
    target = node()
    before = target.master_config
    result = dispatch(target, write_request(target, "A" * 40))
    assert target.files[BACKUP] == before
    assert result["backup_path"] == BACKUP and result["changed"] is True
    assert target.master_config == edit_setting(before or b"", "SSLCertThumbprint", "A" * 40).content
    assert target.journal[-1]["op"] == "write_config"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"expected_sha256": "0" * 64}, "changed since it was read"),
        ({"path": "C:\\Windows\\win.ini"}, "only MasterSettings.config"),
        ({"path": "\\\\attacker\\share\\150\\DTS\\Binn\\MasterSettings.config"}, "local drive path"),
        ({"content_b64": "not base64!"}, "content_b64"),
        ({"backup_name": "..\\..\\Windows\\evil"}, "backup_name"),
    ],
)
def test_config_writes_that_are_refused_change_nothing(change: dict[str, Any], message: str) -> None:
    target = node()
    before = target.master_config
    with pytest.raises(ActionError, match=message):
        dispatch(target, {**write_request(target, "A" * 40), **change})
    assert target.master_config == before and not target.files


def test_an_existing_backup_is_never_overwritten() -> None:
    target = node()
    target.files[BACKUP] = b"earlier"
    with pytest.raises(ActionError, match="already exists"):
        dispatch(target, write_request(target, "A" * 40))
    assert target.files[BACKUP] == b"earlier"


def test_restore_puts_the_backup_back_unless_someone_else_changed_the_file() -> None:
    target = node()
    original = target.master_config
    written = dispatch(target, write_request(target, "A" * 40))
    path = target.config_path("master")
    assert run(target, op="restore_file", path=path, backup_name="run1\\nothing") == {
        "path": path,
        "restored": False,
        "reason": "no backup (the file was never written)",
    }
    target.master_config = b"<MasterSettings>hand edited</MasterSettings>"
    with pytest.raises(ActionError, match="changed by someone else"):
        run(
            target,
            op="restore_file",
            path=path,
            backup_name="run1\\s001-MasterSettings.config",
            backup_sha256=written["backup_sha256"],
            expected_sha256=written["after_sha256"],
        )
    target.master_config = edit_setting(original or b"", "SSLCertThumbprint", "A" * 40).content
    restored = run(
        target,
        op="restore_file",
        path=path,
        backup_name="run1\\s001-MasterSettings.config",
        backup_sha256=written["backup_sha256"],
        expected_sha256=written["after_sha256"],
    )
    assert restored["restored"] is True and target.master_config == original


def test_created_certificate_has_the_requested_names_and_a_key_only_admins_read() -> None:
    target = node()
    result = run(
        target,
        op="create_certificate",
        store="Root",
        common_names=["master01.contoso.test", "10.0.1.1"],
        san_dns=["master01.contoso.test"],
        san_ip=["10.0.1.1"],
        key_bits=2048,
        hash="sha256",
        valid_days=730,
        friendly_name="SSIS Scale Out Master",
    )
    cert = x509.load_der_x509_certificate(base64.b64decode(result["der_b64"]))
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
        "master01.contoso.test",
        "10.0.1.1",
    ]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["master01.contoso.test"]
    assert result["thumbprint"] == hashlib.sha1(base64.b64decode(result["der_b64"])).hexdigest().upper()
    created = target.find_cert("Root", result["thumbprint"])
    assert created is not None and created.has_private_key
    assert created.key is not None
    assert created.key.readers == ["NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"common_names": ['a"; rm -rf /']}, "host name"),
        ({"key_bits": 1024}, "refusing"),
        ({"hash": "md5"}, "refusing"),
        ({"store": None}, "must be Root or My"),
        ({"key_bits": None}, "needs 'key_bits'"),
        ({"hash": None}, "needs 'hash'"),
        ({"valid_days": None}, "needs 'valid_days'"),
        ({"friendly_name": None}, "friendly_name"),
        ({"friendly_name": "x'; calc"}, "friendly_name"),
    ],
)
def test_certificate_requests_are_validated(change: dict[str, Any], message: str) -> None:
    target = node()
    request = {
        "op": "create_certificate",
        "store": "My",
        "common_names": ["W1"],
        "key_bits": 2048,
        "hash": "sha256",
        "valid_days": 30,
        "friendly_name": "SSIS Scale Out Worker",
        **change,
    }
    with pytest.raises(ActionError, match=message):
        dispatch(target, request)
    assert len(target.my or []) == 1


def test_import_checks_the_thumbprint_and_reports_a_certificate_already_there() -> None:
    target = node()
    der = base64.b64encode(OTHER_CERT.der).decode()
    with pytest.raises(ActionError, match="not"):
        run(target, op="import_certificate", store="Root", der_b64=der, thumbprint="A" * 40)
    first = run(target, op="import_certificate", store="Root", der_b64=der, thumbprint=OTHER_CERT.thumbprint)
    second = run(target, op="import_certificate", store="Root", der_b64=der, thumbprint=OTHER_CERT.thumbprint)
    assert (first["already_present"], second["already_present"]) == (False, True)
    imported = target.find_cert("Root", OTHER_CERT.thumbprint)
    assert imported is not None and not imported.has_private_key  # only the public part travels


def test_copy_keeps_the_key_link() -> None:
    target = node()
    run(target, op="copy_certificate", from_store="My", to_store="Root", thumbprint=OTHER_CERT.thumbprint)
    copied = target.find_cert("Root", OTHER_CERT.thumbprint)
    assert copied is not None and copied.has_private_key


def test_removed_certificate_is_restored_with_its_key_from_the_backup() -> None:
    target = node()
    removed = run(
        target,
        op="remove_certificate",
        store="My",
        thumbprint=OTHER_CERT.thumbprint,
        backup_name="run1\\s007-x.cer",
    )
    assert removed["removed"] and removed["had_key"] and not removed["key_deleted"]
    assert target.find_cert("My", OTHER_CERT.thumbprint) is None
    restored = run(
        target,
        op="restore_certificate",
        store="My",
        thumbprint=OTHER_CERT.thumbprint,
        backup_name="run1\\s007-x.cer",
        backup_sha256=removed["backup_sha256"],
        had_key=True,
    )
    back = target.find_cert("My", OTHER_CERT.thumbprint)
    assert restored["already_present"] is False and back is not None and back.has_private_key
    assert run(target, op="remove_certificate", store="My", thumbprint="B" * 40)["removed"] is False


def test_binding_needs_the_certificate_with_its_key_in_the_named_store() -> None:
    target = node()
    with pytest.raises(ActionError, match="binding not changed"):
        run(
            target,
            op="set_binding",
            ip_port="0.0.0.0:8391",
            cert_hash=OTHER_CERT.thumbprint,
            cert_store="Root",
            app_id="{22222222-2222-2222-2222-222222222222}",
        )
    assert target.bindings is not None and target.bindings[0].cert_hash == MASTER_CERT.thumbprint
    result = run(
        target,
        op="set_binding",
        ip_port="0.0.0.0:8391",
        cert_hash=MASTER_CERT.thumbprint.lower(),
        cert_store="Root",
        app_id="{11111111-1111-1111-1111-111111111111}",
    )
    assert result["previous"] == {
        "ip_port": "0.0.0.0:8391",
        "cert_hash": MASTER_CERT.thumbprint,
        "app_id": "{11111111-1111-1111-1111-111111111111}",
        "cert_store": None,
    }
    assert [(b.ip_port, b.store) for b in target.bindings] == [("0.0.0.0:8391", "Root")]
    deleted = run(target, op="delete_binding", ip_port="0.0.0.0:8391")
    assert deleted["previous"]["cert_store"] == "Root" and target.bindings == []


def test_key_read_is_granted_once_and_revoked() -> None:
    target = node()
    request = {
        "store": "Root",
        "thumbprint": MASTER_CERT.thumbprint,
        "account": "NT Service\\SSISScaleOutWorker150",
    }
    assert run(target, op="grant_key_read", **request)["already"] is False
    assert (
        run(target, op="grant_key_read", **{**request, "account": "SSISScaleOutWorker150"})["already"] is True
    )
    assert run(target, op="revoke_key_read", **request)["revoked"] is True
    cert = target.find_cert("Root", MASTER_CERT.thumbprint)
    assert cert is not None and cert.key is not None and cert.key.readers == ["NT AUTHORITY\\SYSTEM"]


def test_services_behave_like_the_service_control_manager() -> None:
    target = node()
    name = "SSISScaleOutMaster150"
    assert run(target, op="set_service_start_mode", name=name, mode="Disabled") == {
        "name": name,
        "previous": "Auto",
        "mode": "Disabled",
    }
    assert run(target, op="stop_service", name=name, wait_s=5)["was_running"] is True
    assert run(target, op="restart_service", name=name, wait_s=5) == {
        "name": name,
        "restarted": False,
        "state": "Stopped",
    }
    with pytest.raises(ActionError, match="Cannot start service") as refused:
        run(target, op="start_service", name=name, wait_s=5)
    assert not isinstance(refused.value, PartialChangeError)  # nothing was changed
    run(target, op="set_service_start_mode", name=name, mode="Automatic")
    assert run(target, op="start_service", name=name, wait_s=5)["was_running"] is False
    assert run(target, op="restart_service", name=name, wait_s=5)["restarted"] is True
    with pytest.raises(ActionError, match="Cannot find any service"):
        run(target, op="start_service", name="Spooler", wait_s=5)
    with pytest.raises(ActionError, match="wait_s"):
        run(target, op="start_service", name=name)


def test_injected_failures_change_nothing_and_run_out() -> None:
    target = node()
    target.faults.fail_ops = {"set_binding": 1}
    request = {
        "op": "set_binding",
        "ip_port": "0.0.0.0:8391",
        "cert_hash": MASTER_CERT.thumbprint,
        "cert_store": "Root",
        "app_id": "{11111111-1111-1111-1111-111111111111}",
    }
    with pytest.raises(ActionError, match="injected"):
        dispatch(target, request)
    assert target.bindings is not None and target.bindings[0].store is None and not target.journal
    dispatch(target, request)
    assert target.bindings[0].store == "Root" and target.faults.fail_ops == {"set_binding": 0}


def test_the_journal_never_holds_a_pfx_or_its_password() -> None:
    target = node()
    data = pfx_for_server_2016(OTHER_CERT, b"pw")
    run(
        target,
        op="import_pfx",
        store="Root",
        thumbprint=OTHER_CERT.thumbprint,
        pfx_b64=base64.b64encode(data).decode(),
        **{SECRET_KEY: "pw"},
    )
    logged = json.dumps(target.journal)
    assert '"pw"' not in logged and base64.b64encode(data).decode()[:40] not in logged
    imported = target.find_cert("Root", OTHER_CERT.thumbprint)
    assert imported is not None and imported.has_private_key


def test_schannel_values_are_set_and_deleted_reporting_what_was_there() -> None:
    target = node()
    assert target.schannel is not None and target.schannel.client_auth_trust_mode is None
    assert run(target, op="set_schannel_value", name="ClientAuthTrustMode", value=2) == {
        "name": "ClientAuthTrustMode",
        "value": 2,
        "previous": None,
        "existed": False,
    }
    assert target.schannel.client_auth_trust_mode == 2 and target.schannel.send_trusted_issuer_list is None
    assert run(target, op="set_schannel_value", name="ClientAuthTrustMode", value=1)["previous"] == 2
    assert run(target, op="delete_schannel_value", name="ClientAuthTrustMode") == {
        "name": "ClientAuthTrustMode",
        "previous": 1,
        "existed": True,
    }
    assert target.schannel.client_auth_trust_mode is None
    assert run(target, op="delete_schannel_value", name="ClientAuthTrustMode")["existed"] is False
    assert run(target, op="set_schannel_value", name="SendTrustedIssuerList", value=0)["previous"] is None
    assert target.schannel.send_trusted_issuer_list == 0


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"name": "EnabledProtocols", "value": 2}, "must be ClientAuthTrustMode or SendTrustedIssuerList"),
        ({"name": "clientauthtrustmode", "value": 2}, "must be ClientAuthTrustMode or SendTrustedIssuerList"),
        ({"name": "ClientAuthTrustMode", "value": "2"}, "REG_DWORD number"),
        ({"name": "ClientAuthTrustMode", "value": True}, "REG_DWORD number"),
        ({"name": "ClientAuthTrustMode", "value": -1}, "REG_DWORD number"),
        ({"name": "ClientAuthTrustMode", "value": 2**31}, "REG_DWORD number"),
    ],
)
def test_schannel_requests_are_validated_and_change_nothing(request_: dict[str, Any], message: str) -> None:
    target = node()
    with pytest.raises(ActionError, match=message):
        run(target, op="set_schannel_value", **request_)
    assert target.schannel is not None
    assert (target.schannel.client_auth_trust_mode, target.schannel.send_trusted_issuer_list) == (None, None)
    assert not target.journal


def test_unreadable_schannel_key_is_refused() -> None:
    target = node()
    target.schannel = None
    with pytest.raises(ActionError, match="cannot be read"):
        run(target, op="set_schannel_value", name="ClientAuthTrustMode", value=2)
    assert target.schannel is None
