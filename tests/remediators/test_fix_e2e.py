"""``scaleguard fix`` end to end: the CLI, real pywinrm, the WinRM lab, and a re-audit after every fix.

For every remediation a cluster with that defect is served by the lab; ``fix --apply --yes`` must fix
it (the command's own re-audit must be clean, and an independent audit agrees), and a second
``fix --apply`` must find nothing to do. The lab runs in this process here (one per case keeps the
cases independent and fast); the fault and undo tests at the end run it in its own process with the
``--faults`` file, as an operator would.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from fixcases import CLUSTER, Cluster, verdicts
from typer.testing import CliRunner

from scaleguard.apply.journal import Journal
from scaleguard.apply.verify import reaudit
from scaleguard.cli.main import app
from scaleguard.findings.model import Status
from scaleguard.lab.process import LabProcess
from scaleguard.lab.serve import PASSWORD_ENV

PASSWORD = "Lab-" + secrets.token_urlsafe(12)
EXPIRING_MASTER = {"cn": ["master01.contoso.test", "MASTER01", "10.0.1.1"], "days_from": -700, "days": 710}
EXPIRING_WORKER = {
    "cn": ["WORKER01"],
    "san_dns": ["worker01.contoso.test"],
    "san_ip": ["10.0.2.1"],
    "days_from": -700,
    "days": 710,
}
OLD_MASTER = {"cn": ["MASTER01"], "days_from": -900, "days": 800}
ISSUING_CA_IN_ROOT = {
    "certs": {"ca": {"cn": ["Contoso Root CA"]}, "issuing": {"cn": ["Contoso Issuing CA 01"], "issuer": "ca"}},
    "nodes": {"MASTER01": {"root_add": ["ca", "issuing"], "schannel": {}}},
}
STALE_WORKER = {
    "cn": ["WORKER01"],
    "san_dns": ["worker01.contoso.test"],
    "san_ip": ["10.0.2.1"],
    "days_from": -800,
    "days": 700,
}

CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "rotate-master-certificate": (
        {"workers": ["WORKER01", "WORKER02"], "certs": {"master": EXPIRING_MASTER}},
        {"SO-M07"},
    ),
    "rotate-worker-certificate": ({"certs": {"WORKER01": EXPIRING_WORKER}}, {"SO-W10"}),
    "import-root-certificate": (
        {
            "workers": ["WORKER01", "WORKER02"],
            "nodes": {
                "WORKER01": {"root_remove": ["master", "WORKER01"]},
                "MASTER01": {"root_remove": ["WORKER02"]},
            },
        },
        {"SO-W03", "SO-W07", "SO-W08"},
    ),
    "repair-master-binding": (
        {"nodes": {"MASTER01": {"bindings": [{"ip_port": "0.0.0.0:8391", "cert": "master", "store": None}]}}},
        {"SO-M06"},
    ),
    "repin-worker-master-thumbprint": (
        {
            "certs": {"old": OLD_MASTER},
            "nodes": {"WORKER01": {"root_add": ["old"], "worker_settings": {"MasterHttpsCertThumbprint": "{old}"}}},
        },
        {"SO-W02"},
    ),
    "fix-worker-master-endpoint": (
        {
            "workers": ["WORKER01", "WORKER02"],
            "nodes": {"WORKER01": {"worker_settings": {"MasterEndpoint": "https://master01.contoso.test:8392"}}},
        },
        {"SO-W04", "SO-C02"},
    ),
    "normalize-config-thumbprint": (
        {
            "nodes": {
                "MASTER01": {"master_settings": {"SSLCertThumbprint": "{master|lrm}"}},
                "WORKER01": {"worker_settings": {"MasterHttpsCertThumbprint": "{master|spaced}"}},
            }
        },
        {"SO-M01", "SO-W01"},
    ),
    "grant-worker-key-access": (
        {"nodes": {"WORKER01": {"key_readers": {"WORKER01": ["NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators"]}}}},
        {"SO-W09"},
    ),
    "start-service": (
        {
            "nodes": {
                "MASTER01": {"master_service": {"StartMode": "Manual"}},
                "WORKER01": {"worker_service": {"State": "Stopped", "StartMode": "Disabled"}},
            }
        },
        {"SO-M09", "SO-W11"},
    ),
    "remove-stale-worker-certificates": (
        {"certs": {"stale": STALE_WORKER}, "nodes": {"WORKER01": {"my_add": ["stale"]}}},
        {"SO-W13"},
    ),
    "set-schannel-trust-mode": (ISSUING_CA_IN_ROOT, {"SO-M11"}),
}


@pytest.fixture(autouse=True)
def _lab_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


MANUAL_ONLY = {"SO-C03", "SO-C01"}


@pytest.mark.parametrize("remediation", sorted(CASES))
def test_every_remediation_fixes_its_defect_over_winrm(served: Any, remediation: str) -> None:
    spec, policies = CASES[remediation]
    lab = served(spec)
    before = lab.failing()
    assert {p for p, _ in before} >= policies, f"the case must plant {policies}, the audit found {before}"

    dry = lab.fix()
    assert dry.exit_code == 0 and "dry run: nothing was changed" in dry.output
    assert lab.failing() == before and not lab.journal.exists()  # a dry run touches nothing

    applied = lab.fix("--apply", "--yes")
    assert applied.exit_code == 0, applied.output
    assert "fixed" in applied.output and "still" not in applied.output
    after = lab.failing()
    assert {p for p, _ in after} <= MANUAL_ONLY, after
    assert lab.runs() == 1

    again = lab.fix("--apply", "--yes")
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert lab.runs() == 1  # the second run changed nothing and journaled nothing


def _schannel(lab: Any) -> tuple[int | None, int | None] | None:
    """MASTER01's SCHANNEL values as the next audit collects them over WinRM."""
    snapshot, _ = reaudit(lab.inventory)
    node = snapshot.clusters[0].node("MASTER01")
    assert node is not None
    if node.schannel is None:
        return None
    return node.schannel.client_auth_trust_mode, node.schannel.send_trusted_issuer_list


def test_schannel_fix_sets_the_value_and_undo_deletes_it_again(served: Any) -> None:
    lab = served(ISSUING_CA_IN_ROOT)
    assert _schannel(lab) == (None, None)
    applied = lab.fix("--apply", "--yes")
    assert applied.exit_code == 0, applied.output
    assert _schannel(lab) == (2, None) and ("SO-M11", "MASTER01") not in lab.failing()
    master = lab.lab.state.node("MASTER01")
    assert [e["op"] for e in master.journal] == ["set_schannel_value", "restart_service"]
    with Journal(lab.journal) as journal:
        run_id = journal.runs()[-1].run_id
    undone = lab.fix("--undo", run_id, "--yes")
    assert undone.exit_code == 0, undone.output
    assert _schannel(lab) == (None, None) and ("SO-M11", "MASTER01") in lab.failing()
    assert [e["op"] for e in master.journal[2:]] == ["delete_schannel_value", "restart_service"]


@pytest.mark.parametrize(
    ("spec", "fail_op", "units"),
    [
        (ISSUING_CA_IN_ROOT, "restart_service", {"u01": "failed"}),
        (
            {
                **ISSUING_CA_IN_ROOT,
                "nodes": {
                    "MASTER01": {
                        **ISSUING_CA_IN_ROOT["nodes"]["MASTER01"],
                        "bindings": [{"ip_port": "0.0.0.0:8391", "cert": "master", "store": None}],
                    }
                },
            },
            "set_binding",
            {"u01": "rolled_back", "u02": "failed"},
        ),
    ],
    ids=["own-restart-fails", "shared-restart-unit-fails"],
)
def test_a_failed_schannel_fix_puts_the_absent_value_back(
    served: Any, tmp_path: Path, spec: dict[str, Any], fail_op: str, units: dict[str, str]
) -> None:
    lab = served(spec)
    before = verdicts(reaudit(lab.inventory)[1])
    master = lab.lab.state.node("MASTER01")
    master.faults.fail_ops = {fail_op: 1}
    out = tmp_path / "apply"
    result = lab.fix("--apply", "--yes", "--out", str(out))
    assert result.exit_code == 1 and "failed" in result.output
    report = json.loads((out / "apply.json").read_text(encoding="utf-8"))
    assert report["units"] == units and report["status"] == "failed"
    assert master.schannel is not None and master.schannel.client_auth_trust_mode is None
    assert _schannel(lab) == (None, None)
    assert verdicts(reaudit(lab.inventory)[1]) == before
    done = [e["op"] for e in master.journal]
    assert done[0] == "set_schannel_value" and "delete_schannel_value" in done


def test_apply_without_a_terminal_refuses_unless_told_yes(served: Any) -> None:
    spec, _ = CASES["repair-master-binding"]
    lab = served(spec)
    refused = lab.fix("--apply")
    assert refused.exit_code == 2 and "pass --yes" in refused.output
    assert ("SO-M06", "MASTER01") in lab.failing()


def test_max_nodes_refuses_before_touching_anything(served: Any) -> None:
    spec, _ = CASES["rotate-master-certificate"]
    lab = served(spec)
    refused = lab.fix("--apply", "--yes", "--max-nodes", "2")
    assert refused.exit_code == 2 and "more than --max-nodes 2" in refused.output
    assert not lab.journal.exists()


def test_plan_json_is_written_and_can_be_applied_as_reviewed(served: Any, tmp_path: Path) -> None:
    spec, _ = CASES["repair-master-binding"]
    lab = served(spec)
    out = tmp_path / "review"
    assert lab.fix("--out", str(out)).exit_code == 0
    applied = lab.fix("--plan", str(out / "plan.json"), "--apply", "--yes", "--out", str(out))
    assert applied.exit_code == 0, applied.output
    assert (out / "apply.json").is_file() and ("SO-M06", "MASTER01") not in lab.failing()


# --- faults and undo with the lab in its own process -----------------------------------------------------


@pytest.mark.lab
@pytest.mark.parametrize(
    ("faults", "node", "writes_before_failure"),
    [
        ({"MASTER01": {"fail_ops": {"set_binding": 1}}}, "MASTER01", 0),
        ({"MASTER01": {"fail_ops": {"restart_service": 1}}}, "MASTER01", 1),
        ({"WORKER02": {"fail_ops": {"write_config": 1}}}, "WORKER02", 2),
    ],
    ids=["binding-add", "service-restart", "config-write"],
)
def test_a_failed_step_over_winrm_leaves_the_cluster_as_it_was(
    tmp_path: Path, faults: dict[str, Any], node: str, writes_before_failure: int
) -> None:
    cluster = Cluster(CASES["rotate-master-certificate"][0], tmp_path / "evidence")
    with LabProcess(cluster.evidence, tmp_path / "lab", PASSWORD, faults=faults) as running:
        before_snapshot, before = reaudit(running.inventory)
        result = CliRunner().invoke(
            app,
            [
                "fix",
                "--inventory",
                str(running.inventory),
                "--journal",
                str(tmp_path / "j.sqlite"),
                "--apply",
                "--yes",
            ],
            catch_exceptions=False,
        )
        assert result.exit_code == 1 and "failed" in result.output
        after_snapshot, after = reaudit(running.inventory)
    assert verdicts(after) == verdicts(before)
    assert _config_and_trust(after_snapshot) == _config_and_trust(before_snapshot)
    with Journal(tmp_path / "j.sqlite") as journal:
        run = journal.runs()[-1]
        entries = journal.entries(run.run_id)
        assert any(e.status == "failed" and e.node == node for e in entries)
        writes = [e for e in entries if e.phase == "apply" and e.action == "write_config" and e.status == "done"]
        assert len(writes) == writes_before_failure
        # every edited file had a backup on its node, and each edit was reverted from that backup
        assert all(e.result and e.result["backup_path"].endswith(e.request["backup_name"]) for e in writes)
        restores = {(e.inverts_seq, e.status) for e in entries if e.phase == "rollback" and e.action == "restore_file"}
        assert restores == {(e.seq, "done") for e in writes}


@pytest.mark.lab
def test_an_interrupted_run_over_winrm_is_undone_with_the_cli(tmp_path: Path) -> None:
    from fixcases import findings_file, options

    from scaleguard.apply.runner import Executor
    from scaleguard.apply.transport import WinRMTransport
    from scaleguard.remediators import plan

    cluster = Cluster(CASES["rotate-master-certificate"][0], tmp_path / "evidence")
    journal_path = tmp_path / "j.sqlite"
    with LabProcess(cluster.evidence, tmp_path / "lab", PASSWORD) as running:
        snapshot, before = reaudit(running.inventory)
        failing = [f for f in before if f.status is Status.FAIL]
        the_plan = plan(findings_file(*failing), snapshot, options())

        class Interrupted(WinRMTransport):
            sent = 0

            def client(self, cluster_name: str, node: str) -> Any:
                inner = super().client(cluster_name, node)
                outer = self

                class Client:
                    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
                        if outer.sent == 3:
                            raise KeyboardInterrupt  # Ctrl-C between two rounds (create, two imports done)
                        outer.sent += 1
                        return inner.request(payload)

                return Client()

        transport = Interrupted(running.inventory)
        with Journal(journal_path) as journal, pytest.raises(KeyboardInterrupt):
            Executor(the_plan, transport, journal, current=snapshot).run()
        transport.close()
        with Journal(journal_path) as journal:
            run_id = journal.runs()[-1].run_id
            assert journal.runs()[-1].status == "interrupted"
        middle_snapshot, _ = reaudit(running.inventory)
        assert _config_and_trust(middle_snapshot) != _config_and_trust(snapshot)
        def undo_run() -> Any:
            return CliRunner().invoke(
                app,
                ["fix", "--undo", run_id, "--inventory", str(running.inventory),
                 "--journal", str(journal_path), "--yes"],
                catch_exceptions=False,
            )

        undo = undo_run()
        assert undo.exit_code == 0, undo.output
        after_snapshot, after = reaudit(running.inventory)
        again = undo_run()
        assert again.exit_code == 0 and "nothing left to undo" in again.output
    assert verdicts(after) == verdicts(before)
    assert _config_and_trust(after_snapshot) == _config_and_trust(snapshot)


def _config_and_trust(snapshot: Any) -> dict[str, Any]:
    """What a fix can change, as collected: settings, store contents with key state, bindings, services."""
    state: dict[str, Any] = {}
    for cluster in snapshot.clusters:
        assert cluster.cluster == CLUSTER
        for node in cluster.nodes:
            state[node.name] = (
                node.master_config.settings if node.master_config else None,
                node.worker_config.settings if node.worker_config else None,
                sorted((c.thumbprint, c.has_private_key, tuple(c.key_readers or ())) for c in node.root.certificates)
                if node.root
                else None,
                sorted((c.thumbprint, c.has_private_key, tuple(c.key_readers or ())) for c in node.my.certificates)
                if node.my
                else None,
                sorted((b.ip_port, b.cert_hash, b.app_id, b.cert_store) for b in node.bindings or []),
                sorted((s.name, s.state, s.start_mode) for s in node.services or []),
            )
    return state


def test_ha_pair_rotates_to_an_enterprise_pfx_over_winrm(
    served: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scaleguard.lab.certs import CertSpec, make_certificate, pfx_for_server_2016

    expiring = {"cn": ["ssis-master.contoso.test", "MASTER01", "MASTER02"], "days_from": -700, "days": 710}
    lab = served({"masters": ["MASTER01", "MASTER02"], "certs": {"master": expiring}})
    assert ("SO-M07", "MASTER01") in lab.failing()
    issued = make_certificate(CertSpec(("ssis-master.contoso.test",), san_dns=("MASTER01", "MASTER02"), key_seed=93))
    pfx = tmp_path / "enterprise.pfx"
    pfx.write_bytes(
        pfx_for_server_2016(issued, b"Ent-Pfx-9")
    )

    without = lab.fix("--apply", "--yes")  # an HA pair is never rotated by exporting a key between nodes
    assert without.exit_code == 1 and "--master-pfx" in without.output

    refused = lab.fix("--master-pfx", str(pfx))  # no terminal to prompt for the password on
    assert refused.exit_code == 2 and "--master-pfx-password-env" in refused.output
    monkeypatch.setenv("SG_PFX_PASSWORD", "Ent-Pfx-9")
    applied = lab.fix("--apply", "--yes", "--master-pfx", str(pfx), "--master-pfx-password-env", "SG_PFX_PASSWORD")
    assert applied.exit_code == 0, applied.output
    snapshot, found = reaudit(lab.inventory)
    for master in ("MASTER01", "MASTER02"):
        node = snapshot.clusters[0].node(master)
        assert node is not None and node.bindings is not None
        assert node.bindings[0].cert_hash == issued.thumbprint and node.bindings[0].cert_store == "Root"
        assert node.master_config is not None and node.master_config.settings["SSLCertThumbprint"] == issued.thumbprint
    assert ("SO-M07", "MASTER01") not in {(f.policy, f.node) for f in found if f.status is Status.FAIL}
    assert b"Ent-Pfx-9" not in lab.journal.read_bytes()


@pytest.mark.parametrize("quiet", [False, True], ids=["progress", "no-progress"])
def test_no_progress_drops_the_eta_lines_and_keeps_each_step(served: Any, quiet: bool) -> None:
    spec, _ = CASES["repair-master-binding"]
    lab = served(spec)
    applied = lab.fix("--apply", "--yes", *(["--no-progress"] if quiet else []))
    assert applied.exit_code == 0, applied.output
    progress_lines = [line for line in applied.output.splitlines() if line.strip().startswith("progress ")]
    assert ("ETA" in "".join(progress_lines)) is not quiet
    assert bool(progress_lines) is not quiet
    assert "set_binding" in applied.output  # the step itself is reported either way
