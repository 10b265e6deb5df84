"""``scaleguard fix``: plan from failing findings, show it, and only with ``--apply`` change nodes.

Dry run is the default and changes nothing. ``--apply`` asks before touching a node unless ``--yes``;
with no terminal to ask on it refuses rather than assume. After applying, the nodes are audited again
and the result says what is fixed and what is not. ``--undo RUN`` reverts a journaled run.

``--apply`` first takes the cluster lease on the master node(s) (a second run refuses at once, naming the
holder), then reads every node afresh — the read the drift checks use — and runs the units in parallel
across nodes (``--concurrency``), with ``--canary``, ``--max-unavailable`` and ``--max-failures``.

A reviewed ``--plan`` is validated completely before any node is contacted (its schema, that it holds
together, that it has not expired), then against the fresh read before the first change; either refusal
lists ``step <id>: <reason>`` lines and changes nothing. The plan's SHA-256 is shown at review and
recorded with the run in the journal.

Exit codes: 0 — dry run shown, nothing to do, or applied and everything addressed is fixed; 1 — a step
failed (rolled back), a unit was stale, the lease is held by another run, or a finding is still failing
after the fix; 2 — usage error or the plan was refused (invalid, expired, not fitting the live cluster,
``--max-nodes``, no confirmation).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console

from scaleguard.console import console as make_console
from scaleguard.exitcodes import ExitCode
from scaleguard.safetext import console_text

from .fix_common import FixUsageError, refused
from .groups import app

if TYPE_CHECKING:
    from scaleguard.apply.lease import ClusterLease
    from scaleguard.apply.runner import Controls
    from scaleguard.apply.transport import WinRMTransport
    from scaleguard.findings.model import Finding, FindingsFile
    from scaleguard.remediators.base import MasterPfx
    from scaleguard.remediators.model import Plan, SecretRef
    from scaleguard.snapshot.model import Snapshot


@app.command("fix")
def fix(
    inventory: Annotated[
        Path | None,
        typer.Option("--inventory", help="Live: collect, evaluate and (with --apply) fix over WinRM."),
    ] = None,
    findings: Annotated[
        Path | None,
        typer.Option("--findings", help="Plan from an audit's findings.json instead of collecting."),
    ] = None,
    snapshot: Annotated[
        Path | None,
        typer.Option("--snapshot", help="The snapshot.json of those findings (default: next to them)."),
    ] = None,
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="Apply this reviewed plan.json instead of planning anew.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for plan.json (and the apply report).")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Change the nodes (default: dry run).")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    max_nodes: Annotated[
        int | None, typer.Option("--max-nodes", min=1, help="Refuse a plan that touches more nodes.")
    ] = None,
    journal: Annotated[
        Path | None, typer.Option("--journal", help="Fix journal (SQLite); default in the user data folder.")
    ] = None,
    undo: Annotated[str | None, typer.Option("--undo", help="Revert the run with this id.")] = None,
    master_hash: Annotated[
        str, typer.Option("--master-hash", help="Signature hash of a new master certificate: sha256 or sha1.")
    ] = "sha256",
    master_pfx: Annotated[
        Path | None, typer.Option("--master-pfx", help="Import this enterprise master certificate (PFX).")
    ] = None,
    master_pfx_password_env: Annotated[
        str | None,
        typer.Option(
            "--master-pfx-password-env",
            help="Environment variable holding the PFX password (else it is prompted for).",
        ),
    ] = None,
    policies: Annotated[
        list[Path] | None, typer.Option("--policies", help="Extra policy pack folder (repeatable).")
    ] = None,
    plan_valid_for: Annotated[
        str,
        typer.Option("--plan-valid-for", help="How long a new plan may be applied: e.g. 7d, 12h, 90m."),
    ] = "7d",
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Live: nodes read, and changed, at once.")
    ] = 8,
    insecure: Annotated[bool, typer.Option("--insecure", help="Live: skip WinRM TLS validation.")] = False,
    canary: Annotated[
        int,
        typer.Option(
            "--canary", min=0, help="Fix this many workers first; go on only if they come out fixed."
        ),
    ] = 0,
    max_unavailable: Annotated[
        str | None,
        typer.Option("--max-unavailable", help="Worker services restarting at once: N or P% of the workers."),
    ] = None,
    max_failures: Annotated[
        str | None,
        typer.Option("--max-failures", help="Start no further unit once N (or P% of the) units failed."),
    ] = None,
    break_lease: Annotated[
        bool, typer.Option("--break-lease", help="Break the cluster lease of another run if it has expired.")
    ] = False,
    lease_ttl: Annotated[
        int,
        typer.Option("--lease-ttl", min=1, max=86400, help="Seconds the lease lasts unless renewed."),
    ] = 300,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress of --apply on stderr (units done, ETA).")
    ] = True,
    emit_runbook: Annotated[
        Path | None,
        typer.Option(
            "--emit-runbook",
            help="Write the plan as PowerShell runbooks, one per node, into this new folder (change windows).",
        ),
    ] = None,
    import_results: Annotated[
        Path | None,
        typer.Option(
            "--import-results",
            help="Record the results of a runbook folder's current wave and write the next (or audit again).",
        ),
    ] = None,
) -> None:
    """Plan the fixes for failing findings; with --apply, carry them out in a safe order.

    Example: scaleguard fix --inventory inventory.yaml --out fix/ (then add --apply to carry the plan out)

    Change windows: scaleguard fix --plan fix/plan.json --emit-runbook runbooks/, run each node's script,
    then scaleguard fix --import-results runbooks/ until no wave is left.
    """
    err = make_console(soft_wrap=True)
    out_console = make_console(width=max(160, Console(stderr=True).width))  # tables: stderr, like every summary
    try:
        if master_hash not in ("sha256", "sha1"):
            raise FixUsageError("--master-hash must be sha256 or sha1")
        from scaleguard.apply.journal import default_journal_path

        o = FixOptions(
            inventory=inventory, findings=findings, snapshot=snapshot, plan_file=plan_file, out=out, apply=apply,
            yes=yes, max_nodes=max_nodes, journal=journal or default_journal_path(),
            master_hash="sha1" if master_hash == "sha1" else "sha256", master_pfx=master_pfx,
            pfx_env=master_pfx_password_env, policy_dirs=tuple(policies or []), concurrency=concurrency,
            insecure=insecure, controls=_controls(concurrency, canary, max_unavailable, max_failures),
            break_lease=break_lease, lease_ttl=lease_ttl, valid_for=_duration(plan_valid_for), progress=progress,
            err=err, out_console=out_console,
        )
        if undo is not None:
            raise typer.Exit(_undo(o, undo))
        if emit_runbook is not None or import_results is not None:
            from scaleguard.cli.fix_runbook import emit_runbooks, import_runbook_results

            if apply or (emit_runbook is not None and import_results is not None):
                raise FixUsageError("--emit-runbook, --import-results and --apply exclude each other")
            if master_pfx is not None:  # planning without it would silently rotate to a self-signed certificate
                raise FixUsageError(
                    "--master-pfx cannot go into a runbook (it never carries a PFX or its password); "
                    "rotate the master with --apply"
                )
            if import_results is not None:
                raise typer.Exit(
                    import_runbook_results(
                        import_results, o.journal, inventory, o.policy_dirs, concurrency, insecure, err, out_console
                    )
                )
            assert emit_runbook is not None
            the_plan, sha256, data = _reviewed(o, {})
            raise typer.Exit(emit_runbooks(emit_runbook, the_plan, data, sha256, err))
        code = _fix(o)
    except FixUsageError as exc:
        _usage_exit(err, str(exc))
    raise typer.Exit(code)


@dataclass(frozen=True)
class FixOptions:
    """The command line as every stage of ``fix`` reads it (checked: the limits and the duration parsed)."""

    inventory: Path | None
    findings: Path | None
    snapshot: Path | None
    plan_file: Path | None
    out: Path | None
    apply: bool
    yes: bool
    max_nodes: int | None
    journal: Path
    master_hash: Literal["sha256", "sha1"]
    master_pfx: Path | None
    pfx_env: str | None
    policy_dirs: tuple[Path, ...]
    concurrency: int
    insecure: bool
    controls: Controls
    break_lease: bool
    lease_ttl: int
    valid_for: timedelta
    progress: bool
    err: Console
    out_console: Console


def _controls(concurrency: int, canary: int, max_unavailable: str | None, max_failures: str | None) -> Controls:
    from scaleguard.apply.runner import Controls, Limit

    try:
        unavailable = Limit.parse(max_unavailable) if max_unavailable is not None else None
        failures = Limit.parse(max_failures) if max_failures is not None else None
    except ValueError as exc:
        raise FixUsageError(f"--max-unavailable/--max-failures: {exc}") from exc
    return Controls(concurrency=concurrency, canary=canary, max_unavailable=unavailable, max_failures=failures)


_DURATION = re.compile(r"([1-9][0-9]{0,4})([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def _duration(text: str) -> timedelta:
    """``7d``, ``12h`` or ``90m`` as a time span (``--plan-valid-for``)."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise FixUsageError(f"--plan-valid-for {text!r}: give a number and d, h or m (e.g. 7d, 12h)")
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


def _usage_exit(console: Console, message: str) -> NoReturn:
    console.print(f"[bold red]scaleguard fix: error:[/] {console_text(message, multiline=True)}")
    raise typer.Exit(int(ExitCode.USAGE))


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise FixUsageError("no terminal to confirm on: pass --yes to apply without asking")
    if not typer.confirm(question, default=False):
        raise FixUsageError("not confirmed; nothing was changed")


def _usage_errors() -> tuple[type[Exception], ...]:
    from scaleguard.policies.loader import PolicyError
    from scaleguard.remoting.errors import InventoryError

    return (InventoryError, PolicyError)


def _reviewed(o: FixOptions, secret_cache: dict[str, str]) -> tuple[Plan, str, bytes]:
    """The plan a dry run shows and a runbook is made from, shown, with its SHA-256 and its exact bytes: the
    reviewed ``--plan`` as read (never rewritten), else one made anew (written into ``--out``)."""
    if o.plan_file is not None:
        the_plan, sha256, data = _read_plan(o.plan_file, o.max_nodes)
        _show(the_plan, sha256, None, o)
        return the_plan, sha256, data
    findings_file, snap = _inputs(o)
    the_plan = _make_plan(o, findings_file, snap, secret_cache)
    return the_plan, _show(the_plan, None, o.out, o), the_plan.to_json().encode("utf-8")


def _fix(o: FixOptions) -> int:
    err = o.err
    if not o.apply:
        if not _reviewed(o, {})[0].empty:
            err.print("dry run: nothing was changed. Apply with --apply (and --inventory).")
        return int(ExitCode.OK)
    inventory = o.inventory
    if inventory is None:
        raise FixUsageError("--apply needs --inventory to reach the nodes")
    secret_cache: dict[str, str] = {}
    the_plan: Plan | None = None
    reviewed: str | None = None  # the SHA-256 of the plan.json the operator gave
    if o.plan_file is not None:
        the_plan, reviewed, _bytes = _read_plan(o.plan_file, o.max_nodes)
    elif o.findings is not None:
        findings_file, snap = _inputs(o)
        the_plan = _make_plan(o, findings_file, snap, secret_cache)
    from scaleguard.apply.journal import new_run_id
    from scaleguard.apply.lease import LeaseHeld

    run_id = new_run_id()
    try:
        lease = _lease(o, inventory, run_id)
        lease.acquire(break_expired=o.break_lease, read_after=True)
    except LeaseHeld as exc:
        err.print(f"[bold red]scaleguard fix: refused:[/] {console_text(str(exc))}. Nothing was changed.")
        if not o.break_lease:
            err.print("An expired lease (its run was killed) can be broken with --break-lease.")
        return int(ExitCode.FAILING)
    lease.keep_renewed()
    try:
        # the fresh read, taken under the lease: what the drift checks compare with, and the "before"
        findings_file, snap = _inputs(o, documents=lease.documents)
        if the_plan is None:
            the_plan = _make_plan(o, findings_file, snap, secret_cache)
        written = o.out if o.plan_file is None else None  # a reviewed plan.json is never rewritten
        sha256 = _show(the_plan, reviewed, written, o)
        if the_plan.empty:
            if the_plan.manual:
                err.print(
                    f"nothing to do automatically; {len(the_plan.manual)} finding(s) need a human (listed above)."
                )
                return int(ExitCode.FAILING)
            err.print("nothing to do: no failing finding needs a change.")
            return int(ExitCode.OK)
        from scaleguard.remediators.livecheck import live_problems

        misfits = live_problems(the_plan, snap)
        if misfits:
            raise FixUsageError(
                refused("the plan does not fit the cluster as it is now; nothing was changed", misfits)
            )
        _confirm(
            f"Apply plan {sha256[:12]}: {len(the_plan.steps)} step(s) to {len(the_plan.nodes())} node(s)?", o.yes
        )

        def secrets(ref: SecretRef) -> str:
            key = ref.secret_env or ref.secret_prompt or ""
            if key not in secret_cache:
                from scaleguard.apply.runner import resolve_secret

                secret_cache[key] = resolve_secret(ref)
            return secret_cache[key]

        return _apply(o, inventory, the_plan, sha256, findings_file.findings, snap, run_id, lease, secrets)
    finally:
        lease.release()


def _read_plan(plan_file: Path, max_nodes: int | None) -> tuple[Plan, str, bytes]:
    """The validated plan, the SHA-256 of its bytes and those bytes (read once: what is used is what was
    validated); an invalid one ends the run before any contact."""
    from scaleguard.remediators.validate import MAX_PLAN_BYTES, PlanInvalid, load_plan
    from scaleguard.safefile import read_limited

    try:
        data = read_limited(plan_file, MAX_PLAN_BYTES)
        loaded = load_plan(data)
    except OSError as exc:
        raise FixUsageError(f"--plan {plan_file}: {exc}") from exc
    except PlanInvalid as exc:
        raise FixUsageError(refused(f"--plan {plan_file} is refused; nothing was contacted", exc.errors)) from exc
    the_plan = loaded.plan
    if max_nodes is not None and len(the_plan.nodes()) > max_nodes:
        raise FixUsageError(f"the plan touches {len(the_plan.nodes())} nodes, more than --max-nodes {max_nodes}")
    return the_plan, loaded.sha256, data


def _make_plan(o: FixOptions, findings_file: FindingsFile, snap: Snapshot, secret_cache: dict[str, str]) -> Plan:
    from scaleguard.remediators import PlanInputInvalid, PlanOptions, PlanRefused
    from scaleguard.remediators import plan as make_plan
    from scaleguard.remediators.render import plan_view

    pfx = _load_pfx(o.master_pfx, o.pfx_env, secret_cache) if o.master_pfx is not None else None
    options = PlanOptions(
        master_hash=o.master_hash, max_nodes=o.max_nodes, master_pfx=pfx, source=str(o.findings or o.inventory),
        valid_for=o.valid_for,
    )
    try:
        return make_plan(findings_file, snap, options)
    except PlanRefused as exc:
        o.out_console.print(plan_view(exc.plan))
        raise FixUsageError(str(exc)) from exc
    except PlanInputInvalid as exc:
        raise FixUsageError(str(exc)) from exc


def _show(the_plan: Plan, reviewed: str | None, out: Path | None, o: FixOptions) -> str:
    """Show the plan headed by its SHA-256 (of the reviewed file, else of the plan.json written for it),
    write plan.json and plan.txt into ``out``; returns the SHA-256."""
    from scaleguard.remediators.render import plan_text, plan_view
    from scaleguard.remediators.validate import plan_sha256

    data = the_plan.to_json().encode("utf-8")
    sha256 = reviewed or plan_sha256(data)
    o.out_console.print(plan_view(the_plan, sha256))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "plan.json").write_bytes(data)
        (out / "plan.txt").write_text(plan_text(the_plan, sha256), encoding="utf-8")
        o.err.print(f"plan written to {console_text(str(out / 'plan.json'))} (readable: plan.txt), SHA-256 {sha256}")
    return sha256


def _lease(o: FixOptions, inventory: Path, run_id: str) -> ClusterLease:
    """The lease on every master of the inventory, through a transport of its own."""
    from scaleguard.apply.lease import ClusterLease
    from scaleguard.apply.transport import inventory_of

    transport = _transport(inventory, o.insecure)  # first: it says what is wrong with the inventory
    masters = [(c.name, n.name) for c in inventory_of(inventory).clusters for n in c.masters]
    return ClusterLease(transport, masters, run_id, ttl_s=o.lease_ttl, on_event=_events(o.err))


def _transport(inventory: Path, insecure: bool) -> WinRMTransport:
    from scaleguard.apply.transport import WinRMTransport

    try:
        return WinRMTransport(inventory, insecure=insecure)
    except _usage_errors() as exc:
        raise FixUsageError(str(exc)) from exc


def _inputs(
    o: FixOptions, documents: dict[tuple[str, str], dict[str, Any]] | None = None
) -> tuple[FindingsFile, Snapshot]:
    """The findings file and snapshot to plan from; given the ``documents`` a lease read, the live cluster with
    every node read after the lease was taken (the masters in the very round that took it)."""
    from scaleguard.findings.model import FindingsFile
    from scaleguard.snapshot.model import Snapshot

    if o.findings is not None and documents is None:
        snapshot_path = o.snapshot or o.findings.parent / "snapshot.json"
        try:
            return FindingsFile.read(o.findings), Snapshot.read(snapshot_path)
        except (OSError, ValueError) as exc:
            raise FixUsageError(f"cannot read the findings/snapshot: {exc}") from exc
    inventory = o.inventory
    if inventory is None:
        raise FixUsageError("give --inventory FILE (live) or --findings FILE [--snapshot FILE]")
    from scaleguard.apply.verify import fresh_read, reaudit

    o.err.print("collecting and evaluating…")
    try:
        if documents is None:
            snap, found = reaudit(inventory, policy_dirs=o.policy_dirs, insecure=o.insecure, concurrency=o.concurrency)
        else:
            snap, found = fresh_read(
                inventory, documents, policy_dirs=o.policy_dirs, insecure=o.insecure, concurrency=o.concurrency
            )
    except _usage_errors() as exc:
        raise FixUsageError(str(exc)) from exc
    return FindingsFile(generated_at=datetime.now(UTC), source=str(inventory), mode="live", findings=found), snap


def _load_pfx(path: Path, env: str | None, cache: dict[str, str]) -> MasterPfx:
    from scaleguard.remediators.model import SecretRef
    from scaleguard.remediators.pfx import PfxError, load_master_pfx

    if env:
        password = os.environ.get(env)
        if password is None:
            raise FixUsageError(f"--master-pfx-password-env {env}: the variable is not set")
        reference = SecretRef(secret_env=env)
    else:
        if not sys.stdin.isatty():
            raise FixUsageError("--master-pfx needs --master-pfx-password-env (no terminal to prompt on)")
        password = getpass.getpass(f"password of {path}: ")
        reference = SecretRef(secret_prompt="master PFX password")
    cache[reference.secret_env or reference.secret_prompt or ""] = password
    try:
        return load_master_pfx(path, password, reference)
    except PfxError as exc:
        raise FixUsageError(str(exc)) from exc


def _apply(
    o: FixOptions,
    inventory: Path,
    the_plan: Plan,
    sha256: str,
    before: list[Finding],
    current: Snapshot,
    run_id: str,
    lease: ClusterLease,
    secrets: Callable[[SecretRef], str],
) -> int:
    from scaleguard.apply.journal import Journal
    from scaleguard.apply.runner import Executor
    from scaleguard.apply.verify import after_run, canary_verdict, compare, recollect
    from scaleguard.remediators.render import apply_view, verification_view

    err, out_console = o.err, o.out_console
    transport = _transport(inventory, o.insecure)

    def canary_check(nodes: list[tuple[str, str]]) -> str | None:
        err.print(f"re-collecting and re-evaluating the canaries ({', '.join(n for _c, n in nodes)})…")
        _snap, found = recollect(
            inventory, nodes, current, policy_dirs=o.policy_dirs, insecure=o.insecure, concurrency=o.concurrency
        )
        return canary_verdict(the_plan, before, found, nodes)

    with Journal(o.journal) as journal:
        executor = Executor(
            the_plan, transport, journal, source=str(inventory), secrets=secrets,
            on_event=_events(err, progress=o.progress), current=current, findings=before, controls=o.controls,
            canary_check=canary_check, run_id=run_id, plan_sha256=sha256, read_after=True,
        )
        try:
            report = executor.run()
        except KeyboardInterrupt:
            err.print(
                f"[bold red]interrupted.[/] Undo what run {run_id} changed with: "
                f"scaleguard fix --undo {run_id} --inventory {console_text(str(inventory))}"
            )
            raise typer.Exit(130) from None
        finally:
            transport.close()
    out_console.print(apply_view(report))
    err.print(f"{report.changes} change(s) made on the nodes")
    err.print(
        f"journal: {console_text(str(o.journal))}  (undo: scaleguard fix --undo {report.run_id} --inventory …)"
    )
    err.print("re-collecting and re-evaluating…")
    # every change is made: the lease goes back while the nodes are read again (reading needs no lease)
    releasing = threading.Thread(target=lease.release, name="lease-release")
    releasing.start()
    _snapshot, after = after_run(
        inventory, current, executor.documents, executor.touched, policy_dirs=o.policy_dirs, insecure=o.insecure,
        concurrency=o.concurrency,
    )
    releasing.join()
    verification = compare(the_plan, before, after)
    out_console.print(verification_view(verification))
    out = o.out
    if out is not None:
        payload = {
            "run_id": report.run_id,
            "plan_sha256": sha256,
            "status": report.status,
            "changes": report.changes,
            "halted": report.halted,
            "units": report.units,
            "steps": {k: asdict(v) for k, v in report.steps.items()},
            "rollback_errors": report.rollback_errors,
            "fixed": verification.fixed,
            "still_failing": verification.still_failing,
            "new_problems": verification.new_problems,
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "apply.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    ok = report.status in ("done", "nothing") and report.halted is None and verification.clean
    return int(ExitCode.OK if ok else ExitCode.FAILING)


def _events(err: Console, *, progress: bool = True) -> Callable[[str, str], None]:
    """How a run's events reach stderr: the one-line-per-step kinds as plain text (a 200-node run prints
    over a thousand, from the thread that schedules the rounds), the rest through rich. ``--no-progress``
    drops only the periodic N done/ETA lines; what happened to each step is always said."""

    from scaleguard.safetext import terminal_safe

    def emit(kind: str, text: str) -> None:
        if kind == "progress" and not progress:
            return
        if kind in ("run", "done", "skip"):
            err.file.write(f"  {kind:>5} {terminal_safe(text)}\n")
        else:
            err.print(f"  {kind:>5} {console_text(text)}")

    return emit


def _undo(o: FixOptions, run_id: str) -> int:
    from scaleguard.apply.journal import Journal, new_run_id
    from scaleguard.apply.lease import LeaseHeld
    from scaleguard.apply.undo import UndoError, pending_entries, undo_run
    from scaleguard.remediators.render import undo_view

    inventory, journal_path, err = o.inventory, o.journal, o.err
    if inventory is None:
        raise FixUsageError("--undo needs --inventory to reach the nodes")
    if not journal_path.is_file():
        raise FixUsageError(f"no journal at {journal_path}")
    with Journal(journal_path) as journal:
        if journal.run(run_id) is None:
            raise FixUsageError(f"no run {run_id!r} in {journal_path}")
        todo = pending_entries(journal, run_id)
        if todo:
            _confirm(f"Revert {len(todo)} action(s) of run {run_id}?", o.yes)
        undo_id = new_run_id()
        try:
            lease = _lease(o, inventory, undo_id)
            lease.acquire(break_expired=o.break_lease, replaces=run_id)  # the run it undoes may still hold it
        except LeaseHeld as exc:
            err.print(f"[bold red]scaleguard fix: refused:[/] {console_text(str(exc))}. Nothing was changed.")
            return int(ExitCode.FAILING)
        lease.keep_renewed()
        try:
            transport = _transport(inventory, o.insecure)
            try:
                report = undo_run(
                    run_id, transport, journal, on_event=_events(err), undo_id=undo_id, concurrency=o.concurrency
                )
            finally:
                transport.close()
        except UndoError as exc:
            raise FixUsageError(str(exc)) from exc
        finally:
            lease.release()
    make_console().print(undo_view(report))
    return int(ExitCode.OK if report.ok else ExitCode.FAILING)
