"""Fuzzing what ``fix`` reads: a reviewed plan.json, an audit's findings.json and snapshot.json, and what
each node answers the collector.

The seeds are real: the demo lab's evidence with its planted defects, the snapshot and findings its audit
makes, the plan made from them, and the agent document every lab node prints for ``collect``. Hypothesis
mutates the JSON structure (a value replaced by an odd one of any type, a key dropped or added, a list
element repeated, one part copied over another, text appended to a string) and checks the promises ``fix``
makes about hostile input:

- a plan.json is loaded or refused with reasons (:class:`PlanInvalid`), nothing else;
- findings and snapshot files are read or refused as invalid (``ValueError``); from whatever reads, the
  planner makes a plan that passes the same checks a reviewed plan.json does, or refuses (exit 2);
- a node's answer becomes a node or a per-node collection failure; the cluster with that node is evaluated
  without raising, and planned as above; a plan reviewed before is checked against it with reasons.

What earlier runs found (each crashed ``fix`` with a traceback) is kept as plain tests next to the code
it guards: a step action that is a list (test_resolve_validate), a snapshot whose DER table or node list
has the wrong type (tests/snapshot), a node or cluster name no step may carry, a service named outside the
documented pattern and a binding appid that is no GUID (test_plan). Bounded for CI by ``max_examples``
and a per-example ``deadline``, and derandomized so that CI runs the same examples every time; explore
new ones with ``SCALEGUARD_FUZZ_EXPLORE=1 pytest tests/remediators/test_fuzz_fix_inputs.py``.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from scaleguard.collectors.agent.convert import node_from_agent
from scaleguard.collectors.evidence import read_evidence
from scaleguard.collectors.live import parse_agent_output
from scaleguard.findings.model import FindingsFile
from scaleguard.lab.dispatch import dispatch
from scaleguard.lab.from_evidence import load_state
from scaleguard.lab.scenario import demo_scenario
from scaleguard.pipeline import AuditOptions, evaluate, load_policies
from scaleguard.remediators import PlanInputInvalid, PlanRefused, plan
from scaleguard.remediators.livecheck import live_problems
from scaleguard.remediators.model import Plan
from scaleguard.remediators.validate import PlanInvalid, load_plan
from scaleguard.remoting.channel import ChannelError
from scaleguard.remoting.inventory import InventoryNode, Transport
from scaleguard.snapshot.model import Snapshot

NOW = datetime.now(UTC)
FUZZ = settings(
    max_examples=60,
    deadline=timedelta(seconds=5),
    database=None,
    derandomize=not os.environ.get("SCALEGUARD_FUZZ_EXPLORE"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ODD: list[Any] = [
    None, True, False, 0, -1, 2**64, 1.5, "", " ", "x" * 5000, "\u202e\x07", "\x00", "0" * 40, "../../etc/passwd",
    "C:\\Windows", "WORKER\\02", "$(whoami)", "'; Remove-Item C:\\ -Recurse; '", "[", "::::", "https://h:99999",
    "SSISScaleOutWorker150[::]:0", "ssisscaleoutworker150", "9999-12-31T23:59:59Z", "{00000000-0000-0000-0000}",
    [], {}, [None], {"a": 1},
]
Path_ = tuple[Any, ...]


class Seeds:
    """The demo lab, audited and planned once for the whole module."""

    def __init__(self, folder: Path) -> None:
        evidence = demo_scenario().write(folder / "CONTOSO-SSIS")
        self.options = AuditOptions(out_dir=folder)
        self.policies = load_policies(self.options)
        self.snapshot = Snapshot(clusters=[read_evidence(evidence)])
        found, _ = evaluate(self.snapshot, self.options, NOW, policies=self.policies)
        self.findings = FindingsFile(generated_at=NOW, source="demo", findings=found)
        self.plan = json.loads(plan(self.findings, self.snapshot).to_json())
        assert self.plan["steps"], "the demo's planted defects make a plan with steps"
        self.findings_doc = json.loads(self.findings.model_dump_json())
        self.snapshot_doc = json.loads(self.snapshot.model_dump_json())
        state = load_state(evidence)
        self.agent_docs: dict[str, dict[str, Any]] = {}
        for node in self.snapshot.clusters[0].nodes:
            lab_node = state.node(node.name)
            assert lab_node is not None
            self.agent_docs[node.name] = json.loads(json.dumps(dispatch(lab_node, {"op": "collect"})))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    return Seeds(tmp_path_factory.mktemp("fuzz-fix"))


def _places(value: Any, path: Path_ = ()) -> list[Path_]:
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _places(item, (*path, index))
    return found


def _at(value: Any, path: Path_) -> Any:
    for part in path:
        value = value[part]
    return value


@dataclass(frozen=True)
class Edit:
    """One structural edit, drawn before it is known what it will edit (so it can be made in any thread):
    ``where`` and ``source`` pick a place of the document by their fraction of its places."""

    where: float
    how: str
    value: Any
    source: float
    key: str


EDITS = st.lists(
    st.builds(
        Edit,
        where=st.floats(0, 1, exclude_max=True),
        how=st.sampled_from(["replace", "replace", "append", "drop", "repeat", "copy", "add"]),
        value=st.sampled_from(ODD) | st.text(max_size=40) | st.integers(),
        source=st.floats(0, 1, exclude_max=True),
        key=st.sampled_from(["extra", "name", "port", "thumbprint", "services", "ok", "result", "changed"]),
    ),
    min_size=1,
    max_size=3,
)


def edited(document: Any, edits: list[Edit]) -> Any:
    """``document`` with ``edits`` made, one after the other."""
    doc = copy.deepcopy(document)
    for edit in edits:
        places = _places(doc)
        if not places:
            break
        path = places[int(edit.where * len(places))]
        parent, key, odd = _at(doc, path[:-1]), path[-1], copy.deepcopy(edit.value)
        if edit.how == "replace":
            parent[key] = odd
        elif edit.how == "append" and isinstance(parent[key], str):
            parent[key] += odd if isinstance(odd, str) else json.dumps(odd)
        elif edit.how == "drop":
            del parent[key]
        elif edit.how == "repeat" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        elif edit.how == "copy":
            parent[key] = copy.deepcopy(_at(doc, places[int(edit.source * len(places))]))
        elif edit.how == "add" and isinstance(parent[key], dict):
            parent[key][edit.key] = odd
    return doc


def mutated(data: st.DataObject, document: Any) -> Any:
    return edited(document, data.draw(EDITS, label="edits"))


def _plans_or_refuses(findings: FindingsFile, snapshot: Snapshot) -> None:
    try:
        made = plan(findings, snapshot)
    except (PlanRefused, PlanInputInvalid):
        event("planning refused")
        return
    event(f"planned {'no' if made.empty else 'some'} steps")
    load_plan(made.to_json().encode("utf-8"))  # a plan the planner makes holds together as a reviewed one does


@FUZZ
@given(st.data())
def test_a_mutated_plan_is_loaded_or_refused_with_reasons(seeds: Seeds, data: st.DataObject) -> None:
    document = mutated(data, seeds.plan)
    try:
        load_plan(json.dumps(document).encode("utf-8"))
    except PlanInvalid as refused:
        assert refused.errors
        event("plan refused")
    else:
        event("plan loaded")


@FUZZ
@given(st.data())
def test_mutated_audit_artefacts_are_refused_or_planned(seeds: Seeds, data: st.DataObject) -> None:
    findings_doc, snapshot_doc = seeds.findings_doc, seeds.snapshot_doc
    if data.draw(st.booleans(), label="mutate the findings (else the snapshot)"):
        findings_doc = mutated(data, findings_doc)
    else:
        snapshot_doc = mutated(data, snapshot_doc)
    try:
        findings = FindingsFile.model_validate_json(json.dumps(findings_doc))
        snapshot = Snapshot.model_validate_json(json.dumps(snapshot_doc))
    except ValueError:
        event("artefact refused as invalid")
        return
    _plans_or_refuses(findings, snapshot)


@FUZZ
@given(st.data())
def test_a_mutated_node_answer_becomes_a_node_or_a_failure_and_the_cluster_is_judged_and_planned(
    seeds: Seeds, data: st.DataObject
) -> None:
    name = data.draw(st.sampled_from(sorted(seeds.agent_docs)), label="node")
    document = mutated(data, seeds.agent_docs[name])
    inventory_node = InventoryNode(name=name, host="127.0.0.1", roles=("worker",), transport=Transport())
    try:
        parsed = parse_agent_output(json.dumps(document).encode("utf-8"), inventory_node)
    except ChannelError:
        event("answer refused: the node fails collection")
        return
    node = node_from_agent(name, parsed, insecure=False, duration_ms=1.0)
    cluster = seeds.snapshot.clusters[0]
    snapshot = Snapshot(clusters=[cluster.model_copy(update={"nodes": [node if n.name == name else n
                                                                        for n in cluster.nodes]})])
    found, _ = evaluate(snapshot, seeds.options, NOW, policies=seeds.policies)
    _plans_or_refuses(FindingsFile(generated_at=NOW, source="fuzz", findings=found), snapshot)
    # the plan reviewed before, checked against this fresh read before the first change: reasons, never a raise
    problems = live_problems(Plan.model_validate(seeds.plan), snapshot)
    assert all(isinstance(problem, str) and problem.startswith("step ") for problem in problems)


# --- what the nodes answer while a plan is applied ----------------------------------------------------------


class ApplySeeds:
    """Two plans to apply, each with the lab evidence it was made from: a master rotation (a created
    certificate referenced by later steps, imports on every worker, a binding, settings files read and
    written, restarts) and the demo's planted defects (every other kind of remediation the demo shows)."""

    def __init__(self, folder: Path) -> None:
        from fixcases import Cluster, finding, findings_file, lab_findings, lab_snapshot, lab_state, options

        self.folder = folder
        rotation = Cluster({"workers": ["WORKER01", "WORKER02"], "certs": {"master": EXPIRING}}, folder / "rotation")
        demo = demo_scenario().write(folder / "demo" / "CONTOSO-SSIS")
        failing = [f for f in lab_findings(lab_state(demo), folder) if f.status.value in ("fail", "error")]
        self.cases = {
            "master rotation": (
                rotation.evidence,
                plan(
                    findings_file(finding("SO-M07", "MASTER01", "rotate-master-certificate")),
                    lab_snapshot(lab_state(rotation.evidence)),
                    options(),
                ),
            ),
            "the demo's defects": (demo, plan(findings_file(*failing), lab_snapshot(lab_state(demo)), options())),
        }
        assert all(len(the_plan.steps) > 8 for _evidence, the_plan in self.cases.values())


EXPIRING = {"cn": ["master01.contoso.test", "MASTER01", "10.0.1.1"], "days_from": -700, "days": 710}


@pytest.fixture(scope="module")
def apply_seeds(tmp_path_factory: pytest.TempPathFactory) -> ApplySeeds:
    return ApplySeeds(tmp_path_factory.mktemp("fuzz-apply"))


class Mutating:
    """The lab's transport, but the answer to request number ``at`` gets ``edits`` (made in the executor's
    pool thread, so they are drawn beforehand)."""

    def __init__(self, state: Any, edits: list[Edit], at: int) -> None:
        from fixcases import LabTransport

        self.inner, self.edits, self.at, self.count, self.hit = LabTransport(state), edits, at, 0, False

    def client(self, cluster: str, node: str) -> Any:
        inner, outer = self.inner.client(cluster, node), self

        class Client:
            def request(self, payload: dict[str, Any]) -> dict[str, Any]:
                answer = inner.request(payload)
                outer.count += 1
                if outer.count != outer.at:
                    return answer
                outer.hit = True
                changed = edited({"answer": answer}, outer.edits).get("answer")
                return changed if isinstance(changed, dict) else {"answer": changed}

        return Client()

    def close(self) -> None:
        pass


@pytest.mark.parametrize("case", ["master rotation", "the demo's defects"])
@settings(FUZZ, max_examples=30, deadline=timedelta(seconds=20))
@given(data=st.data())
def test_a_mutated_answer_while_applying_ends_every_step_and_can_be_undone(
    apply_seeds: ApplySeeds, case: str, data: st.DataObject
) -> None:
    import tempfile

    from fixcases import LabTransport, lab_snapshot, lab_state

    from scaleguard.apply.journal import Journal
    from scaleguard.apply.runner import Executor
    from scaleguard.apply.undo import pending_entries, undo_run

    evidence, the_plan = apply_seeds.cases[case]
    state = lab_state(evidence)
    rounds = data.draw(st.integers(1, 8), label="which answer")
    transport = Mutating(state, data.draw(EDITS, label="edits"), rounds)
    with tempfile.TemporaryDirectory(dir=apply_seeds.folder) as scratch, Journal(Path(scratch) / "j.sqlite") as journal:
        report = Executor(the_plan, transport, journal, source="fuzz", current=lab_snapshot(state)).run()
        assert all(e.status != "running" for e in journal.entries(report.run_id))
        event("an answer was mutated" if transport.hit else "no answer was mutated (the run stopped before)")
        event(f"run {report.status}")
        undone = undo_run(report.run_id, LabTransport(state), journal)
        left = pending_entries(journal, report.run_id)
        assert not left or undone.errors or undone.notes, "a change still in effect after --undo, unexplained"


def test_a_read_file_answer_whose_content_is_not_ascii_is_no_content() -> None:
    """Found by the fuzz test above: ``b64decode`` raises a plain ValueError (not binascii.Error) for a str
    with a non-ASCII character, which ended the fix run instead of treating the answer as unreadable."""
    from scaleguard.apply.runner import _file_content

    assert _file_content({"ok": True, "result": {"content_b64": "\x80"}}) is None
    assert _file_content({"ok": True, "result": {"content_b64": "!!"}}) is None
    assert _file_content({"ok": True, "result": {"content_b64": "YWI="}}) == b"ab"
