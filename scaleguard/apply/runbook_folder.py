"""A runbook folder: the plan, one folder per wave with a script per node, and ``runbook.json``.

``fix --emit-runbook DIR`` writes wave 1 (:func:`emit`); after the scripts ran, their results go next to
them as ``<NODE>.result.json`` and ``fix --import-results DIR`` (:func:`import_results`) checks every one
of them — they come back from machines and people, so they are hostile until proven otherwise — records
every step in the fix journal as ``--apply`` would, and writes the next wave with the values the results
returned, until no step is left.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import StringConstraints, ValidationError

from scaleguard.apply.inverse import answer_problems
from scaleguard.apply.journal import EntryStatus, Journal
from scaleguard.apply.runbook_script import (
    Checked,
    NodeName,
    NotARunbook,
    Refused,
    RunbookData,
    RunbookResult,
    RunId,
    Sha256,
    StepId,
    parse_runbook,
    runbook_script,
)
from scaleguard.apply.runbook_waves import Known, RunbookRefused, next_wave, refusals, runbook_step, stop_failed
from scaleguard.collectors.parsers.psjson import loads_powershell_json
from scaleguard.remediators.actions import AGENT_OP, CreateCertificate, created_problems
from scaleguard.remediators.model import Plan
from scaleguard.remediators.validate import MAX_PLAN_BYTES, PlanInvalid, load_plan
from scaleguard.safefile import UnsafeFile, read_limited

MANIFEST = "runbook.json"
PLAN_COPY = "plan.json"
MAX_RESULT_BYTES = 4 * 1024 * 1024
MAX_SCRIPT_BYTES = 16 * 1024 * 1024
README = """scaleguard change-window runbooks for plan {sha}

Wave {wave:02d} is in {folder}/: one PowerShell script per node ({count} here). For each node:

1. Copy <NODE>.ps1 to that node and run it there, elevated (Windows PowerShell 5.1):
     powershell.exe -NoProfile -ExecutionPolicy Bypass -File <NODE>.ps1 > <NODE>.result.json
   or let SCCM or Ansible run it (README, "Change windows: runbooks": win_copy + win_command, the
   standard output registered and written back to this folder).
   The script refuses to run on any other computer. It looks at each step first: a step already done is
   skipped, one whose "before" no longer holds stops the node's remaining steps (stale). It prints one
   JSON document and exits 0 (all done), 1 (a step failed or was stale) or 2 (it could not start).
   Running it again changes nothing that is already in place (no second certificate is made).
   Before the window, `-File <NODE>.ps1 -CheckOnly` changes nothing and says what each step would do
   (done, pending, stale); that output is not a result to import.
2. Put every result back into {folder}/ as <NODE>.result.json.
3. Run: scaleguard fix --import-results {root}
   It checks each result, records it in the fix journal and writes the next wave, or, when nothing is
   left, says so (with --inventory it audits the cluster again).

Scripts of this wave (SHA-256):
{scripts}
"""


class ScriptEntry(Checked):
    cluster: NodeName
    node: NodeName
    file: Annotated[str, StringConstraints(pattern=r"^wave-[0-9]{2,3}/[A-Za-z0-9._-]{1,64}\.ps1$")]
    sha256: Sha256
    steps: list[StepId]


class WaveEntry(Checked):
    wave: int
    scripts: list[ScriptEntry]
    imported: bool = False


class Manifest(Checked):
    """``runbook.json``: what was emitted and what came back, so each import knows where it stands."""

    format: Literal["scaleguard-runbook-folder/1"] = "scaleguard-runbook-folder/1"
    plan_sha256: Sha256
    plan_file: Literal["plan.json"] = "plan.json"
    run_id: RunId
    emitted_at: str
    finished: bool = False
    waves: list[WaveEntry]
    steps: dict[StepId, Known]

    def write(self, folder: Path) -> None:
        text = json.dumps(self.model_dump(mode="json"), indent=1)
        temporary = folder / f"{MANIFEST}.new"
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(folder / MANIFEST)


class RunbookError(Refused):
    """The folder or a result in it is refused; ``reasons`` holds one line each (nothing was recorded)."""


def emit(folder: Path, plan_bytes: bytes, plan: Plan, plan_sha256: str, run_id: str) -> WaveEntry:
    """Write wave 1 of ``plan`` (validated by the caller exactly as ``--apply`` validates it) into ``folder``."""
    reasons = refusals(plan)
    if reasons:
        raise RunbookRefused(reasons)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise RunbookError([f"{folder} exists and is not an empty folder"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PLAN_COPY).write_bytes(plan_bytes)
    manifest = Manifest(
        plan_sha256=plan_sha256, run_id=run_id, emitted_at=datetime.now(UTC).isoformat(), waves=[],
        steps={s.id: Known(status="pending") for s in plan.steps},
    )
    wave = _write_wave(folder, plan, manifest, 1)
    manifest.write(folder)
    return wave


def _write_wave(folder: Path, plan: Plan, manifest: Manifest, number: int) -> WaveEntry:
    known = manifest.steps
    chosen = next_wave(plan, known)
    if not chosen:
        raise RunbookError(["no step can run: every remaining step waits for one that did not succeed"])
    directory = folder / f"wave-{number:02d}"
    directory.mkdir(exist_ok=True)
    scripts = []
    for (cluster, node), steps in chosen.items():
        data = RunbookData(
            plan_sha256=manifest.plan_sha256, run_id=manifest.run_id, cluster=cluster, node=node, wave=number,
            steps=[
                runbook_step(
                    plan, s, plan_sha256=manifest.plan_sha256, run_id=manifest.run_id, known=known, script=steps
                )
                for s in steps
            ],
        )
        text = runbook_script(data).encode("ascii")
        (directory / f"{node}.ps1").write_bytes(text)
        scripts.append(
            ScriptEntry(
                cluster=cluster, node=node, file=f"{directory.name}/{node}.ps1",
                sha256=hashlib.sha256(text).hexdigest(), steps=[s.id for s in steps],
            )
        )
    wave = WaveEntry(wave=number, scripts=scripts)
    manifest.waves.append(wave)
    listing = "\n".join(f"  {s.file}  {s.sha256}  steps {', '.join(s.steps)}" for s in scripts)
    (folder / "README.txt").write_text(
        README.format(
            sha=manifest.plan_sha256, wave=number, folder=directory.name, count=len(scripts), root=folder,
            scripts=listing,
        ),
        encoding="utf-8",
    )
    return wave


def read_manifest(folder: Path) -> tuple[Manifest, bytes]:
    """The folder's manifest and the plan bytes it names (their SHA-256 must be the manifest's)."""
    try:
        manifest = Manifest.model_validate_json(read_limited(folder / MANIFEST, MAX_PLAN_BYTES))
        plan_bytes = read_limited(folder / PLAN_COPY, MAX_PLAN_BYTES)
    except OSError as exc:
        raise RunbookError([f"{folder} is not a runbook folder: {exc}"]) from exc
    except ValidationError as exc:
        raise RunbookError([f"{folder / MANIFEST} is not valid: {exc.errors()[0]['msg']}"]) from exc
    if hashlib.sha256(plan_bytes).hexdigest() != manifest.plan_sha256:
        raise RunbookError([f"{folder / PLAN_COPY} is not the plan {manifest.plan_sha256} the runbooks were made from"])
    return manifest, plan_bytes


def decode_result(data: bytes) -> Any:
    """A result file as PowerShell may have written it (``>`` in Windows PowerShell 5.1 writes UTF-16LE),
    read by the one reader of PowerShell's JSON (node data: nesting and number size are bounded there)."""
    if len(data) > MAX_RESULT_BYTES:
        raise ValueError(f"larger than {MAX_RESULT_BYTES} bytes")
    return loads_powershell_json(data)


@dataclass
class ImportReport:
    wave: int
    recorded: dict[str, str] = field(default_factory=dict)
    """step id → status, in the order recorded."""
    skipped: list[str] = field(default_factory=list)
    next_wave: WaveEntry | None = None
    finished: bool = False


def check_results(
    folder: Path, plan: Plan, manifest: Manifest
) -> tuple[WaveEntry, list[tuple[RunbookResult, RunbookData]]]:
    """Every result of the current wave with the data of its script (read once: the bytes whose SHA-256 was
    checked are the ones parsed), each checked against that script (or RunbookError, all reasons)."""
    wave = next((w for w in manifest.waves if not w.imported), None)
    if wave is None:
        raise RunbookError(["every wave's results are already imported; nothing to do"])
    reasons: list[str] = []
    results: list[tuple[RunbookResult, RunbookData]] = []
    for script in wave.scripts:
        path = folder / script.file.replace(".ps1", ".result.json")
        try:
            text = read_limited(folder / script.file, MAX_SCRIPT_BYTES)
        except OSError:
            text = b""
        if hashlib.sha256(text).hexdigest() != script.sha256:
            reasons.append(f"{folder / script.file}: not the script that was emitted (SHA-256 differs, or it is gone)")
            continue
        try:
            data = parse_runbook(text.decode("ascii"))
        except (NotARunbook, UnicodeDecodeError) as exc:  # it was emitted so: only a changed scaleguard
            reasons.append(f"{folder / script.file}: {exc}")
            continue
        try:
            raw = decode_result(read_limited(path, MAX_RESULT_BYTES))
            result = RunbookResult.model_validate(raw)
        except UnsafeFile as exc:
            reasons.append(f"{exc}; not read")
            continue
        except OSError:
            reasons.append(f"{path}: missing (run {script.file} on {script.node} and put its output there)")
            continue
        except (ValueError, ValidationError) as exc:
            reasons.append(f"{path}: not a runbook result ({str(exc).splitlines()[0][:200]})")
            continue
        reasons += [f"{path}: {problem}" for problem in _problems(plan, manifest, wave, script, result)]
        results.append((result, data))
    if reasons:
        raise RunbookError(reasons)
    return wave, results


def _problems(plan: Plan, manifest: Manifest, wave: WaveEntry, script: ScriptEntry, result: RunbookResult) -> list[str]:
    if result.plan_sha256 != manifest.plan_sha256:
        return [f"it is for plan {result.plan_sha256}, not {manifest.plan_sha256}"]
    if result.run_id != manifest.run_id or result.wave != wave.wave:
        return [f"it is from run {result.run_id} wave {result.wave}, not run {manifest.run_id} wave {wave.wave}"]
    if result.check_only:
        return ["it is a -CheckOnly result, which changed nothing and records nothing; run the script without it"]
    if (result.cluster, result.node) != (script.cluster, script.node):
        return [f"it is the result of {result.cluster}/{result.node}, not {script.cluster}/{script.node}"]
    ids = [s.id for s in result.steps]
    if ids != script.steps:
        unknown = [i for i in ids if i not in script.steps]
        if unknown:
            return [f"step(s) {', '.join(unknown)} are not steps of {script.file}"]
        return [f"it reports steps {', '.join(ids)}; {script.file} holds {', '.join(script.steps)}"]
    problems = []
    stopped = False
    for outcome in result.steps:
        if outcome.status == "pending":
            problems.append(f"step {outcome.id} is pending, which only a -CheckOnly result may say")
        if stopped and outcome.status != "skipped":
            problems.append(f"step {outcome.id} is {outcome.status} after the node stopped")
        if outcome.status in ("stale", "failed"):
            stopped = True
        if outcome.status == "skipped" and not stopped:
            problems.append(f"step {outcome.id} is skipped though nothing before it stopped the node")
        step = plan.step(outcome.id)
        found = answer_problems(AGENT_OP[step.action], outcome.result or {}) if outcome.status == "applied" else []
        if isinstance(step.params, CreateCertificate) and outcome.status in ("done", "applied"):
            found += created_problems(outcome.result, step.params.store)
        problems += [f"step {outcome.id}: {p}" for p in found]
    return problems


def record(
    journal: Journal, plan: Plan, plan_json: str, manifest: Manifest, folder: Path,
    results: list[tuple[RunbookResult, RunbookData]], wave: WaveEntry,
) -> ImportReport:
    """Journal every step of every (checked) result, as ``--apply`` journals its steps."""
    run_id = manifest.run_id
    if journal.run(run_id) is None:
        journal.start_run(
            kind="apply", source=f"runbooks in {folder}", plan_json=plan_json, run_id=run_id,
            plan_sha256=manifest.plan_sha256,
        )
    known = manifest.steps  # what this wave's results say replaces what was known of their steps
    report = ImportReport(wave=wave.wave)
    for result, data in results:
        requests = {s.id: dict(s.request) for s in data.steps}
        refs = {s.id: s.refs for s in data.steps}
        answers: dict[str, dict[str, Any] | None] = {}
        for outcome in result.steps:
            step = plan.step(outcome.id)
            request = requests[outcome.id]
            # journaled as it was sent: values the node filled in, and the service name it found
            for name, ref in refs[outcome.id].items():
                value = (answers.get(ref.from_step) or {}).get(ref.field)
                if isinstance(value, str):
                    request[name] = value
            found = outcome.result.get("name") if isinstance(outcome.result, dict) else None
            if request.get("name") is None and isinstance(found, str):
                request["name"] = found
            answers[outcome.id] = outcome.result
            if outcome.status in ("applied", "failed"):
                seq = journal.begin(
                    run_id, phase="apply", cluster=step.cluster, node=step.node, request=request, step_id=step.id,
                    unit=step.unit,
                )
                if outcome.status == "applied":
                    journal.end(run_id, seq, "done", result=outcome.result)
                else:
                    status: EntryStatus = "unknown" if outcome.partial else "failed"
                    journal.end(run_id, seq, status, result=outcome.result, error=outcome.error or "failed")
            else:
                reason = outcome.reason or ""
                text = {"done": f"already done: {reason}", "stale": f"stale: {reason}"}.get(outcome.status, reason)
                journal.skip(run_id, step, text)
            known[outcome.id] = Known(
                status=outcome.status, reason=outcome.reason or outcome.error or "", result=outcome.result,
                wave=wave.wave,
            )
            report.recorded[outcome.id] = outcome.status
    for step_id in stop_failed(plan, known):
        journal.skip(run_id, plan.step(step_id), known[step_id].reason)
        report.skipped.append(step_id)
    wave.imported = True
    if all(k.status != "pending" for k in known.values()):
        manifest.finished = True
        report.finished = True
        statuses = {k.status for k in known.values()}
        ok = {"done", "applied"}
        journal.finish_run(run_id, "done" if statuses <= ok else "partial" if statuses & ok else "failed")
    return report


def write_next(folder: Path, plan: Plan, manifest: Manifest, report: ImportReport) -> None:
    if not report.finished:
        report.next_wave = _write_wave(folder, plan, manifest, report.wave + 1)
    manifest.write(folder)


def plan_of(plan_bytes: bytes, manifest: Manifest) -> Plan:
    """The folder's plan, validated as when it was emitted (its expiry is the caller's check)."""
    try:
        return load_plan(plan_bytes, now=datetime.fromisoformat(manifest.emitted_at)).plan
    except PlanInvalid as exc:
        raise RunbookError(exc.errors) from exc
