"""Applying plans to lab nodes (state and handlers in process): order, rollback per unit, undo, journal.

"Leaves every node as before" is checked twice: on the raw node state (configs, stores, key ACLs,
bindings, services) and by re-auditing — collecting through the agent document and evaluating the real
policies — which must give the same verdicts as before the run.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from fixcases import (
    LabTransport,
    cluster_state,
    finding,
    findings_file,
    lab_findings,
    lab_snapshot,
    lab_state,
    options,
    verdicts,
)

from scaleguard.apply.journal import Journal
from scaleguard.apply.runner import Executor
from scaleguard.apply.transport import OutcomeUnknown
from scaleguard.apply.undo import pending_entries, undo_run
from scaleguard.findings.model import Finding, Status
from scaleguard.remediators import plan
from scaleguard.remediators.model import Plan

EXPIRING = {"cn": ["master01.contoso.test", "MASTER01", "10.0.1.1"], "days_from": -700, "days": 710}
BACKUP_ROOT = "C:\\ProgramData\\scaleguard\\backup\\"


class Setup:
    def __init__(self, cluster: Any, tmp_path: Path, spec: dict[str, Any]) -> None:
        self.c = cluster(spec)
        self.state = lab_state(self.c.evidence)
        self.transport = LabTransport(self.state)
        self.journal = Journal(tmp_path / "journal.sqlite")
        self.folder = tmp_path
        self.before_state = cluster_state(self.state)
        self.before = lab_findings(self.state, tmp_path)

    def plan(self, *found: Finding) -> Plan:
        current = lab_findings(self.state, self.folder)
        items = list(found) or [f for f in current if f.status in (Status.FAIL, Status.ERROR)]
        return plan(findings_file(*items), lab_snapshot(self.state), options())

    def apply(self, the_plan: Plan, transport: Any = None) -> Any:
        live = lab_snapshot(self.state)
        return Executor(the_plan, transport or self.transport, self.journal, source="test", current=live).run()

    def after(self) -> dict[tuple[str, str], str]:
        return verdicts(lab_findings(self.state, self.folder))


@pytest.fixture
def setup(cluster: Any, tmp_path: Path) -> Any:
    made: list[Setup] = []

    def make(spec: dict[str, Any]) -> Setup:
        made.append(Setup(cluster, tmp_path / f"s{len(made)}", spec))
        return made[-1]

    yield make
    for item in made:
        item.journal.close()


def writes_have_backups(s: Setup) -> None:
    """Every config the run wrote has a backup on its node holding exactly the bytes before the write."""
    for run in s.journal.runs():
        for entry in s.journal.entries(run.run_id):
            if (
                entry.action == "write_config"
                and entry.status == "done"
                and entry.result
                and entry.result.get("changed")
            ):
                node = s.state.node(entry.node)
                backup = node.files[BACKUP_ROOT + entry.request["backup_name"]]
                assert entry.result["backup_path"] == BACKUP_ROOT + entry.request["backup_name"]
                assert hashlib.sha256(backup).hexdigest() == entry.result["before_sha256"]


def test_master_rotation_applies_in_order_and_audits_clean(setup: Any) -> None:
    s = setup({"workers": ["WORKER01", "WORKER02"], "certs": {"master": EXPIRING}})
    assert s.before and ("SO-M07", "MASTER01") in {(f.policy, f.node) for f in s.before if f.status is Status.FAIL}
    the_plan = s.plan(finding("SO-M07", "MASTER01", "rotate-master-certificate"))
    report = s.apply(the_plan)
    assert report.status == "done" and set(report.units.values()) == {"done"}
    sent = [(node, p["op"]) for node, p in s.transport.actions() if p["op"] != "read_file"]
    for node in ("MASTER01", "WORKER01", "WORKER02"):  # each node's steps in plan order
        assert [op for n, op in sent if n == node] == [st.action for st in the_plan.steps if st.node == node]
    # trust before use: both workers trust the new certificate before the master binds it, and the
    # master serves it (restarted) before any worker is re-pinned to it
    assert max(i for i, (n, op) in enumerate(sent) if op == "import_certificate") < sent.index(
        ("MASTER01", "set_binding")
    )
    assert sent.index(("MASTER01", "restart_service")) < min(
        i for i, (n, op) in enumerate(sent) if n != "MASTER01" and op == "write_config"
    )
    after = s.after()
    assert after[("SO-M07", "MASTER01")] == "pass"
    assert not [k for k, v in after.items() if v in ("fail", "error")]
    new_thumb = report.steps["s001"].result["thumbprint"]
    master = s.state.node("MASTER01")
    assert master.bindings[0].cert_hash == new_thumb and master.bindings[0].store == "Root"
    assert master.bindings[0].app_id == "{a1f96506-93e0-4c91-9171-05a2f6739e13}"
    writes_have_backups(s)
    second = s.plan()
    assert second.empty  # nothing left to do


@pytest.mark.parametrize(
    ("node", "op", "nth"),
    [("MASTER01", "set_binding", 1), ("MASTER01", "restart_service", 1), ("WORKER02", "write_config", 1)],
    ids=["binding-add", "service-restart", "config-write-on-second-worker"],
)
def test_a_failure_midway_leaves_every_node_as_before(setup: Any, node: str, op: str, nth: int) -> None:
    s = setup({"workers": ["WORKER01", "WORKER02"], "certs": {"master": EXPIRING}})
    s.state.node(node).faults.fail_ops = {op: nth}
    report = s.apply(s.plan(finding("SO-M07", "MASTER01", "rotate-master-certificate")))
    assert report.units == {"u01": "failed"} and report.status == "failed" and not report.rollback_errors
    assert report.stopped_nodes == [f"CLUSTER/{node}"]
    assert cluster_state(s.state) == s.before_state
    assert s.after() == verdicts(s.before)
    writes_have_backups(s)
    # nothing was left for an undo to do
    run_id = s.journal.runs()[-1].run_id
    assert pending_entries(s.journal, run_id) == []


def test_other_nodes_continue_and_dependents_are_skipped(setup: Any) -> None:
    s = setup(
        {
            "workers": ["WORKER01", "WORKER02"],
            "certs": {"old": {"cn": ["MASTER01"]}},
            "nodes": {
                "MASTER01": {"master_settings": {"SSLCertThumbprint": "{master|lrm}"}},
                "WORKER01": {"root_add": ["old"], "worker_settings": {"MasterHttpsCertThumbprint": "{old}"}},
                "WORKER02": {"worker_service": {"State": "Stopped"}},
            },
        }
    )
    s.state.node("MASTER01").faults.fail_ops = {"restart_service": 1}
    the_plan = s.plan()
    assert [(u.id, u.remediation, u.depends_on) for u in the_plan.units] == [
        ("u01", "normalize-config-thumbprint", []),
        ("u02", "repin-worker-master-thumbprint", ["u01"]),
        ("u03", "start-service", []),
    ]
    report = s.apply(the_plan)
    assert report.units == {"u01": "failed", "u02": "skipped", "u03": "done"}
    now = cluster_state(s.state)
    assert now["MASTER01"] == s.before_state["MASTER01"] and now["WORKER01"] == s.before_state["WORKER01"]
    assert s.state.node("WORKER02").services[0].state == "Running"
    skipped = [e for e in s.journal.entries(report.run_id) if e.status == "skipped"]
    assert {e.step_id for e in skipped} == {st.id for st in the_plan.steps if st.unit == "u02"}


def test_a_failing_node_rolls_back_its_units_that_already_succeeded(setup: Any) -> None:
    s = setup(
        {
            "nodes": {
                "WORKER01": {
                    "root_remove": ["WORKER01"],
                    "key_readers": {"WORKER01": ["NT AUTHORITY\\SYSTEM"]},
                }
            }
        }
    )
    s.state.node("WORKER01").faults.fail_ops = {"grant_key_read": 1}
    the_plan = s.plan()
    assert [u.remediation for u in the_plan.units] == ["import-root-certificate", "grant-worker-key-access"]
    report = s.apply(the_plan)
    assert report.units == {"u01": "rolled_back", "u02": "failed"}
    assert cluster_state(s.state) == s.before_state


def test_an_unknown_outcome_is_rolled_back_from_the_backup(setup: Any) -> None:
    s = setup({"nodes": {"WORKER01": {"worker_settings": {"MasterHttpsCertThumbprint": "{master|spaced}"}}}})

    class LostAnswer(LabTransport):
        """The write happens on the node but its answer never comes back."""

        def client(self, cluster: str, node: str) -> Any:
            inner = super().client(cluster, node)

            class Client:
                def request(self, payload: dict[str, Any]) -> dict[str, Any]:
                    answer = inner.request(payload)
                    if any(a["op"] == "write_config" for a in payload.get("actions", [payload])):
                        raise OutcomeUnknown("connection reset after the request was sent")
                    return answer

            return Client()

    report = s.apply(s.plan(), LostAnswer(s.state))
    assert report.steps["s001"].status == "unknown" and report.units == {"u01": "failed"}
    assert cluster_state(s.state) == s.before_state


class Tampering(LabTransport):
    """The node does what it is asked; its answer to the first request with ``op`` is replaced by ``tamper``'s."""

    def __init__(self, state: Any, op: str, tamper: Any) -> None:
        super().__init__(state)
        self.op, self.tamper, self.done = op, tamper, False

    def client(self, cluster: str, node: str) -> Any:
        inner, outer = super().client(cluster, node), self

        class Client:
            def request(self, payload: dict[str, Any]) -> dict[str, Any]:
                answer = inner.request(payload)
                if not outer.done and any(a["op"] == outer.op for a in payload.get("actions", [payload])):
                    outer.done = True
                    return outer.tamper(answer)  # type: ignore[no-any-return]
                return answer

        return Client()


def _not_base64(answer: dict[str, Any]) -> dict[str, Any]:
    results = [{**r, "result": {**r["result"], "content_b64": "@@not base64@@"}} for r in answer["results"]]
    return {**answer, "results": results}


def _raises(_answer: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("a fault no one foresaw, after the node acted")


def _ok_says(value: Any) -> Any:
    def tamper(answer: dict[str, Any]) -> dict[str, Any]:
        return {**answer, "results": [{**r, "ok": value} for r in answer["results"]]}

    return tamper


def _only_the_first_result(answer: dict[str, Any]) -> dict[str, Any]:
    assert len(answer["results"]) > 1 and all(r["ok"] is True for r in answer["results"])
    return {**answer, "results": answer["results"][:1]}


def _flag_says(name: str, value: Any) -> Any:
    def tamper(answer: dict[str, Any]) -> dict[str, Any]:
        return {**answer, "results": [{**r, "result": {**r["result"], name: value}} for r in answer["results"]]}

    return tamper


@pytest.mark.parametrize(
    ("op", "tamper", "status"),
    [("read_file", _not_base64, {"s001": "failed"}), ("write_config", _raises, {"s001": "unknown"}),
     ("write_config", _ok_says("false"), {"s001": "unknown"}), ("write_config", _ok_says(None), {"s001": "unknown"}),
     ("write_config", _flag_says("changed", "false"), {"s001": "unknown"}),
     ("restart_service", _flag_says("restarted", None), {"s001": "rolled_back", "s002": "unknown"}),
     ("write_config", _only_the_first_result, {"s001": "rolled_back", "s002": "unknown"})],
    ids=["a read answer that is not base64", "an unforeseen error after the write",
         "ok is the text 'false' (it counted as done)", "ok is null (it counted as a plain failure)",
         "changed is the text 'false' (undo read it as changed)",
         "restarted is null (undo read it as not restarted)",
         "a batch answer that stops early without a failure (the restart counted as skipped, the unit done)"],
)
def test_a_hostile_or_broken_answer_fails_the_unit_and_leaves_the_node_as_before(
    setup: Any, op: str, tamper: Any, status: dict[str, str]
) -> None:
    """Found by review after fuzzing: the first two used to escape the executor with the round's steps still
    running; the rest were taken as answers."""
    s = setup({"nodes": {"WORKER01": {"worker_settings": {"MasterHttpsCertThumbprint": "{master|spaced}"}}}})
    report = s.apply(s.plan(), Tampering(s.state, op, tamper))
    assert report.units == {"u01": "failed"}
    assert {step: report.steps[step].status for step in status} == status
    assert cluster_state(s.state) == s.before_state
    assert all(e.status != "running" for e in s.journal.entries(report.run_id))


def _results(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [r["result"] for r in answer.get("results", []) if isinstance(r.get("result"), dict)]


def _created_without_thumbprint(answer: dict[str, Any]) -> dict[str, Any]:
    for result in _results(answer):
        if "der_b64" in result:
            result["thumbprint"] = None
    return answer


def _binding_without_its_previous_hash(answer: dict[str, Any]) -> dict[str, Any]:
    for result in _results(answer):
        if isinstance(result.get("previous"), dict):
            result["previous"].pop("cert_hash", None)
    return answer


def test_a_created_certificate_the_answer_does_not_name_is_an_unknown_outcome(setup: Any) -> None:
    """Found by fuzzing the answers: later steps would have bound ``None``, and rolling back raised KeyError."""
    s = setup({"workers": ["WORKER01"], "certs": {"master": EXPIRING}})
    the_plan = s.plan(finding("SO-M07", "MASTER01", "rotate-master-certificate"))
    assert the_plan.steps[0].action == "create_certificate"
    report = s.apply(the_plan, Tampering(s.state, "create_certificate", _created_without_thumbprint))
    assert report.steps["s001"].status == "unknown"
    assert "the node's answer cannot be used" in report.steps["s001"].detail
    assert report.units == {"u01": "failed"}
    assert all(e.status != "running" for e in s.journal.entries(report.run_id))
    now = cluster_state(s.state)
    assert now["WORKER01"] == s.before_state["WORKER01"]  # nothing was imported from an answer not understood


def test_a_done_step_whose_answer_does_not_say_what_it_replaced_fails_its_rollback(setup: Any) -> None:
    """Found by fuzzing the answers: the rollback raised KeyError and left the run's other steps as they were."""
    s = setup({"workers": ["WORKER01"], "certs": {"master": EXPIRING}})
    s.state.node("MASTER01").faults.fail_ops = {"restart_service": 1}
    the_plan = s.plan(finding("SO-M07", "MASTER01", "rotate-master-certificate"))
    report = s.apply(the_plan, Tampering(s.state, "set_binding", _binding_without_its_previous_hash))
    assert report.units == {"u01": "rollback_failed"}
    [binding] = [st.id for st in the_plan.steps if st.action == "set_binding"]
    assert report.steps[binding].status == "rollback_failed"
    assert any("set_binding does not say what it replaced" in e for e in report.rollback_errors)
    assert all(e.status != "running" for e in s.journal.entries(report.run_id))
    undone = undo_run(report.run_id, LabTransport(s.state), s.journal)  # an undo cannot call it undone either
    assert not undone.ok and any("set_binding does not say what it replaced" in e for e in undone.errors)


def test_a_revert_that_fails_unforeseen_fails_that_rollback_not_the_run(setup: Any) -> None:
    s = setup({"nodes": {"WORKER01": {"worker_settings": {"MasterHttpsCertThumbprint": "{master|spaced}"}}}})
    s.state.node("WORKER01").faults.fail_ops = {"restart_service": 1}

    def broken(_answer: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("the channel broke while restoring")

    report = s.apply(s.plan(), Tampering(s.state, "restore_file", broken))
    assert report.units == {"u01": "rollback_failed"}
    assert any("RuntimeError: the channel broke while restoring" in e for e in report.rollback_errors)
    assert all(e.status != "running" for e in s.journal.entries(report.run_id))


def test_interrupted_run_is_undone_and_a_second_undo_does_nothing(setup: Any) -> None:
    s = setup({"workers": ["WORKER01", "WORKER02"], "certs": {"master": EXPIRING}})

    class Interrupting(LabTransport):
        def __init__(self, state: Any, after: int) -> None:
            super().__init__(state)
            self.after = after

        def client(self, cluster: str, node: str) -> Any:
            inner = super().client(cluster, node)
            outer = self

            class Client:
                def request(self, payload: dict[str, Any]) -> dict[str, Any]:
                    if len(outer.requests) >= outer.after:
                        raise KeyboardInterrupt
                    return inner.request(payload)

            return Client()

    the_plan = s.plan(finding("SO-M07", "MASTER01", "rotate-master-certificate"))
    with pytest.raises(KeyboardInterrupt):
        # rounds: create, one import per worker; Ctrl-C as the master's binding/config/restart round leaves
        s.apply(the_plan, Interrupting(s.state, after=3))
    run = s.journal.runs()[-1]
    assert run.status == "interrupted"
    assert cluster_state(s.state) != s.before_state
    assert [e.status for e in s.journal.entries(run.run_id)][-1] == "unknown"
    report = undo_run(run.run_id, LabTransport(s.state), s.journal)
    assert report.ok and report.reverted
    assert cluster_state(s.state) == s.before_state
    assert s.after() == verdicts(s.before)
    again = LabTransport(s.state)
    second = undo_run(run.run_id, again, s.journal)
    assert second.reverted == [] and again.requests == []


def test_undo_of_a_successful_run_restores_everything(setup: Any) -> None:
    s = setup(
        {
            "nodes": {
                "MASTER01": {
                    "bindings": [{"ip_port": "0.0.0.0:8391", "cert": "master", "store": "MY"}],
                    "my_add": ["master"],
                    "master_service": {"StartMode": "Manual"},
                },
                "WORKER01": {"root_remove": ["WORKER01"], "my_add": ["stale"]},
            },
            "certs": {"stale": {"cn": ["WORKER01"], "san_dns": ["worker01.contoso.test"], "san_ip": ["10.0.2.1"]}},
        }
    )
    report = s.apply(s.plan())
    assert report.status == "done"
    assert cluster_state(s.state) != s.before_state
    undone = undo_run(report.run_id, LabTransport(s.state), s.journal)
    assert undone.ok and not undone.errors
    assert cluster_state(s.state) == s.before_state
    assert s.journal.run(undone.run_id).undo_of == report.run_id  # type: ignore[union-attr]


def test_the_journal_keeps_references_not_secrets(setup: Any, tmp_path: Path, monkeypatch: Any) -> None:
    from scaleguard.lab.certs import CertSpec, make_certificate, pfx_for_server_2016
    from scaleguard.remediators.model import SecretRef
    from scaleguard.remediators.pfx import load_master_pfx

    s = setup({"certs": {"master": EXPIRING}})
    issued = make_certificate(CertSpec(("master01.contoso.test",), san_dns=("MASTER01",), key_seed=91))
    pfx_file = tmp_path / "m.pfx"
    pfx_file.write_bytes(
        pfx_for_server_2016(issued, b"Pfx-Pass-123")
    )
    monkeypatch.setenv("SG_TEST_PFX", "Pfx-Pass-123")
    pfx = load_master_pfx(pfx_file, "Pfx-Pass-123", SecretRef(secret_env="SG_TEST_PFX"))
    the_plan = plan(
        findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")),
        lab_snapshot(s.state),
        options(master_pfx=pfx),
    )
    report = s.apply(the_plan)
    assert report.status == "done"
    assert s.state.node("MASTER01").find_cert("Root", issued.thumbprint).has_private_key
    dump = Path(s.journal.path).read_bytes()
    assert b"Pfx-Pass-123" not in dump
    assert base64.b64encode(pfx_file.read_bytes())[:60] not in dump
    first = s.journal.entries(report.run_id)[0]
    assert first.request["password"] == {"secret": "SG_TEST_PFX"}
    assert first.request["pfx_b64"] == {"file": str(pfx_file)}
    assert json.loads(s.journal.plan_json(report.run_id) or "{}")["steps"][0]["params"]["password"] == {
        "secret_env": "SG_TEST_PFX",
        "secret_prompt": None,
    }


def test_a_previous_binding_that_cannot_be_recreated_is_reported_not_hidden(setup: Any) -> None:
    """A binding to a certificate its store does not hold is refused (netsh would say error 1312), so the broken binding
    a repair replaced cannot be put back; the undo says so and leaves the working binding in place."""
    s = setup({"nodes": {"MASTER01": {"bindings": [{"ip_port": "0.0.0.0:8391", "cert": "master", "store": None}]}}})
    report = s.apply(s.plan())
    assert report.status == "done"
    undone = undo_run(report.run_id, LabTransport(s.state), s.journal)
    assert not undone.ok and "binding not changed" in undone.errors[0]
    assert s.state.node("MASTER01").bindings[0].store == "Root"
    assert [e.status for e in s.journal.entries(undone.run_id)].count("failed") == 1


class SlowLabTransport(LabTransport):
    """Every request takes ``delay_s`` (a WinRM round trip), and the most requests in flight at once is kept."""

    def __init__(self, state: Any, delay_s: float) -> None:
        super().__init__(state)
        self.delay_s = delay_s
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = __import__("threading").Lock()

    def client(self, cluster: str, node: str) -> Any:
        inner = super().client(cluster, node)
        outer = self

        class Client:
            def request(self, payload: dict[str, Any]) -> dict[str, Any]:
                with outer._lock:
                    outer.in_flight += 1
                    outer.most_in_flight = max(outer.most_in_flight, outer.in_flight)
                try:
                    __import__("time").sleep(outer.delay_s)
                    return inner.request(payload)  # type: ignore[no-any-return]
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

        return Client()


@pytest.mark.parametrize("concurrency", [1, 8])
def test_undo_reverts_nodes_in_parallel_and_use_before_trust(setup: Any, concurrency: int) -> None:
    """A master rotation undone: each worker's pin goes back before the master's binding does, and the
    master's binding goes back before the workers stop trusting the new certificate (the reverse of
    trust before use); nodes are reverted at once up to --concurrency, and everything is as before."""
    s = setup({"workers": ["WORKER01", "WORKER02", "WORKER03"], "certs": {"master": EXPIRING}})
    report = s.apply(s.plan(finding("SO-M07", "MASTER01", "rotate-master-certificate")))
    assert report.status == "done"
    slow = SlowLabTransport(s.state, delay_s=0.05)
    undone = undo_run(report.run_id, slow, s.journal, concurrency=concurrency)
    assert undone.ok, undone.errors
    assert cluster_state(s.state) == s.before_state
    assert slow.most_in_flight == 1 if concurrency == 1 else slow.most_in_flight > 1
    reverts = [(e.node, e.action) for e in s.journal.entries(undone.run_id)]  # in the order they began
    binding = reverts.index(("MASTER01", "set_binding"))
    for worker in ("WORKER01", "WORKER02", "WORKER03"):
        assert reverts.index((worker, "restore_file")) < binding
        assert binding < reverts.index((worker, "remove_certificate"))

