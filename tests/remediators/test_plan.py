"""Pure planning: a finding and a snapshot in, the exact ordered steps out (ordering rules: docs/architecture.md)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from fixcases import FIXED_GUID, finding, findings_file, options

from scaleguard.findings.model import Status
from scaleguard.lab.certs import CertSpec, make_certificate
from scaleguard.remediators import MasterPfx, PlanRefused, plan
from scaleguard.remediators.describe import describe
from scaleguard.remediators.model import Plan, SecretRef, Step, StepRef
from scaleguard.remediators.pfx import load_master_pfx

APP_ID = "{a1f96506-93e0-4c91-9171-05a2f6739e13}"  # what the evidence writer puts on the master binding
MASTER_SERVICE = "SSISScaleOutMaster150"
WORKER_SERVICE = "SSISScaleOutWorker150"
WORKER_ACCOUNT = "NT Service\\SSISScaleOutWorker150"
EXPIRING = {"cn": ["master01.contoso.test", "MASTER01", "10.0.1.1"], "days_from": -700, "days": 710}


def ref(step: str, field: str = "thumbprint") -> StepRef:
    return StepRef(from_step=step, field=field)  # type: ignore[arg-type]


def params(step: Step) -> dict[str, Any]:
    """The parameters that run (``expect`` is what the planner saw, checked separately)."""
    return {
        name: value
        for name in type(step.params).model_fields
        if name != "expect" and (value := getattr(step.params, name)) is not None
    }


def rows(the_plan: Plan) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    return [(s.id, s.unit, s.node, s.action, params(s)) for s in the_plan.steps]


def outcome(the_plan: Plan, key: str) -> tuple[str, str | None]:
    found = next(d for d in the_plan.dispositions if d.finding == key)
    return found.outcome, found.unit


# --- repair-master-binding ------------------------------------------------------------------------------


def test_binding_from_my_is_rebound_from_root_keeping_the_appid(cluster: Any) -> None:
    c = cluster({"nodes": {"MASTER01": {"bindings": [{"ip_port": "0.0.0.0:8391", "cert": "master", "store": None}]}}})
    result = plan(findings_file(finding("SO-M06", "MASTER01", "repair-master-binding")), c.snapshot, options())
    master = c.thumb("master")
    assert rows(result) == [
        (
            "s001",
            "u01",
            "MASTER01",
            "set_binding",
            {"ip_port": "0.0.0.0:8391", "cert_hash": master, "cert_store": "Root", "app_id": APP_ID},
        ),
        ("s002", "u01", "MASTER01", "restart_service", {"role": "master", "name": MASTER_SERVICE}),
    ]
    assert describe(result.steps[0]).command == (
        "netsh http delete sslcert ipport=0.0.0.0:8391 ; netsh http add sslcert ipport=0.0.0.0:8391 "
        f"certhash={master} certstorename=Root appid={APP_ID}"
    )
    assert "(null) = MY" in describe(result.steps[0]).before and "store Root" in describe(result.steps[0]).after
    assert outcome(result, "SO-M06@CLUSTER/MASTER01") == ("planned", "u01")


def test_missing_binding_gets_a_new_appid_only_then(cluster: Any) -> None:
    c = cluster({"nodes": {"MASTER01": {"bindings": []}}})
    result = plan(findings_file(finding("SO-M04", "MASTER01", "repair-master-binding")), c.snapshot, options())
    assert rows(result)[0][3:] == (
        "set_binding",
        {
            "ip_port": "0.0.0.0:8391",
            "cert_hash": c.thumb("master"),
            "cert_store": "Root",
            "app_id": FIXED_GUID,
        },
    )
    assert describe(result.steps[0]).command.startswith("netsh http add sslcert ipport=0.0.0.0:8391")


def test_binding_is_not_pointed_at_a_certificate_missing_from_root(cluster: Any) -> None:
    c = cluster({"nodes": {"MASTER01": {"root_remove": ["master"]}}})
    result = plan(findings_file(finding("SO-M05", "MASTER01", "repair-master-binding")), c.snapshot, options())
    assert result.empty
    assert [(m.policy, m.node) for m in result.manual] == [("SO-M05", "MASTER01")]
    assert "not in the master's LocalMachine\\Root" in result.manual[0].reason


# --- rotate-master-certificate ----------------------------------------------------------------------------


def test_master_rotation_trusts_everywhere_before_switching(cluster: Any) -> None:
    c = cluster({"workers": ["WORKER01", "WORKER02"], "certs": {"master": EXPIRING}})
    result = plan(findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")), c.snapshot, options())
    names = ["master01.contoso.test", "MASTER01", "10.0.1.1"]
    assert rows(result) == [
        (
            "s001",
            "u01",
            "MASTER01",
            "create_certificate",
            {
                "store": "Root",
                "common_names": names,
                "san_dns": names[:2],
                "san_ip": ["10.0.1.1"],
                "key_bits": 2048,
                "hash": "sha256",
                "valid_days": 730,
                "friendly_name": "SSIS Scale Out Master",
            },
        ),
        (
            "s002",
            "u01",
            "WORKER01",
            "import_certificate",
            {"store": "Root", "thumbprint": ref("s001"), "der_b64": ref("s001", "der_b64")},
        ),
        (
            "s003",
            "u01",
            "WORKER02",
            "import_certificate",
            {"store": "Root", "thumbprint": ref("s001"), "der_b64": ref("s001", "der_b64")},
        ),
        (
            "s004",
            "u01",
            "MASTER01",
            "set_binding",
            {"ip_port": "0.0.0.0:8391", "cert_hash": ref("s001"), "cert_store": "Root", "app_id": APP_ID},
        ),
        (
            "s005",
            "u01",
            "MASTER01",
            "write_config",
            {
                "config": "master",
                "setting": "SSLCertThumbprint",
                "value": ref("s001"),
            },
        ),
        ("s006", "u01", "MASTER01", "restart_service", {"role": "master", "name": MASTER_SERVICE}),
        (
            "s007",
            "u01",
            "WORKER01",
            "write_config",
            {
                "config": "worker",
                "setting": "MasterHttpsCertThumbprint",
                "value": ref("s001"),
            },
        ),
        ("s008", "u01", "WORKER01", "restart_service", {"role": "worker", "name": WORKER_SERVICE}),
        (
            "s009",
            "u01",
            "WORKER02",
            "write_config",
            {
                "config": "worker",
                "setting": "MasterHttpsCertThumbprint",
                "value": ref("s001"),
            },
        ),
        ("s010", "u01", "WORKER02", "restart_service", {"role": "worker", "name": WORKER_SERVICE}),
    ]
    by_id = {s.id: s for s in result.steps}
    assert by_id["s004"].depends_on == ["s002", "s003"]  # bound only once every worker trusts it
    assert by_id["s007"].depends_on == ["s006", "s001"]  # re-pinned only after the master restarted
    assert describe(by_id["s001"]).command == (
        'MakeCert.exe -n "CN=master01.contoso.test;CN=MASTER01;CN=10.0.1.1" '
        "SSISScaleOutMaster.cer -r -ss Root -sr LocalMachine -a sha256 -len 2048 "
        "-sky exchange"
    )
    assert describe(by_id["s005"]).before == f"SSLCertThumbprint = '{c.thumb('master')}'"
    assert describe(by_id["s005"]).after == "SSLCertThumbprint = <thumbprint of s001>"


def test_rotation_carries_every_endpoint_host_and_honours_master_hash(cluster: Any) -> None:
    c = cluster(
        {
            "workers": ["WORKER01", "WORKER02"],
            "certs": {"master": {"cn": ["MASTER01"], "san_dns": ["ssis.contoso.test"]}},
            "nodes": {"WORKER02": {"worker_settings": {"MasterEndpoint": "https://ssis.contoso.test:8391"}}},
        }
    )
    result = plan(
        findings_file(finding("SO-M08", "MASTER01", "rotate-master-certificate")),
        c.snapshot,
        options(master_hash="sha1"),
    )
    create = params(result.steps[0])
    assert create["common_names"] == ["master01.contoso.test", "ssis.contoso.test", "MASTER01", "10.0.1.1"]
    assert create["hash"] == "sha1" and "-a sha1" in describe(result.steps[0]).command


def test_rotation_subsumes_the_fixes_it_implies(cluster: Any) -> None:
    c = cluster(
        {
            "certs": {"master": EXPIRING},
            "nodes": {
                "MASTER01": {
                    "master_settings": {"SSLCertThumbprint": "{master|spaced}"},
                    "bindings": [{"ip_port": "0.0.0.0:8391", "cert": "master", "store": None}],
                },
                "WORKER01": {"root_remove": ["master"]},
            },
        }
    )
    result = plan(
        findings_file(
            finding("SO-M07", "MASTER01", "rotate-master-certificate"),
            finding("SO-M01", "MASTER01", "normalize-config-thumbprint"),
            finding("SO-M06", "MASTER01", "repair-master-binding"),
            finding("SO-W02", "WORKER01", "repin-worker-master-thumbprint"),
            finding("SO-W03", "WORKER01", "import-root-certificate"),
        ),
        c.snapshot,
        options(),
    )
    assert [u.remediation for u in result.units] == ["rotate-master-certificate"]
    assert [s.action for s in result.steps].count("set_binding") == 1
    for key in (
        "SO-M01@CLUSTER/MASTER01",
        "SO-M06@CLUSTER/MASTER01",
        "SO-W02@CLUSTER/WORKER01",
        "SO-W03@CLUSTER/WORKER01",
    ):
        assert outcome(result, key) == ("covered", "u01"), key
    assert outcome(result, "SO-M07@CLUSTER/MASTER01") == ("planned", "u01")


def test_ha_pair_rotation_needs_an_enterprise_pfx(cluster: Any) -> None:
    c = cluster({"masters": ["MASTER01", "MASTER02"]})
    result = plan(findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")), c.snapshot, options())
    assert result.empty and "--master-pfx" in result.manual[0].reason


def _pfx(tmp_path: Any, names: tuple[str, ...]) -> MasterPfx:
    issued = make_certificate(CertSpec(common_names=names[:1], san_dns=names[1:], key_seed=77))
    data = pkcs12.serialize_key_and_certificates(
        b"m",
        issued.key,
        issued.certificate,
        None,  # type: ignore[arg-type]
        BestAvailableEncryption(b"s3cret"),
    )
    path = tmp_path / "master.pfx"
    path.write_bytes(data)
    return load_master_pfx(path, "s3cret", SecretRef(secret_env="PFX_PASSWORD"))


def test_ha_pair_rotation_with_a_pfx_imports_it_on_every_master(cluster: Any, tmp_path: Any) -> None:
    c = cluster({"masters": ["MASTER01", "MASTER02"]})
    pfx = _pfx(tmp_path, ("ssis-master.contoso.test", "MASTER01", "MASTER02"))
    result = plan(
        findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")),
        c.snapshot,
        options(master_pfx=pfx),
    )
    actions = [(s.node, s.action) for s in result.steps]
    assert actions == [
        ("MASTER01", "import_pfx"),
        ("MASTER02", "import_pfx"),
        ("WORKER01", "import_certificate"),
        ("MASTER01", "set_binding"),
        ("MASTER01", "write_config"),
        ("MASTER01", "restart_service"),
        ("MASTER02", "set_binding"),
        ("MASTER02", "write_config"),
        ("MASTER02", "restart_service"),
        ("WORKER01", "write_config"),
        ("WORKER01", "restart_service"),
    ]
    first = params(result.steps[0])
    assert first["password"] == SecretRef(secret_env="PFX_PASSWORD")  # a reference, never the password
    assert first["thumbprint"] == pfx.thumbprint
    assert "s3cret" not in result.to_json()
    assert params(result.steps[2])["der_b64"] == pfx.der_b64  # only the public part goes to workers
    assert any("not self-signed" in w for w in result.warnings) is False


def test_pfx_without_a_name_workers_use_is_refused(cluster: Any, tmp_path: Any) -> None:
    c = cluster()
    pfx = _pfx(tmp_path, ("other.contoso.test",))
    result = plan(
        findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")),
        c.snapshot,
        options(master_pfx=pfx),
    )
    assert result.empty and "master01.contoso.test" in result.manual[0].reason


# --- rotate-worker-certificate ------------------------------------------------------------------------------


def test_worker_rotation_is_trusted_by_every_master_before_the_switch(cluster: Any) -> None:
    c = cluster(
        {
            "masters": ["MASTER01", "MASTER02"],
            "certs": {
                "stale": {
                    "cn": ["WORKER01"],
                    "san_dns": ["worker01.contoso.test"],
                    "san_ip": ["10.0.2.1"],
                    "days_from": -900,
                    "days": 100,
                }
            },
            "nodes": {"WORKER01": {"my_add": ["stale"]}},
        }
    )
    result = plan(findings_file(finding("SO-W10", "WORKER01", "rotate-worker-certificate")), c.snapshot, options())
    old, stale = c.thumb("WORKER01"), c.thumb("stale")
    assert rows(result) == [
        (
            "s001",
            "u01",
            "WORKER01",
            "create_certificate",
            {
                "store": "My",
                "common_names": ["WORKER01", "10.0.2.1"],
                "san_dns": ["WORKER01"],
                "san_ip": ["10.0.2.1"],
                "key_bits": 2048,
                "hash": "sha256",
                "valid_days": 730,
                "friendly_name": "SSIS Scale Out Worker",
            },
        ),
        (
            "s002",
            "u01",
            "WORKER01",
            "import_certificate",
            {"store": "Root", "thumbprint": ref("s001"), "der_b64": ref("s001", "der_b64")},
        ),
        (
            "s003",
            "u01",
            "MASTER01",
            "import_certificate",
            {"store": "Root", "thumbprint": ref("s001"), "der_b64": ref("s001", "der_b64")},
        ),
        (
            "s004",
            "u01",
            "MASTER02",
            "import_certificate",
            {"store": "Root", "thumbprint": ref("s001"), "der_b64": ref("s001", "der_b64")},
        ),
        (
            "s005",
            "u01",
            "WORKER01",
            "grant_key_read",
            {"store": "My", "thumbprint": ref("s001"), "account": WORKER_ACCOUNT},
        ),
        (
            "s006",
            "u01",
            "WORKER01",
            "write_config",
            {
                "config": "worker",
                "setting": "WorkerHttpsCertThumbprint",
                "value": ref("s001"),
            },
        ),
        ("s007", "u01", "WORKER01", "restart_service", {"role": "worker", "name": WORKER_SERVICE}),
        ("s008", "u01", "WORKER01", "remove_certificate", {"store": "My", "thumbprint": min(old, stale)}),
        ("s009", "u01", "WORKER01", "remove_certificate", {"store": "My", "thumbprint": max(old, stale)}),
    ]
    assert result.steps[5].depends_on == ["s003", "s004"]
    assert describe(result.steps[0]).command.startswith(
        'MakeCert.exe -n "CN=WORKER01;CN=10.0.2.1" SSISScaleOutWorker.cer -r -ss My -sr LocalMachine'
    )
    assert describe(result.steps[4]).command == (
        f"winhttpcertcfg.exe -g -c LOCAL_MACHINE\\My -s <subject of the certificate s001 creates> -a {WORKER_ACCOUNT}"
    )
    assert describe(result.steps[7]).command == f"certmgr.exe /del /c /sha1 {min(old, stale)} /s /r localmachine My"


def test_worker_rotation_covers_grant_and_stale_findings(cluster: Any) -> None:
    c = cluster({"nodes": {"WORKER01": {"key_readers": {"WORKER01": ["NT AUTHORITY\\SYSTEM"]}}}})
    result = plan(
        findings_file(
            finding("SO-W10", "WORKER01", "rotate-worker-certificate"),
            finding("SO-W09", "WORKER01", "grant-worker-key-access"),
            finding("SO-W13", "WORKER01", "remove-stale-worker-certificates"),
            finding("SO-W08", "WORKER01", "import-root-certificate"),
        ),
        c.snapshot,
        options(),
    )
    assert [u.remediation for u in result.units] == ["rotate-worker-certificate"]
    for policy in ("SO-W09", "SO-W13", "SO-W08"):
        assert outcome(result, f"{policy}@CLUSTER/WORKER01") == ("covered", "u01")


# --- import-root-certificate -----------------------------------------------------------------------------


def test_each_missing_root_certificate_is_imported_where_the_policy_says(cluster: Any) -> None:
    c = cluster(
        {
            "workers": ["WORKER01", "WORKER02"],
            "nodes": {
                "WORKER01": {"root_remove": ["master", "WORKER01"]},
                "MASTER01": {"root_remove": ["WORKER02"]},
            },
        }
    )
    result = plan(
        findings_file(
            finding("SO-W03", "WORKER01", "import-root-certificate"),
            finding("SO-W07", "WORKER01", "import-root-certificate"),
            finding("SO-W08", "WORKER02", "import-root-certificate"),
        ),
        c.snapshot,
        options(),
    )
    assert rows(result) == [
        (
            "s001",
            "u01",
            "WORKER01",
            "import_certificate",
            {"store": "Root", "thumbprint": c.thumb("master"), "der_b64": c.der_b64("master")},
        ),
        (
            "s002",
            "u01",
            "WORKER01",
            "import_certificate",
            {"store": "Root", "thumbprint": c.thumb("WORKER01"), "der_b64": c.der_b64("WORKER01")},
        ),
        ("s003", "u01", "WORKER01", "restart_service", {"role": "worker", "name": WORKER_SERVICE}),
        (
            "s004",
            "u02",
            "MASTER01",
            "import_certificate",
            {"store": "Root", "thumbprint": c.thumb("WORKER02"), "der_b64": c.der_b64("WORKER02")},
        ),
        ("s005", "u02", "WORKER02", "restart_service", {"role": "worker", "name": WORKER_SERVICE}),
    ]
    assert describe(result.steps[0]).command == f"certutil -addstore Root {c.thumb('master')}.cer"


@pytest.mark.parametrize(
    ("policy", "nodes", "where"),
    [
        ("SO-W08", {"MASTER01": {"root_remove": ["WORKER01"]}}, "MASTER01's LocalMachine\\Root"),
        ("SO-W07", {"WORKER01": {"root_remove": ["WORKER01"]}}, "WORKER01's LocalMachine\\Root"),
    ],
)
def test_a_worker_certificate_that_is_a_ca_is_never_planned_into_a_root(
    cluster: Any, policy: str, nodes: dict[str, Any], where: str
) -> None:
    c = cluster({"certs": {"WORKER01": {"cn": ["WORKER01"], "ca": True}}, "nodes": nodes})
    assert (policy, "WORKER01") in c.failing()
    result = plan(findings_file(finding(policy, "WORKER01", "import-root-certificate")), c.snapshot, options())
    assert result.empty
    assert [(m.policy, m.node) for m in result.manual] == [(policy, "WORKER01")]
    reason = result.manual[0].reason
    assert f"{c.thumb('WORKER01')} is a CA (basicConstraints CA:TRUE, key usage keyCertSign)" in reason
    assert f"never puts a CA into {where}" in reason


# --- normalize-config-thumbprint ---------------------------------------------------------------------------


def test_thumbprint_with_invisible_mark_is_rewritten_clean(cluster: Any) -> None:
    c = cluster(
        {
            "nodes": {
                "MASTER01": {"master_settings": {"SSLCertThumbprint": "{master|lrm}"}},
                "WORKER01": {"worker_settings": {"MasterHttpsCertThumbprint": "{master|spaced}"}},
            }
        }
    )
    result = plan(
        findings_file(
            finding("SO-M01", "MASTER01", "normalize-config-thumbprint"),
            finding("SO-W01", "WORKER01", "normalize-config-thumbprint"),
        ),
        c.snapshot,
        options(),
    )
    master = c.thumb("master")
    assert rows(result) == [
        (
            "s001",
            "u01",
            "MASTER01",
            "write_config",
            {
                "config": "master",
                "setting": "SSLCertThumbprint",
                "value": master,
            },
        ),
        ("s002", "u01", "MASTER01", "restart_service", {"role": "master", "name": MASTER_SERVICE}),
        (
            "s003",
            "u02",
            "WORKER01",
            "write_config",
            {
                "config": "worker",
                "setting": "MasterHttpsCertThumbprint",
                "value": master,
            },
        ),
        ("s004", "u02", "WORKER01", "restart_service", {"role": "worker", "name": WORKER_SERVICE}),
    ]
    # the invisible mark made visible
    assert describe(result.steps[0]).before == f"SSLCertThumbprint = '\\u200e{master}'"


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"SSLCertThumbprint": "not a thumbprint"}, "is not a thumbprint"),
        ({"PortNumber": "70000"}, "PortNumber"),
    ],
)
def test_what_normalizing_cannot_fix_is_manual(cluster: Any, settings: dict[str, str], reason: str) -> None:
    c = cluster({"nodes": {"MASTER01": {"master_settings": settings}}})
    result = plan(findings_file(finding("SO-M01", "MASTER01", "normalize-config-thumbprint")), c.snapshot, options())
    assert result.empty and reason in result.manual[0].reason


def test_so_w01_endpoint_with_a_path_is_fixed_in_the_same_unit(cluster: Any) -> None:
    c = cluster(
        {
            "nodes": {
                "WORKER01": {
                    "worker_settings": {"MasterEndpoint": "https://master01.contoso.test:8391/ClusterManagement/"}
                }
            }
        }
    )
    result = plan(findings_file(finding("SO-W01", "WORKER01", "normalize-config-thumbprint")), c.snapshot, options())
    assert rows(result) == [
        (
            "s001",
            "u01",
            "WORKER01",
            "set_master_endpoint",
            {"host": "master01.contoso.test", "port": 8391, "trailing_slash": False},
        ),
        ("s002", "u01", "WORKER01", "restart_service", {"role": "worker", "name": WORKER_SERVICE}),
    ]


# --- fix-worker-master-endpoint / repin -----------------------------------------------------------------


def test_endpoint_points_at_the_host_the_other_workers_use(cluster: Any) -> None:
    c = cluster(
        {
            "workers": ["WORKER01", "WORKER02"],
            "nodes": {
                "WORKER01": {"worker_settings": {"MasterEndpoint": "https://oldmaster.contoso.test:8392/"}},
                "WORKER02": {"worker_settings": {"MasterEndpoint": "https://10.0.1.1:8391"}},
            },
        }
    )
    result = plan(findings_file(finding("SO-W04", "WORKER01", "fix-worker-master-endpoint")), c.snapshot, options())
    assert rows(result)[0][2:] == (
        "WORKER01",
        "set_master_endpoint",
        {"host": "10.0.1.1", "port": 8391, "trailing_slash": True},
    )
    assert describe(result.steps[0]).after == "MasterEndpoint = 'https://10.0.1.1:8391/'"


def test_endpoint_is_manual_when_the_certificate_names_no_master_name(cluster: Any) -> None:
    c = cluster(
        {
            "certs": {"master": {"cn": ["somewhere.else.test"]}},
            "nodes": {"WORKER01": {"worker_settings": {"MasterEndpoint": "https://x.contoso.test:8391"}}},
        }
    )
    result = plan(findings_file(finding("SO-W04", "WORKER01", "fix-worker-master-endpoint")), c.snapshot, options())
    assert result.empty and "rotate the master certificate" in result.manual[0].reason


def test_repin_trusts_the_master_certificate_first(cluster: Any) -> None:
    c = cluster(
        {
            "certs": {"old": {"cn": ["MASTER01"]}},
            "nodes": {
                "WORKER01": {
                    "root_remove": ["master"],
                    "root_add": ["old"],
                    "worker_settings": {"MasterHttpsCertThumbprint": "{old}"},
                }
            },
        }
    )
    result = plan(findings_file(finding("SO-W02", "WORKER01", "repin-worker-master-thumbprint")), c.snapshot, options())
    assert [(s.node, s.action) for s in result.steps] == [
        ("WORKER01", "import_certificate"),
        ("WORKER01", "write_config"),
        ("WORKER01", "restart_service"),
    ]
    assert params(result.steps[1])["value"] == c.thumb("master")


def test_repin_follows_a_master_fix_in_the_same_plan(cluster: Any) -> None:
    c = cluster(
        {
            "certs": {"old": {"cn": ["MASTER01"]}},
            "nodes": {
                "MASTER01": {"master_settings": {"SSLCertThumbprint": "{master|lrm}"}},
                "WORKER01": {"root_add": ["old"], "worker_settings": {"MasterHttpsCertThumbprint": "{old}"}},
            },
        }
    )
    result = plan(
        findings_file(
            finding("SO-M01", "MASTER01", "normalize-config-thumbprint"),
            finding("SO-W02", "WORKER01", "repin-worker-master-thumbprint"),
        ),
        c.snapshot,
        options(),
    )
    assert [u.remediation for u in result.units] == [
        "normalize-config-thumbprint",
        "repin-worker-master-thumbprint",
    ]
    assert result.units[1].depends_on == ["u01"]  # skipped if the master fix fails


# --- set-schannel-trust-mode -----------------------------------------------------------------------------

ISSUING_CA_IN_ROOT: dict[str, Any] = {
    "certs": {"ca": {"cn": ["Contoso Root CA"]}, "issuing": {"cn": ["Contoso Issuing CA 01"], "issuer": "ca"}},
    "nodes": {"MASTER01": {"root_add": ["ca", "issuing"], "schannel": {}}},
}
SCHANNEL_COMMAND = (
    "reg add HKLM\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL "
    "/v ClientAuthTrustMode /t REG_DWORD /d 2 /f"
)


def with_master(spec: dict[str, Any], **master: Any) -> dict[str, Any]:
    nodes = dict(spec["nodes"])
    nodes["MASTER01"] = {**nodes["MASTER01"], **master}
    return {**spec, "nodes": nodes}


def test_schannel_trust_mode_is_set_and_the_master_restarted(cluster: Any) -> None:
    c = cluster(ISSUING_CA_IN_ROOT)
    assert ("SO-M11", "MASTER01") in c.failing()
    result = plan(findings_file(finding("SO-M11", "MASTER01", "set-schannel-trust-mode")), c.snapshot, options())
    assert rows(result) == [
        ("s001", "u01", "MASTER01", "set_schannel_value", {"name": "ClientAuthTrustMode", "value": 2}),
        ("s002", "u01", "MASTER01", "restart_service", {"role": "master", "name": MASTER_SERVICE}),
    ]
    step = result.steps[0]
    assert describe(step).command == SCHANNEL_COMMAND
    assert describe(step).before == "ClientAuthTrustMode = (absent)"
    assert describe(step).after == (
        "ClientAuthTrustMode = 2 (REG_DWORD); LocalMachine\\Root is left as it is; "
        "the master service must restart to pick it up"
    )
    assert [(u.id, u.remediation, u.target, u.depends_on) for u in result.units] == [
        ("u01", "set-schannel-trust-mode", "MASTER01", [])
    ]
    assert outcome(result, "SO-M11@CLUSTER/MASTER01") == ("planned", "u01")


def test_every_master_of_an_ha_pair_named_by_a_finding_gets_its_own_unit(cluster: Any) -> None:
    spec = {
        **ISSUING_CA_IN_ROOT,
        "masters": ["MASTER01", "MASTER02"],
        "nodes": {
            "MASTER01": {"root_add": ["ca", "issuing"], "schannel": {}},
            "MASTER02": {"root_add": ["ca", "issuing"], "schannel": {}},
        },
    }
    c = cluster(spec)
    assert {("SO-M11", "MASTER01"), ("SO-M11", "MASTER02")} <= c.failing()
    result = plan(
        findings_file(
            finding("SO-M11", "MASTER02", "set-schannel-trust-mode"),
            finding("SO-M11", "MASTER01", "set-schannel-trust-mode"),
        ),
        c.snapshot,
        options(),
    )
    assert rows(result) == [
        ("s001", "u01", "MASTER01", "set_schannel_value", {"name": "ClientAuthTrustMode", "value": 2}),
        ("s002", "u01", "MASTER01", "restart_service", {"role": "master", "name": MASTER_SERVICE}),
        ("s003", "u02", "MASTER02", "set_schannel_value", {"name": "ClientAuthTrustMode", "value": 2}),
        ("s004", "u02", "MASTER02", "restart_service", {"role": "master", "name": MASTER_SERVICE}),
    ]
    assert [u.findings for u in result.units] == [["SO-M11@CLUSTER/MASTER01"], ["SO-M11@CLUSTER/MASTER02"]]


def test_schannel_values_already_there_are_shown_as_they_are(cluster: Any) -> None:
    c = cluster(with_master(ISSUING_CA_IN_ROOT, schannel={"ClientAuthTrustMode": 1, "SendTrustedIssuerList": 1}))
    assert ("SO-M11", "MASTER01") in c.failing()
    result = plan(findings_file(finding("SO-M11", "MASTER01", "set-schannel-trust-mode")), c.snapshot, options())
    assert rows(result)[0][3:] == ("set_schannel_value", {"name": "ClientAuthTrustMode", "value": 2})
    assert describe(result.steps[0]).before == "ClientAuthTrustMode = 1"


def test_schannel_fix_rides_on_the_master_restart_the_plan_already_has(cluster: Any) -> None:
    c = cluster(
        with_master(ISSUING_CA_IN_ROOT, bindings=[{"ip_port": "0.0.0.0:8391", "cert": "master", "store": None}])
    )
    result = plan(
        findings_file(
            finding("SO-M06", "MASTER01", "repair-master-binding"),
            finding("SO-M11", "MASTER01", "set-schannel-trust-mode"),
        ),
        c.snapshot,
        options(),
    )
    assert [(s.id, s.unit, s.node, s.action) for s in result.steps] == [
        ("s001", "u01", "MASTER01", "set_schannel_value"),
        ("s002", "u02", "MASTER01", "set_binding"),
        ("s003", "u02", "MASTER01", "restart_service"),
    ]
    assert [(u.id, u.remediation, u.depends_on) for u in result.units] == [
        ("u01", "set-schannel-trust-mode", []),
        ("u02", "repair-master-binding", ["u01"]),
    ]
    assert outcome(result, "SO-M11@CLUSTER/MASTER01") == ("planned", "u01")
    assert outcome(result, "SO-M06@CLUSTER/MASTER01") == ("planned", "u02")


def test_schannel_fix_restarts_itself_when_the_only_master_restart_spans_other_nodes(cluster: Any) -> None:
    c = cluster({**ISSUING_CA_IN_ROOT, "certs": {**ISSUING_CA_IN_ROOT["certs"], "master": EXPIRING}})
    result = plan(
        findings_file(
            finding("SO-M07", "MASTER01", "rotate-master-certificate"),
            finding("SO-M11", "MASTER01", "set-schannel-trust-mode"),
        ),
        c.snapshot,
        options(),
    )
    rotation, schannel = result.units
    assert (rotation.remediation, rotation.nodes) == ("rotate-master-certificate", ["MASTER01", "WORKER01"])
    assert ("MASTER01", "restart_service") in [(result.step(s).node, result.step(s).action) for s in rotation.steps]
    # a rotation that fails on a worker is rolled back without this unit, which must not rely on its restart
    assert [(s.unit, s.node, s.action, params(s)) for s in result.steps[-2:]] == [
        ("u02", "MASTER01", "set_schannel_value", {"name": "ClientAuthTrustMode", "value": 2}),
        ("u02", "MASTER01", "restart_service", {"role": "master", "name": MASTER_SERVICE}),
    ]
    assert (schannel.remediation, schannel.depends_on, rotation.depends_on) == ("set-schannel-trust-mode", [], [])


def test_schannel_fix_without_the_collected_values_is_manual(cluster: Any) -> None:
    c = cluster(with_master(ISSUING_CA_IN_ROOT, schannel=None))
    result = plan(findings_file(finding("SO-M11", "MASTER01", "set-schannel-trust-mode")), c.snapshot, options())
    assert result.empty
    (item,) = result.manual
    assert (item.policy, item.node, item.remediation) == ("SO-M11", "MASTER01", "set-schannel-trust-mode")
    assert item.reason == "the master's SCHANNEL registry values were not collected"
    assert any("ClientAuthTrustMode" in s and "SendTrustedIssuerList" in s for s in item.steps)


def test_schannel_fix_on_a_worker_is_manual(cluster: Any) -> None:
    c = cluster(ISSUING_CA_IN_ROOT)
    result = plan(findings_file(finding("SO-M11", "WORKER01", "set-schannel-trust-mode")), c.snapshot, options())
    assert result.empty and "not a master" in result.manual[0].reason


@pytest.mark.parametrize(
    "values", [{"ClientAuthTrustMode": 2}, {"SendTrustedIssuerList": 0, "ClientAuthTrustMode": 0}]
)
def test_schannel_already_mitigated_plans_nothing(cluster: Any, values: dict[str, int]) -> None:
    c = cluster(with_master(ISSUING_CA_IN_ROOT, schannel=values))
    result = plan(findings_file(finding("SO-M11", "MASTER01", "set-schannel-trust-mode")), c.snapshot, options())
    assert result.empty and not result.manual
    assert outcome(result, "SO-M11@CLUSTER/MASTER01") == ("nothing_to_do", None)


# --- grant / start / stale / manual ----------------------------------------------------------------------


def test_key_access_is_granted_to_the_service_account(cluster: Any) -> None:
    c = cluster(
        {
            "nodes": {
                "WORKER01": {
                    "key_readers": {"WORKER01": ["NT AUTHORITY\\SYSTEM"]},
                    "worker_service": {"StartName": "CONTOSO\\svc-ssis"},
                }
            }
        }
    )
    result = plan(findings_file(finding("SO-W09", "WORKER01", "grant-worker-key-access")), c.snapshot, options())
    assert rows(result) == [
        (
            "s001",
            "u01",
            "WORKER01",
            "grant_key_read",
            {"store": "My", "thumbprint": c.thumb("WORKER01"), "account": "CONTOSO\\svc-ssis"},
        ),
        ("s002", "u01", "WORKER01", "restart_service", {"role": "worker", "name": WORKER_SERVICE}),
    ]
    assert describe(result.steps[0]).command == (
        "winhttpcertcfg.exe -g -c LOCAL_MACHINE\\My "
        f"-s <subject of certificate {c.thumb('WORKER01')}> -a CONTOSO\\svc-ssis"
    )


def test_key_access_without_a_private_key_is_manual(cluster: Any) -> None:
    c = cluster({"nodes": {"WORKER01": {"private_key": {"WORKER01": False}}}})
    result = plan(findings_file(finding("SO-W09", "WORKER01", "grant-worker-key-access")), c.snapshot, options())
    assert result.empty and "no private key" in result.manual[0].reason


def test_start_mode_fixes_go_first_and_starts_go_last(cluster: Any) -> None:
    c = cluster(
        {
            "workers": ["WORKER01", "WORKER02"],
            "nodes": {
                "MASTER01": {
                    "master_service": {"StartMode": "Disabled"},
                    "bindings": [{"ip_port": "0.0.0.0:8391", "cert": "master", "store": None}],
                },
                "WORKER02": {"worker_service": {"State": "Stopped", "StartMode": "Manual"}},
            },
        }
    )
    result = plan(
        findings_file(
            finding("SO-M06", "MASTER01", "repair-master-binding"),
            finding("SO-M09", "MASTER01", "start-service"),
            finding("SO-W11", "WORKER02", "start-service"),
        ),
        c.snapshot,
        options(),
    )
    assert [(s.unit, s.node, s.action, params(s).get("mode")) for s in result.steps] == [
        ("u01", "MASTER01", "set_service_start_mode", "Automatic"),
        ("u02", "MASTER01", "set_binding", None),
        ("u02", "MASTER01", "restart_service", None),
        ("u03", "WORKER02", "set_service_start_mode", "Automatic"),
        ("u03", "WORKER02", "start_service", None),
    ]
    assert describe(result.steps[3]).command == f"Set-Service -Name {WORKER_SERVICE} -StartupType Automatic"
    assert describe(result.steps[4]).command == f"sc start {WORKER_SERVICE}"


def test_only_unreferenced_certificates_with_the_workers_subject_are_removed(cluster: Any) -> None:
    c = cluster(
        {
            "certs": {
                "old": {"cn": ["WORKER01"], "san_dns": ["worker01.contoso.test"], "san_ip": ["10.0.2.1"]},
                "other": {"cn": ["WEB01"]},
            },
            "nodes": {"WORKER01": {"my_add": ["old", "other"]}},
        }
    )
    result = plan(
        findings_file(finding("SO-W13", "WORKER01", "remove-stale-worker-certificates")),
        c.snapshot,
        options(),
    )
    assert rows(result) == [
        ("s001", "u01", "WORKER01", "remove_certificate", {"store": "My", "thumbprint": c.thumb("old")})
    ]


def test_findings_without_a_safe_fix_are_listed_with_the_documented_steps(cluster: Any) -> None:
    c = cluster()
    result = plan(
        findings_file(
            finding("SO-C03", "MASTER01", "manual"),
            finding("SO-C01", "WORKER01", "manual", status=Status.ERROR),
            finding("SO-X99", "WORKER01", "frobnicate"),
        ),
        c.snapshot,
        options(),
    )
    assert result.empty
    manual = {m.policy: m for m in result.manual}
    assert set(manual) == {"SO-C03", "SO-C01", "SO-X99"}
    assert manual["SO-C03"].reason == "the policy has no automatic remediation"
    assert any("SSLCERT_THUMBPRINT" in s for s in manual["SO-C03"].steps)
    assert "no remediator named 'frobnicate'" in manual["SO-X99"].reason


def test_passing_and_unassessed_findings_plan_nothing(cluster: Any) -> None:
    c = cluster({"nodes": {"MASTER01": {"bindings": [{"ip_port": "0.0.0.0:8391", "cert": "master", "store": None}]}}})
    result = plan(
        findings_file(
            finding("SO-M06", "MASTER01", "repair-master-binding", status=Status.PASS),
            finding("SO-M06", "MASTER01", "repair-master-binding", status=Status.NOT_ASSESSED),
            finding("SO-M06", "MASTER01", "repair-master-binding", status=Status.WAIVED),
        ),
        c.snapshot,
        options(),
    )
    assert result.empty and not result.manual and not result.dispositions


# --- plan-wide rules -------------------------------------------------------------------------------------


def test_max_nodes_refuses_a_larger_plan(cluster: Any) -> None:
    c = cluster({"workers": ["WORKER01", "WORKER02"], "certs": {"master": EXPIRING}})
    with pytest.raises(PlanRefused, match="touches 3 nodes") as refused:
        plan(
            findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")),
            c.snapshot,
            options(max_nodes=2),
        )
    assert refused.value.plan.nodes() == ["CLUSTER/MASTER01", "CLUSTER/WORKER01", "CLUSTER/WORKER02"]
    allowed = plan(
        findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")),
        c.snapshot,
        options(max_nodes=3),
    )
    assert len(allowed.nodes()) == 3


def test_plan_json_round_trips(cluster: Any) -> None:
    c = cluster({"certs": {"master": EXPIRING}})
    original = plan(findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")), c.snapshot, options())
    text = original.to_json()
    assert '"schema": "scaleguard-plan/2"' in text and '"from_step": "s001"' in text
    assert Plan.from_json(text) == original
    with pytest.raises(ValueError, match="not a scaleguard-plan/2 plan"):
        Plan.from_json(text.replace("scaleguard-plan/2", "other/1"))


def test_every_failing_finding_of_a_real_audit_gets_exactly_one_disposition(cluster: Any) -> None:
    c = cluster(
        {
            "workers": ["WORKER01", "WORKER02"],
            "certs": ISSUING_CA_IN_ROOT["certs"],
            "nodes": {
                "MASTER01": {
                    "bindings": [{"ip_port": "0.0.0.0:8391", "cert": "master", "store": None}],
                    "master_service": {"StartMode": "Manual"},
                    "root_add": ["ca", "issuing"],
                    "schannel": {},
                },
                "WORKER01": {"key_readers": {"WORKER01": ["NT AUTHORITY\\SYSTEM"]}},
                "WORKER02": {"root_remove": ["WORKER02"]},
            },
        }
    )
    found = c.findings()
    failing = [f for f in found if f.status in (Status.FAIL, Status.ERROR)]
    assert {f.policy for f in failing} >= {"SO-M06", "SO-M09", "SO-M11", "SO-W09", "SO-W07"}
    result = plan(findings_file(*found), c.snapshot, options())
    keys = sorted(d.finding for d in result.dispositions)
    assert keys == sorted(f"{f.policy}@CLUSTER/{f.node}" for f in failing)
    assert all(d.outcome == "planned" for d in result.dispositions)


def test_names_that_are_not_host_names_never_reach_a_certificate(cluster: Any) -> None:
    c = cluster(
        {
            "certs": {"master": EXPIRING},
            "nodes": {"MASTER01": {"host": {"fqdn": 'm1"; Remove-Item C:\\ -Recurse #', "addresses": ["10.0.1.1"]}}},
        }
    )
    result = plan(findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")), c.snapshot, options())
    assert params(result.steps[0])["common_names"] == ["master01.contoso.test", "MASTER01", "10.0.1.1"]
    assert any("not a valid host name" in w for w in result.warnings)


def test_a_pfx_is_read_once_and_its_password_stays_a_reference(tmp_path: Any) -> None:
    pfx = _pfx(tmp_path, ("a.contoso.test", "b.contoso.test"))
    assert pfx.names == ("a.contoso.test", "b.contoso.test") and pfx.self_signed and pfx.key_bits == 2048
    cert = x509.load_der_x509_certificate(base64.b64decode(pfx.der_b64))
    assert cert.subject.rfc4514_string() == pfx.subject
    assert pfx.password == SecretRef(secret_env="PFX_PASSWORD")


def test_every_remediation_name_has_exactly_one_remediator() -> None:
    """A policy may only name a remediation the fix engine can plan (manual included)."""
    from scaleguard.findings.model import REMEDIATIONS
    from scaleguard.remediators.planner import REMEDIATORS

    names = [r.name for r in REMEDIATORS]
    assert sorted(names) == sorted(REMEDIATIONS)
