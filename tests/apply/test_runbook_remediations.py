"""Every remediation the fix e2e tests apply over WinRM, carried out instead as runbooks: each case's cluster
(the same specs as ``tests/remediators/test_fix_e2e.py``), its plan made offline from the audit of its
evidence, every wave run on a lab of those nodes and imported, and the nodes audited again: what the plan
addresses passes, as after ``fix --apply``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from scaleguard.apply.runbook_script import parse_runbook
from scaleguard.cli.main import app
from scaleguard.findings.model import Status
from scaleguard.lab.from_evidence import load_state
from scaleguard.lab.runbook import run_runbook

REMEDIATORS = Path(__file__).resolve().parents[1] / "remediators"
if str(REMEDIATORS) not in sys.path:
    sys.path.append(str(REMEDIATORS))
from fixcases import Cluster, lab_findings  # noqa: E402
from test_fix_e2e import CASES, MANUAL_ONLY  # noqa: E402


def cli(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("remediation", sorted(CASES))
def test_every_remediation_fixes_its_defect_as_runbooks(tmp_path: Path, remediation: str) -> None:
    spec, policies = CASES[remediation]
    cluster = Cluster(spec, tmp_path / "evidence")
    assert {p for p, _ in cluster.failing()} >= policies
    state = load_state(cluster.folder)
    audited = cli("audit", "--evidence", cluster.evidence, "--out", tmp_path / "audit", "--no-progress")
    assert audited.exit_code in (0, 1), audited.output  # a low-severity finding alone does not fail the audit
    planned = cli("fix", "--findings", tmp_path / "audit" / "findings.json", "--emit-runbook", tmp_path / "rb")
    assert planned.exit_code == 0, planned.output
    journal, wave = tmp_path / "j.sqlite", 1
    while True:
        for script in sorted((tmp_path / "rb" / f"wave-{wave:02d}").glob("*.ps1")):
            data = parse_runbook(script.read_text(encoding="ascii"))
            node = state.node(data.node, data.cluster)
            assert node is not None
            document, code = run_runbook(node, data)
            assert code == 0, document
            script.with_suffix(".result.json").write_text(json.dumps(document), encoding="ascii")
        imported = cli("fix", "--import-results", tmp_path / "rb", "--journal", journal)
        assert imported.exit_code == 0, imported.output
        if "no wave is left" in imported.output:
            break
        wave += 1
    failing = {(f.policy, f.node) for f in lab_findings(state, tmp_path) if f.status in (Status.FAIL, Status.ERROR)}
    assert {p for p, _ in failing} <= MANUAL_ONLY, failing


def test_a_ca_returned_as_the_new_master_certificate_for_root_is_refused(tmp_path: Path) -> None:
    """A master rotation makes its certificate in Root; a result that says it made a CA there is refused."""
    import base64
    import hashlib

    from scaleguard.lab.certs import CertSpec, make_certificate

    cluster = Cluster(CASES["rotate-master-certificate"][0], tmp_path / "evidence")
    state = load_state(cluster.folder)
    cli("audit", "--evidence", cluster.evidence, "--out", tmp_path / "audit", "--no-progress")
    planned = cli("fix", "--findings", tmp_path / "audit" / "findings.json", "--emit-runbook", tmp_path / "rb")
    assert planned.exit_code == 0, planned.output
    for script in sorted((tmp_path / "rb" / "wave-01").glob("*.ps1")):
        data = parse_runbook(script.read_text(encoding="ascii"))
        node = state.node(data.node, data.cluster)
        assert node is not None
        document, _code = run_runbook(node, data)
        for step in document["steps"]:
            if data.steps[[s.id for s in data.steps].index(step["id"])].action == "create_certificate":
                assert step["result"]["store"] == "Root"
                ca = make_certificate(CertSpec(("Evil Root CA",), ca=True, key_seed=11))
                step["result"].update(
                    thumbprint=hashlib.sha1(ca.der).hexdigest().upper(), der_b64=base64.b64encode(ca.der).decode()
                )
        script.with_suffix(".result.json").write_text(json.dumps(document), encoding="ascii")
    refused = cli("fix", "--import-results", tmp_path / "rb", "--journal", tmp_path / "j.sqlite")
    assert refused.exit_code == 2, refused.output
    assert "a plan never imports a CA into a Root store" in refused.output.replace("\n", " ")
    assert not (tmp_path / "j.sqlite").exists()
