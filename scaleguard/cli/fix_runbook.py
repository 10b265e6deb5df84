"""``fix --emit-runbook DIR`` and ``fix --import-results DIR``: a plan applied through change windows.

The plan is validated exactly as ``--apply`` validates it (a reviewed ``--plan`` file, or one made from
the usual inputs), then written as waves of per-node PowerShell scripts; results come back, are checked
and journaled, and the next wave carries the values they returned. Exit codes as ``fix --apply``: 0 all
done so far (and, at the end, the audit clean), 1 a step failed or was stale or a finding still fails,
2 refused (invalid or expired plan, a result that does not check out — nothing is recorded then).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from scaleguard.exitcodes import ExitCode
from scaleguard.safetext import console_text

from .fix_common import FixUsageError, refused

if TYPE_CHECKING:
    from scaleguard.remediators.model import Plan


def emit_runbooks(folder: Path, plan: Plan, data: bytes, sha256: str, err: Console) -> int:
    """Wave 1 of ``plan`` (validated by the caller as ``--apply`` validates it; ``data`` its exact bytes)."""
    from scaleguard.apply.journal import new_run_id
    from scaleguard.apply.runbook_folder import RunbookError, emit
    from scaleguard.apply.runbook_waves import RunbookRefused

    if plan.empty:
        err.print("nothing to do: no failing finding needs a change; no runbook written.")
        return int(ExitCode.OK)
    try:
        wave = emit(folder, data, plan, sha256, new_run_id())
    except RunbookRefused as exc:
        raise FixUsageError(refused("the plan cannot be run as runbooks; nothing was written", exc.reasons)) from exc
    except RunbookError as exc:
        raise FixUsageError(refused("no runbook written", exc.reasons)) from exc
    err.print(f"wave 1 written to {console_text(str(folder / 'wave-01'))}:")
    for script in wave.scripts:
        err.print(f"  {console_text(script.file)}  {len(script.steps)} step(s)  SHA-256 {script.sha256}")
    err.print(
        f"Run each script on its node (see {console_text(str(folder / 'README.txt'))}), put <NODE>.result.json "
        f"next to it, then: scaleguard fix --import-results {console_text(str(folder))}"
    )
    return int(ExitCode.OK)


def import_runbook_results(
    folder: Path,
    journal_path: Path,
    inventory: Path | None,
    policy_dirs: tuple[Path, ...],
    concurrency: int,
    insecure: bool,
    err: Console,
    out_console: Console,
) -> int:
    """Check and record the current wave's results, then write the next wave or audit again."""
    from scaleguard.apply.journal import Journal
    from scaleguard.apply.runbook_folder import (
        RunbookError,
        check_results,
        plan_of,
        read_manifest,
        record,
        write_next,
    )
    from scaleguard.remediators.validate import PlanInvalid, load_plan

    try:
        manifest, plan_bytes = read_manifest(folder)
        plan = plan_of(plan_bytes, manifest)
        wave, results = check_results(folder, plan, manifest)
    except RunbookError as exc:
        headline = f"the results in {folder} are refused; nothing was recorded"
        raise FixUsageError(refused(headline, exc.reasons)) from exc
    with Journal(journal_path) as journal:
        report = record(journal, plan, plan_bytes.decode("utf-8"), manifest, folder, results, wave)
    table = Table(title=f"runbook wave {wave.wave} of plan {manifest.plan_sha256[:12]}")
    for column in ("step", "node", "action", "status", "why"):
        table.add_column(column)
    for step_id, status in [*report.recorded.items(), *((s, "skipped") for s in report.skipped)]:
        step = plan.step(step_id)
        reason = manifest.steps[step_id].reason
        table.add_row(step_id, console_text(step.node), step.action, status, console_text(reason[:120]))
    out_console.print(table)
    err.print(f"journal: {console_text(str(journal_path))} (run {manifest.run_id})")
    troubled = any(s.status in ("failed", "stale", "skipped") for s in manifest.steps.values())
    if not report.finished:
        try:
            load_plan(plan_bytes)  # the next wave is a new application of the plan: it must not have expired
        except PlanInvalid as exc:
            manifest.write(folder)
            raise FixUsageError(
                refused("the results are recorded, but no further wave is written", exc.errors)
            ) from exc
        try:
            write_next(folder, plan, manifest, report)
        except RunbookError as exc:
            manifest.write(folder)
            raise FixUsageError(refused("the results are recorded, but no further wave can run", exc.reasons)) from exc
        assert report.next_wave is not None
        number = report.next_wave.wave
        err.print(f"wave {number} written to {console_text(str(folder / f'wave-{number:02d}'))}:")
        for script in report.next_wave.scripts:
            err.print(f"  {console_text(script.file)}  {len(script.steps)} step(s)  SHA-256 {script.sha256}")
        return int(ExitCode.FAILING if troubled else ExitCode.OK)
    write_next(folder, plan, manifest, report)
    err.print("every step of the plan is recorded; no wave is left.")
    if inventory is None:
        err.print("Audit the cluster again to see the fix hold: scaleguard audit --inventory … (or --evidence …)")
        return int(ExitCode.FAILING if troubled else ExitCode.OK)
    from scaleguard.apply.verify import compare, reaudit
    from scaleguard.remediators.render import verification_view

    err.print("re-collecting and re-evaluating…")
    _snapshot, after = reaudit(inventory, policy_dirs=policy_dirs, insecure=insecure, concurrency=concurrency)
    verification = compare(plan, after, after)
    out_console.print(verification_view(verification))
    return int(ExitCode.OK if verification.clean and not troubled else ExitCode.FAILING)
