"""A reviewed plan is what runs: edits after review are refused, only parameters are shown, plans expire.

Each tampering case takes the plan ``fix`` wrote for the ``lab create`` cluster served over WinRM, edits
``plan.json`` as an attacker would, and applies it with ``fix --plan … --apply --yes``: the run must exit 2
naming the step, and a collection of every node before and after must be identical (nothing was sent).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from scaleguard.apply.journal import Journal
from scaleguard.apply.verify import reaudit
from scaleguard.cli.main import app
from scaleguard.lab.certs import CertSpec, make_certificate
from scaleguard.lab.serve import PASSWORD_ENV, LabOptions, start_lab
from scaleguard.remediators.describe import describe
from scaleguard.remediators.render import plan_text
from scaleguard.remediators.validate import PlanInvalid, load_plan

PASSWORD = "Lab-" + secrets.token_urlsafe(12)
ATTACKER_CA = make_certificate(CertSpec(("Attacker Root CA",), ca=True, key_seed=77))
ATTACKER_LEAF = make_certificate(CertSpec(("attacker.example",), key_seed=78))

Plan = dict[str, Any]


@pytest.fixture(autouse=True)
def _lab_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@dataclass
class Served:
    folder: Path
    evidence: Path
    inventory: Path
    journal: Path
    lab: Any

    def collected(self) -> Any:
        """Everything a fix may change on every node, as a live collection reads it."""
        snapshot, _ = reaudit(self.inventory)
        return [
            node.model_dump(exclude={"collection", "diagnostics", "ssisdb"})
            for cluster in snapshot.clusters
            for node in cluster.nodes
        ]

    def fix(self, *args: str) -> Any:
        return cli("fix", "--inventory", str(self.inventory), "--journal", str(self.journal), *args)


@pytest.fixture(scope="module")
def lab_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("labcreate") / "CONTOSO-SSIS"
    created = cli("lab", "create", str(folder), "--seed", "7")
    assert created.exit_code == 0, created.output
    return folder


@pytest.fixture
def served(lab_folder: Path, tmp_path: Path) -> Iterator[Served]:
    import shutil

    evidence = tmp_path / "CONTOSO-SSIS"
    shutil.copytree(lab_folder, evidence)
    inventory = tmp_path / "inventory.yaml"
    lab = start_lab(LabOptions(evidence=evidence, inventory_out=inventory))
    lab.write_inventory()
    try:
        yield Served(tmp_path, evidence, inventory, tmp_path / "journal.sqlite", lab)
    finally:
        lab.close()


def reviewed_plan(served: Served) -> tuple[Path, Plan]:
    out = served.folder / "review"
    result = served.fix("--out", str(out))
    assert result.exit_code == 0, result.output
    return out / "plan.json", json.loads((out / "plan.json").read_text(encoding="utf-8"))


def step_of(plan: Plan, action: str, **params: Any) -> dict[str, Any]:
    return next(
        s
        for s in plan["steps"]
        if s["action"] == action and all(s["params"].get(k) == v for k, v in params.items())
    )


def add_step(plan: Plan, unit_id: str, node: str, action: str, params: dict[str, Any]) -> None:
    unit = next(u for u in plan["units"] if u["id"] == unit_id)
    step_id = f"s{len(plan['steps']) + 1:03d}"
    plan["steps"].append({"id": step_id, "unit": unit_id, "cluster": unit["cluster"], "node": node,
                          "action": action, "params": params, "depends_on": []})
    unit["steps"].append(step_id)


def unit_of(plan: Plan, remediation: str) -> str:
    return str(next(u["id"] for u in plan["units"] if u["remediation"] == remediation))


def master_thumb(plan: Plan) -> str:
    return str(step_of(plan, "set_binding")["params"]["cert_hash"])


def _extra_param(plan: Plan) -> None:
    step_of(plan, "restart_service")["params"]["secret_env"] = PASSWORD_ENV


def _local_file_smuggled(plan: Plan) -> None:
    step_of(plan, "write_config", setting="MasterHttpsCertThumbprint")["params"]["local_file"] = "/etc/passwd"


def _secret_in_a_reference(plan: Plan) -> None:
    step_of(plan, "grant_key_read")["params"]["thumbprint"]["secret_env"] = PASSWORD_ENV


def _free_text_command(plan: Plan) -> None:
    step_of(plan, "restart_service")["command"] = "Restart-Service -Name SSISScaleOutWorker150"


def _retarget_setting(plan: Plan) -> None:
    step_of(plan, "write_config", setting="MasterHttpsCertThumbprint")["params"]["setting"] = "MasterEndpoint"


def _retarget_value_to_text(plan: Plan) -> None:
    params = step_of(plan, "write_config", setting="MasterHttpsCertThumbprint")["params"]
    params["value"] = "https://attacker.example:8391"


def _retarget_value_to_another_certificate(plan: Plan) -> None:
    step_of(plan, "write_config", setting="MasterHttpsCertThumbprint")["params"]["value"] = ATTACKER_LEAF.thumbprint


def _path_in_a_step(plan: Plan) -> None:
    step_of(plan, "write_config", setting="MasterHttpsCertThumbprint")["params"]["path"] = (
        "C:\\Windows\\System32\\drivers\\etc\\hosts"
    )


def _grant_to_everyone(plan: Plan) -> None:
    step_of(plan, "grant_key_read")["params"]["account"] = "Everyone"


def _grant_to_another_account(plan: Plan) -> None:
    step_of(plan, "grant_key_read")["params"]["account"] = "CONTOSO\\attacker"


def _ca_into_root(plan: Plan) -> None:
    add_step(plan, unit_of(plan, "repin-worker-master-thumbprint"), "WORKER02", "import_certificate", {
        "store": "Root", "thumbprint": ATTACKER_CA.thumbprint, "der_b64": base64.b64encode(ATTACKER_CA.der).decode(),
    })


def _leaf_the_cluster_does_not_use_into_root(plan: Plan) -> None:
    add_step(plan, unit_of(plan, "repin-worker-master-thumbprint"), "WORKER02", "import_certificate", {
        "store": "Root", "thumbprint": ATTACKER_LEAF.thumbprint,
        "der_b64": base64.b64encode(ATTACKER_LEAF.der).decode(),
    })


def _master_endpoint_retarget(plan: Plan) -> None:
    add_step(plan, unit_of(plan, "repin-worker-master-thumbprint"), "WORKER01", "set_master_endpoint",
             {"host": "attacker.example", "port": 8391})


def _remove_master_certificate(plan: Plan) -> None:
    add_step(plan, unit_of(plan, "repair-master-binding"), "MASTER01", "remove_certificate",
             {"store": "My", "thumbprint": master_thumb(plan)})


def _remove_a_certificate_still_in_use(plan: Plan) -> None:
    unit = next(u for u in plan["units"] if u["remediation"] == "rotate-worker-certificate")
    add_step(plan, unit["id"], unit["target"], "remove_certificate", {"store": "My", "thumbprint": master_thumb(plan)})


def _drop_units(plan: Plan, *remediations: str) -> None:
    dropped = {u["id"] for u in plan["units"] if u["remediation"] in remediations}
    plan["units"] = [u for u in plan["units"] if u["id"] not in dropped]
    plan["steps"] = [s for s in plan["steps"] if s["unit"] not in dropped]
    for unit in plan["units"]:
        unit["depends_on"] = [d for d in unit["depends_on"] if d not in dropped]


def _remove_a_certificate_the_node_still_uses(plan: Plan) -> None:
    thumb = master_thumb(plan)
    _drop_units(plan, "repair-master-binding", "repin-worker-master-thumbprint")  # nothing in the plan pins it
    unit = next(u for u in plan["units"] if u["remediation"] == "rotate-worker-certificate")
    add_step(plan, unit["id"], unit["target"], "remove_certificate", {"store": "My", "thumbprint": thumb})


def _local_file_sent_as_a_pfx(plan: Plan) -> None:
    add_step(plan, unit_of(plan, "repin-worker-master-thumbprint"), "WORKER02", "import_pfx", {
        "store": "Root", "thumbprint": ATTACKER_LEAF.thumbprint, "pfx": {"local_file": "/etc/passwd"},
        "password": {"secret_env": PASSWORD_ENV},
    })


def _unknown_action(plan: Plan) -> None:
    step_of(plan, "restart_service")["action"] = "run_command"


def _expired(plan: Plan) -> None:
    plan["expires_at"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()


TAMPERING: dict[str, tuple[Callable[[Plan], None], str]] = {
    "extra parameter": (_extra_param, "secret_env: Extra inputs are not permitted"),
    "local_file smuggled onto write_config": (_local_file_smuggled, "local_file: Extra inputs are not permitted"),
    "secret_env inside a step reference": (_secret_in_a_reference, "Extra inputs are not permitted"),
    "stored free-text command": (_free_text_command, "command: Extra inputs are not permitted"),
    "write_config retargeted at MasterEndpoint": (_retarget_setting, "setting: Input should be"),
    "write_config value that is no thumbprint": (_retarget_value_to_text, "value"),
    "write_config value: another certificate": (_retarget_value_to_another_certificate, "not the master certificate"),
    "settings-file path in a step": (_path_in_a_step, "carries no settings-file path"),
    "key grant to Everyone": (_grant_to_everyone, "'Everyone' names no domain"),
    "key grant to another account": (_grant_to_another_account, "but the worker service logs on as"),
    "CA certificate into a Root": (_ca_into_root, "is a CA (basicConstraints CA:TRUE, key usage keyCertSign)"),
    "unused certificate into a Root": (_leaf_the_cluster_does_not_use_into_root, "nothing in CONTOSO-SSIS is config"),
    "MasterEndpoint retargeted": (_master_endpoint_retarget, "attacker.example, which names no master"),
    "master certificate removed": (_remove_master_certificate, "only the retiring of old worker certificates"),
    "certificate the plan pins removed": (_remove_a_certificate_still_in_use, "which the plan itself configures"),
    "certificate the node still uses removed": (
        _remove_a_certificate_the_node_still_uses,
        "still uses (MasterHttpsCertThumbprint)",
    ),
    "unknown action": (_unknown_action, "action: Input should be"),
    "local file and a secret sent as a PFX": (_local_file_sent_as_a_pfx, "which is not the plan's --master-pfx"),
    "expired plan": (_expired, "expired at"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_a_plan_edited_after_review_is_refused_and_nothing_changes(served: Served, case: str) -> None:
    path, plan = reviewed_plan(served)
    before = served.collected()
    edit, reason = TAMPERING[case]
    edit(plan)
    path.write_text(json.dumps(plan, indent=1), encoding="utf-8")
    result = served.fix("--plan", str(path), "--apply", "--yes")
    assert result.exit_code == 2, result.output
    assert "step s0" in result.output or "plan: expired" in result.output
    assert reason in " ".join(result.output.split()), result.output
    assert served.collected() == before
    assert all(not node.journal for node in served.lab.state.nodes())  # no action reached any node
    assert not served.journal.exists() or not Journal(served.journal).runs()


def test_the_reviewed_plan_applies_and_its_sha256_is_journaled(served: Served) -> None:
    path, _plan = reviewed_plan(served)
    review = served.fix("--plan", str(path))
    sha256 = load_plan(path.read_bytes()).sha256
    assert review.exit_code == 0 and f"plan SHA-256 {sha256}" in review.output
    out = served.folder / "applied"
    applied = served.fix("--plan", str(path), "--apply", "--yes", "--out", str(out))
    assert applied.exit_code == 0, applied.output
    with Journal(served.journal) as journal:
        run = journal.runs()[-1]
    assert run.plan_sha256 == sha256
    assert json.loads((out / "apply.json").read_text(encoding="utf-8"))["plan_sha256"] == sha256


def test_a_plan_made_offline_applies_live(served: Served) -> None:
    report = served.folder / "report"
    offline = cli("audit", "--evidence", str(served.evidence), "--out", str(report))
    assert offline.exit_code == 1, offline.output
    out = served.folder / "plan"
    planned = cli("fix", "--findings", str(report / "findings.json"), "--out", str(out))
    assert planned.exit_code == 0, planned.output
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    writes = [s for s in plan["steps"] if s["action"] == "write_config"]
    assert writes and all("path" not in s["params"] or s["params"]["path"] is None for s in writes)
    applied = served.fix("--plan", str(out / "plan.json"), "--apply", "--yes")
    assert applied.exit_code == 0, applied.output
    live = cli("audit", "--inventory", str(served.inventory), "--out", str(served.folder / "after"))
    assert live.exit_code == 0, live.output


def test_the_review_table_follows_the_parameters(served: Served) -> None:
    path, plan = reviewed_plan(served)
    loaded = load_plan(path.read_bytes()).plan
    original = plan_text(loaded)
    step = step_of(plan, "restart_service")
    step["params"]["name"] = step["params"]["name"].replace("150", "160")
    edited = load_plan(json.dumps(plan).encode()).plan
    changed = plan_text(edited)
    assert original != changed
    assert "Restart-Service -Name SSISScaleOutWorker160" in changed
    assert "Restart-Service -Name SSISScaleOutWorker160" not in original
    assert describe(edited.step(step["id"])).command == "Restart-Service -Name SSISScaleOutWorker160"


def test_plan_valid_for_sets_the_expiry(served: Served) -> None:
    out = served.folder / "short"
    assert served.fix("--out", str(out), "--plan-valid-for", "12h").exit_code == 0
    plan = load_plan((out / "plan.json").read_bytes()).plan
    assert timedelta(hours=11, minutes=59) < plan.expires_at - plan.generated_at <= timedelta(hours=12)
    with pytest.raises(PlanInvalid, match="expired"):
        load_plan((out / "plan.json").read_bytes(), now=plan.expires_at + timedelta(seconds=1))
    bad = served.fix("--out", str(out), "--plan-valid-for", "7 weeks")
    assert bad.exit_code == 2 and "--plan-valid-for" in bad.output
