"""Runbooks as files: every script of every wave of the demo plan parses as PowerShell, the data line is
the only node-specific text and holds no code, the lab refuses any other script, and a result that does
not check out is refused before anything is journaled.

The waves here run on a lab state in this process (:func:`run_runbook`, what the lab's WinRM host calls
for a runbook); ``test_runbook_e2e.py`` runs them over WinRM.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from scaleguard.apply.runbook_script import (
    DATA_PREFIX,
    NotARunbook,
    RunbookData,
    parse_runbook,
    runbook_parts,
    runbook_script,
)
from scaleguard.cli.main import app
from scaleguard.lab.certs import CertSpec, make_certificate
from scaleguard.lab.from_evidence import load_state
from scaleguard.lab.runbook import RunbookRefused, run_runbook
from scaleguard.lab.scenario import demo_scenario
from scaleguard.lab.state import LabState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from powershell_grammar import grammar_problems  # noqa: E402

HOSTILE = "'; Remove-Item -Recurse -Force C:\\ ; $(Stop-Computer) #"
DATA_LINE = re.compile(r"^\$RunbookData = '[A-Za-z0-9+/]+={0,2}'$", re.M)


def cli(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, LabState]:
    """The demo cluster's evidence, its plan (made offline) and a lab state of the same nodes."""
    evidence = demo_scenario(defects=True).write(tmp_path / "CONTOSO-SSIS")
    assert cli("audit", "--evidence", evidence, "--out", tmp_path / "audit", "--no-progress").exit_code == 1
    assert cli("fix", "--findings", tmp_path / "audit" / "findings.json", "--out", tmp_path / "plan").exit_code == 0
    return tmp_path / "plan" / "plan.json", load_state(evidence)


def run_wave(state: LabState, folder: Path, wave: int) -> None:
    for script in sorted((folder / f"wave-{wave:02d}").glob("*.ps1")):
        data = parse_runbook(script.read_text(encoding="ascii"))
        node = state.node(data.node, data.cluster)
        assert node is not None
        document, _code = run_runbook(node, data)
        script.with_suffix(".result.json").write_text(json.dumps(document), encoding="ascii")


def repin_worker02(state: LabState, value: bytes) -> None:
    """WORKER02's MasterHttpsCertThumbprint changed on the node after the plan was made."""
    worker = state.node("WORKER02")
    assert worker is not None and worker.worker_config is not None
    worker.worker_config = re.sub(
        rb"<MasterHttpsCertThumbprint>[0-9A-F]{40}<", b"<MasterHttpsCertThumbprint>" + value + b"<",
        worker.worker_config,
    )


def emit(plan: Path, folder: Path) -> None:
    emitted = cli("fix", "--plan", plan, "--emit-runbook", folder)
    assert emitted.exit_code == 0, emitted.output


def first_wave_run(demo: tuple[Path, LabState], tmp_path: Path) -> tuple[LabState, Path, Path]:
    """The demo plan's runbooks emitted into ``tmp_path/rb`` and their first wave run in the lab; the
    lab state, the runbook folder and a journal path that nothing has written yet."""
    plan, state = demo
    folder = tmp_path / "rb"
    emit(plan, folder)
    run_wave(state, folder, 1)
    return state, folder, tmp_path / "j.sqlite"


def every_wave(plan: Path, state: LabState, folder: Path, journal: Path) -> list[Path]:
    emit(plan, folder)
    wave = 1
    while True:
        run_wave(state, folder, wave)
        imported = cli("fix", "--import-results", folder, "--journal", journal)
        assert imported.exit_code == 0, imported.output
        if "no wave is left" in imported.output:
            return sorted(folder.glob("wave-*/*.ps1"))
        wave += 1


def test_a_master_pfx_is_refused_rather_than_left_out_of_the_runbook_plan(demo: Any, tmp_path: Path) -> None:
    pfx = tmp_path / "master.pfx"
    pfx.write_bytes(b"not read: the flags are refused first")
    refused = cli(
        "fix", "--findings", tmp_path / "audit" / "findings.json", "--master-pfx", pfx,
        "--emit-runbook", tmp_path / "rb",
    )
    assert refused.exit_code == 2
    assert "--master-pfx cannot go into a runbook" in refused.output
    assert not (tmp_path / "rb").exists()


def test_every_runbook_of_the_demo_plan_passes_the_grammar_check(demo: Any, tmp_path: Path) -> None:
    plan, state = demo
    scripts = every_wave(plan, state, tmp_path / "rb", tmp_path / "j.sqlite")
    assert {p.parent.name for p in scripts} == {"wave-01", "wave-02", "wave-03"}
    assert len(scripts) == 4  # WORKER02 and WORKER03, then MASTER01, then WORKER03 again
    for script in scripts:
        text = script.read_text(encoding="ascii")
        assert grammar_problems(text) == [], script
        assert parse_runbook(text).node == script.stem


def test_the_data_line_is_the_only_node_specific_text(demo: Any, tmp_path: Path) -> None:
    plan, _state = demo
    emit(plan, tmp_path / "rb")
    head, tail = runbook_parts()
    texts = [p.read_text(encoding="ascii") for p in sorted((tmp_path / "rb" / "wave-01").glob("*.ps1"))]
    assert len(texts) == 2
    for text in texts:
        assert text.startswith(head) and text.endswith(tail)
        assert len(DATA_LINE.findall(text)) == 1
        middle = text[len(head) : len(text) - len(tail)]
        assert DATA_LINE.fullmatch(middle.strip())
    assert texts[0] != texts[1]


def test_the_runbook_carries_the_agent_byte_for_byte() -> None:
    agent = (Path(__file__).resolve().parents[2] / "scaleguard" / "apply" / "agent" / "actions.ps1").read_text()
    _head, tail = runbook_parts()
    body = agent.split("param([string]$RequestJson)\n", 1)[1].split("# --- entry point", 1)[0]
    assert tail.startswith(body) and "function Invoke-AgentRequest" in body
    assert "$RequestJson" not in tail  # the entry point that reads a request is left out


def test_a_hostile_plan_value_ends_up_only_inside_the_base64_data(demo: Any, tmp_path: Path) -> None:
    plan, _state = demo
    raw = json.loads(plan.read_text(encoding="utf-8"))
    step = next(s for s in raw["steps"] if s["id"] == "s011")  # WORKER02's re-pin: its "before" is free node text
    step["expect"]["value"] = HOSTILE
    hostile = tmp_path / "hostile-plan.json"
    hostile.write_text(json.dumps(raw), encoding="utf-8")
    emit(hostile, tmp_path / "rb")
    text = (tmp_path / "rb" / "wave-01" / "WORKER02.ps1").read_text(encoding="ascii")
    for needle in ("Remove-Item -Recurse -Force C:", "Stop-Computer", HOSTILE):
        assert needle not in text
    data = parse_runbook(text)
    assert any(getattr(s.check, "expected", None) == HOSTILE for s in data.steps)
    encoded = text.split(DATA_PREFIX, 1)[1].split("'", 1)[0]
    assert json.dumps(HOSTILE)[1:-1] in base64.b64decode(encoded).decode("ascii")


def test_the_lab_runs_only_runbooks_scaleguard_wrote(demo: Any, tmp_path: Path) -> None:
    plan, state = demo
    emit(plan, tmp_path / "rb")
    text = (tmp_path / "rb" / "wave-01" / "WORKER02.ps1").read_text(encoding="ascii")
    tampered = text.replace("function Test-ThisNode", "function Test-ThisNod3", 1)
    with pytest.raises(NotARunbook):
        parse_runbook(tampered)
    head, tail = runbook_parts()
    with pytest.raises(NotARunbook, match="not base64"):
        parse_runbook(f"{head}{DATA_PREFIX}'; Remove-Item C:\\ #'\n{tail}")
    with pytest.raises(NotARunbook, match="not valid"):
        parse_runbook(f"{head}{DATA_PREFIX}{base64.b64encode(b'{}').decode()}'\n{tail}")
    data = parse_runbook(text)
    other = state.node("WORKER03")
    assert other is not None
    with pytest.raises(RunbookRefused, match="this runbook is for WORKER02"):
        run_runbook(other, data)
    other.name = "10.0.0.12"  # a node known by its address: Windows' names never match it, nor does the lab
    with pytest.raises(RunbookRefused, match="this runbook is for 10.0.0.12"):
        run_runbook(other, data.model_copy(update={"node": "10.0.0.12"}))
    assert runbook_script(RunbookData.model_validate(json.loads(data.to_json()))) == text


# --- hostile result files --------------------------------------------------------------------------------


def _ca_result(result: dict[str, Any]) -> None:
    ca = make_certificate(CertSpec(("Evil Root CA",), ca=True, key_seed=7))
    result["store"] = "Root"
    result["thumbprint"] = __import__("hashlib").sha1(ca.der).hexdigest().upper()
    result["der_b64"] = base64.b64encode(ca.der).decode()


def _a_flag_as_text(document: dict[str, Any]) -> None:
    """The first applied step whose answer carries a yes/no field says it as text (undo would read "no" as yes)."""
    from scaleguard.apply.inverse import ANSWER_FLAGS

    flags = {name for names in ANSWER_FLAGS.values() for name in names}
    for step in document["steps"]:
        found = sorted(flags & set(step["result"] or {})) if step["status"] == "applied" else []
        if found:
            step["result"][found[0]] = "no"
            return
    raise AssertionError("the first wave applies no step whose answer has a yes/no field")


HOSTILE_RESULTS: dict[str, tuple[Any, str]] = {
    "flag-as-text": (_a_flag_as_text, "is str 'no', not true or false"),
    "wrong-plan": (lambda d: d.update(plan_sha256="0" * 64), "is for plan 0000"),
    "unknown-step": (lambda d: d["steps"][0].update(id="s999"), "s999 are not steps of"),
    "der-not-the-thumbprint": (
        lambda d: d["steps"][0]["result"].update(thumbprint="A" * 40),
        "not the thumbprint AAAA",
    ),
    "ca-into-root": (lambda d: _ca_result(d["steps"][0]["result"]), "reported in 'Root'"),
    "extra-field": (lambda d: d.update(note="hello"), "not a runbook result"),
    "skipped-without-a-stop": (lambda d: d["steps"][1].update(status="skipped"), "nothing before it stopped"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_RESULTS))
def test_a_hostile_result_is_refused_and_nothing_is_journaled(demo: Any, tmp_path: Path, case: str) -> None:
    state, folder, journal = first_wave_run(demo, tmp_path)
    result = folder / "wave-01" / "WORKER03.result.json"
    document = json.loads(result.read_text(encoding="ascii"))
    assert document["steps"][0]["id"] == "s001" and document["steps"][0]["status"] == "applied"
    change, reason = HOSTILE_RESULTS[case]
    change(document)
    result.write_text(json.dumps(document), encoding="ascii")
    manifest = (folder / "runbook.json").read_bytes()
    refused = cli("fix", "--import-results", folder, "--journal", journal)
    assert refused.exit_code == 2, refused.output
    assert reason in refused.output.replace("\n", " "), refused.output
    assert not journal.exists() and (folder / "runbook.json").read_bytes() == manifest
    assert not (folder / "wave-02").exists()


def test_a_ca_created_into_root_is_refused(tmp_path: Path) -> None:
    from scaleguard.remediators.actions import created_problems

    ca = make_certificate(CertSpec(("Evil Root CA",), ca=True, key_seed=7))
    thumbprint = __import__("hashlib").sha1(ca.der).hexdigest().upper()
    result = {"store": "Root", "thumbprint": thumbprint, "der_b64": base64.b64encode(ca.der).decode()}
    assert any("a plan never imports a CA into a Root store" in p for p in created_problems(result, "Root"))
    assert created_problems({**result, "store": "My"}, "My") == []  # a CA in My is trusted by nothing


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"{" + b" " * (4 * 1024 * 1024 + 1) + b"}", "larger than"), (b"<html>not json</html>", "not a runbook result"),
     (b"\xff\xfe" + "[]".encode("utf-16-le"), "not a runbook result"),
     (b"[" * 100_000, "not a runbook result"), (b"9" * 5_000, "not a runbook result")],
    ids=["oversized", "not-json", "utf16-but-not-an-object", "nested-100000-deep", "a-5000-digit-number"],
)
def test_a_result_that_is_not_a_result_is_refused(demo: Any, tmp_path: Path, content: bytes, reason: str) -> None:
    state, folder, journal = first_wave_run(demo, tmp_path)
    (folder / "wave-01" / "WORKER02.result.json").write_bytes(content)
    refused = cli("fix", "--import-results", folder, "--journal", journal)
    assert refused.exit_code == 2 and reason in refused.output, refused.output
    assert not journal.exists()


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_result_that_is_a_link_or_a_pipe_is_not_read(demo: Any, tmp_path: Path, kind: str) -> None:
    """A link is not followed out of the folder, a pipe is not waited on; each reason is a line of its own."""
    state, folder, journal = first_wave_run(demo, tmp_path)
    result = folder / "wave-01" / "WORKER02.result.json"
    outside = tmp_path / "outside.json"
    outside.write_bytes(result.read_bytes())
    result.unlink()
    if kind == "link":
        result.symlink_to(outside)
    else:
        os.mkfifo(result)
    (folder / "wave-01" / "WORKER03.result.json").unlink()
    refused = cli("fix", "--import-results", folder, "--journal", journal)
    assert refused.exit_code == 2, refused.output
    lines = refused.output.splitlines()
    expected = "is a symbolic link; links are not followed" if kind == "link" else "is not a regular file"
    assert any(line.strip().startswith(str(result)) and expected in line for line in lines), refused.output
    assert any(line.strip().startswith(str(folder / "wave-01" / "WORKER03.result.json")) for line in lines)
    assert "\\x0a" not in refused.output
    assert not journal.exists()


def test_a_result_written_by_powershell_redirection_is_read(demo: Any, tmp_path: Path) -> None:
    """``>`` in Windows PowerShell 5.1 writes UTF-16LE with a byte order mark."""
    state, folder, journal = first_wave_run(demo, tmp_path)
    for result in (folder / "wave-01").glob("*.result.json"):
        result.write_bytes(b"\xff\xfe" + result.read_text(encoding="ascii").encode("utf-16-le"))
    imported = cli("fix", "--import-results", folder, "--journal", journal)
    assert imported.exit_code == 0 and "wave 2 written" in imported.output, imported.output


def test_a_stale_step_stops_its_node_and_what_depends_on_it(demo: Any, tmp_path: Path) -> None:
    plan, state = demo
    folder, journal = tmp_path / "rb", tmp_path / "j.sqlite"
    emit(plan, folder)
    repin_worker02(state, b"F" * 40)  # someone re-pinned WORKER02 since the plan was made
    run_wave(state, folder, 1)
    document = json.loads((folder / "wave-01" / "WORKER02.result.json").read_text(encoding="ascii"))
    assert [s["status"] for s in document["steps"]] == ["stale", "skipped"]
    imported = cli("fix", "--import-results", folder, "--journal", journal)
    assert imported.exit_code == 1, imported.output
    assert "stale" in imported.output and "wave 2 written" in imported.output
    manifest = json.loads((folder / "runbook.json").read_text(encoding="utf-8"))
    assert manifest["steps"]["s011"]["status"] == "stale" and manifest["steps"]["s012"]["status"] == "skipped"


def test_results_of_a_script_changed_after_it_was_emitted_are_refused(demo: Any, tmp_path: Path) -> None:
    state, folder, journal = first_wave_run(demo, tmp_path)
    script = folder / "wave-01" / "WORKER02.ps1"
    script.write_text(script.read_text(encoding="ascii") + "\n# edited\n", encoding="ascii")
    refused = cli("fix", "--import-results", folder, "--journal", journal)
    assert refused.exit_code == 2 and "not the script that was emitted" in refused.output, refused.output
    assert not journal.exists()


def test_a_failed_step_skips_its_node_and_every_step_that_needs_it(demo: Any, tmp_path: Path) -> None:
    plan, state = demo
    folder, journal = tmp_path / "rb", tmp_path / "j.sqlite"
    emit(plan, folder)
    worker = state.node("WORKER03")
    assert worker is not None
    worker.faults.fail_ops = {"create_certificate": 1}
    run_wave(state, folder, 1)
    document = json.loads((folder / "wave-01" / "WORKER03.result.json").read_text(encoding="ascii"))
    assert [s["status"] for s in document["steps"]] == ["failed", "skipped", "skipped"]
    assert "injected by the lab" in document["steps"][0]["error"]
    imported = cli("fix", "--import-results", folder, "--journal", journal)
    assert imported.exit_code == 1, imported.output
    assert "no wave is left" in imported.output  # MASTER01 first needs s001's certificate: it stops there
    manifest = json.loads((folder / "runbook.json").read_text(encoding="utf-8"))
    statuses = {k: v["status"] for k, v in manifest["steps"].items()}
    assert statuses == {
        "s001": "failed", "s002": "skipped", "s003": "skipped", "s004": "skipped", "s005": "skipped",
        "s006": "skipped", "s007": "skipped", "s008": "skipped", "s009": "skipped", "s010": "skipped",
        "s011": "applied", "s012": "applied",
    }
    from scaleguard.apply.journal import Journal

    with Journal(journal) as opened:
        run = opened.runs()[-1]
        entries = opened.entries(run.run_id)
    assert run.status == "partial"
    assert [(e.step_id, e.status) for e in entries if e.status != "skipped"] == [
        ("s001", "failed"), ("s011", "done"), ("s012", "done")
    ]


def test_the_fixed_parts_are_ascii_and_never_evaluate_strings() -> None:
    head, tail = runbook_parts()
    for text in (head, tail):
        text.encode("ascii")
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")).lower()
        for forbidden in ("invoke-expression", "iex ", "[scriptblock]::create", "add-type", "-encodedcommand",
                          "start-process", "invoke-command", "new-pssession", "$executioncontext.invokecommand"):
            assert forbidden not in code, forbidden
    assert grammar_problems(head + "$RunbookData = 'e30='\n" + tail) == []
    assert head.count("$RunbookData") == 0 and tail.count("$RunbookData =") == 0  # one assignment: the data line


def test_check_only_changes_nothing_and_its_output_is_not_imported(demo: Any, tmp_path: Path) -> None:
    plan, state = demo
    folder, journal = tmp_path / "rb", tmp_path / "j.sqlite"
    emit(plan, folder)
    before = {n.name: len(n.journal) for n in state.nodes()}
    documents = {}
    for script in sorted((folder / "wave-01").glob("*.ps1")):
        data = parse_runbook(script.read_text(encoding="ascii"))
        node = state.node(data.node)
        assert node is not None
        documents[data.node], code = run_runbook(node, data, check_only=True)
        assert code == 0
        script.with_suffix(".result.json").write_text(json.dumps(documents[data.node]), encoding="ascii")
    assert {n.name: len(n.journal) for n in state.nodes()} == before
    worker3 = [(s["id"], s["status"]) for s in documents["WORKER03"]["steps"]]
    assert worker3 == [("s001", "pending"), ("s002", "pending"), ("s004", "pending")]
    assert "made when the runbook runs" in documents["WORKER03"]["steps"][1]["reason"]
    assert [s["status"] for s in documents["WORKER02"]["steps"]] == ["pending", "pending"]
    refused = cli("fix", "--import-results", folder, "--journal", journal)
    assert refused.exit_code == 2 and "-CheckOnly result" in refused.output, refused.output
    assert not journal.exists()


def _statements(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_param_is_the_first_statement_and_elevation_and_bitness_refuse_with_exit_2() -> None:
    """Only what PowerShell 5.1 would show on a host: param() must be the script's first statement, and a
    runbook that cannot start says 2 (#Requires -RunAsAdministrator would end it with powershell.exe's own
    code, which callers read as "a step stale or failed")."""
    head, _tail = runbook_parts()
    lines = _statements(head)
    assert lines[0].startswith("param([switch]$CheckOnly,")
    assert not [line for line in head.lower().splitlines() if line.replace(" ", "").startswith("#requires-run")]
    statements = "\n".join(lines)
    for test in ("IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)", "Is64BitProcess"):
        after = statements.split(test, 1)[1]
        assert after.split("}", 1)[0].rstrip().endswith("exit 2"), test
    assert statements.index("LanguageMode") < statements.index("IsInRole")  # .NET calls only in FullLanguage
    assert statements.index("Is64BitProcess") < statements.index("$ScaleguardSecret")


def test_every_exit_code_of_a_runbook_is_one_the_readme_documents() -> None:
    head, tail = runbook_parts()
    codes = {int(c) for c in re.findall(r"\bexit (\d+)", "\n".join(_statements(head + tail)))}
    assert codes == {0, 1, 2, 4}


def test_every_convertto_json_of_a_shipped_script_passes_a_depth_deeper_than_its_documents() -> None:
    """ConvertTo-Json's default -Depth 2 turns deeper values into their type names, silently."""
    root = Path(__file__).resolve().parents[2] / "scaleguard"
    calls = [(p, line) for p in root.rglob("*.ps1") for line in p.read_text().splitlines()
             if "convertto-json" in line.lower() and not line.lstrip().startswith("#")]
    assert len(calls) >= 2
    for path, line in calls:
        depth = re.search(r"-Depth (\d+)", line)
        assert depth is not None and int(depth.group(1)) >= 8, (path, line)


def test_the_driver_knows_its_node_by_the_full_host_name_not_only_the_netbios_name() -> None:
    """%COMPUTERNAME% is cut to 15 characters; Dns.GetHostName() is the full host name."""
    _head, tail = runbook_parts()
    test = tail.split("function Test-ThisNode", 1)[1].split("\nfunction ", 1)[0]
    assert "$env:COMPUTERNAME" in test and "[System.Net.Dns]::GetHostName()" in test
    assert "GetHostEntry" not in test  # a DNS query could answer with another machine's name


def test_a_stale_reason_quoting_a_huge_settings_value_is_cut_so_the_result_still_imports(
    demo: Any, tmp_path: Path
) -> None:
    """The reason quotes the file's value; uncut, a 6000-character value made the node's whole result refused."""
    plan, state = demo
    folder, journal = tmp_path / "rb", tmp_path / "j.sqlite"
    emit(plan, folder)
    repin_worker02(state, b"F" * 6000)
    run_wave(state, folder, 1)
    document = json.loads((folder / "wave-01" / "WORKER02.result.json").read_text(encoding="ascii"))
    assert [s["status"] for s in document["steps"]] == ["stale", "skipped"]
    reason = document["steps"][0]["reason"]
    assert len(reason) == 2000 + len(" [cut]") and reason.endswith("F [cut]")
    imported = cli("fix", "--import-results", folder, "--journal", journal)
    assert imported.exit_code == 1 and "stale" in imported.output, imported.output
    _head, tail = runbook_parts()  # the driver cuts as the lab does
    assert "$entry.reason = Limit-RunbookText $entry.reason 2000" in tail
    assert "$entry.error = Limit-RunbookText $entry.error 4000" in tail
