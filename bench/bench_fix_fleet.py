"""Repair at fleet speed: ``fix --apply`` after the master certificate expired, against a full collection.

200 workers and one master whose certificate expires in 10 days (the plan rotates it: the master makes
a new certificate, every worker trusts it, the master binds it, configures it and restarts, every worker
is re-pinned and restarted). The lab runs at ``--latency-ms 50 --exec-ms 1000`` in its own process and,
by default, ``--service-ms 0``: the conditions the goal was set in. With ``--service-ms 500`` (the lab's
own default) every restart also waits for its service to stop and start, which no collection does.

Measured in one run, in this process: a plain collection of every node (what ``audit`` spends on the
network), then the whole ``scaleguard fix --inventory --apply --yes`` (lease, fresh collection, plan,
parallel apply, release, re-collection and re-evaluation), then an ``audit`` whose exit code says whether
the cluster is clean. Goal: fix time ≤ 4 × collection time. Then ``fix --undo`` of that run, timed, and an
``audit`` that must find the cluster as it was (the expiring master certificate fails again, exit 1).

The serial time beside it is *computed*, not run (a serial run takes tens of minutes): the agent requests
the pre-parallel executor sent one at a time (one per step, plus a read per config write) times the
median duration of one agent round measured in this run, plus two collections at concurrency 1 (the
measured collection's per-node time times the nodes).

Prints figures; not a test. Run: ``python bench/bench_fix_fleet.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--exec-ms", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--service-ms", type=int, default=0, help="how long a service takes to stop or start")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    from typer.testing import CliRunner

    from scaleguard.apply.journal import Journal
    from scaleguard.cli.main import app
    from scaleguard.collectors.live import collect_inventory, summarize
    from scaleguard.lab.process import LabProcess
    from scaleguard.lab.scenario import fleet_scenario
    from scaleguard.lab.serve import PASSWORD_ENV

    password = secrets.token_urlsafe(16)
    os.environ[PASSWORD_ENV] = password
    os.environ["SCALEGUARD_HISTORY"] = "off"  # never write the developer's history file
    nodes = args.workers + 1
    with tempfile.TemporaryDirectory(prefix="scaleguard-bench-fix-") as tmp:
        folder = Path(tmp) / "fleet"
        fleet_scenario(args.workers, seed=7, defect_every=0, master_days_left=10).write(folder)
        lab = LabProcess(
            folder, Path(tmp) / "lab", password, latency_ms=args.latency_ms, exec_ms=args.exec_ms,
            service_ms=args.service_ms,
        )
        with lab:
            start = time.perf_counter()
            snapshot = collect_inventory(lab.inventory, concurrency=args.concurrency, insecure=False, progress=False)
            collection_s = time.perf_counter() - start
            states = dict(summarize(snapshot).states)

            journal = Path(tmp) / "journal.sqlite"
            command = [
                "fix", "--inventory", str(lab.inventory), "--apply", "--yes", "--journal", str(journal),
                "--concurrency", str(args.concurrency),
            ]
            start = time.perf_counter()
            fixed = CliRunner().invoke(app, command, catch_exceptions=False)
            fix_s = time.perf_counter() - start

            audit = CliRunner().invoke(
                app, ["audit", "--inventory", str(lab.inventory), "--out", str(Path(tmp) / "audit"),
                      "--concurrency", str(args.concurrency)],
                catch_exceptions=False,
            )
            with Journal(journal) as j:
                run_id = j.runs()[0].run_id
            start = time.perf_counter()
            undone = CliRunner().invoke(
                app, ["fix", "--undo", run_id, "--inventory", str(lab.inventory), "--yes", "--journal", str(journal),
                      "--concurrency", str(args.concurrency)],
                catch_exceptions=False,
            )
            undo_s = time.perf_counter() - start
            after_undo = CliRunner().invoke(
                app, ["audit", "--inventory", str(lab.inventory), "--out", str(Path(tmp) / "audit-undone"),
                      "--concurrency", str(args.concurrency)],
                catch_exceptions=False,
            )
        with Journal(journal) as j:
            run = j.run(run_id)
            assert run is not None
            entries = [e for e in j.entries(run.run_id) if e.phase == "apply" and e.status == "done"]
            reverts = [e for r in j.runs() if r.undo_of == run_id for e in j.entries(r.run_id) if e.status == "done"]
    apply_s = _seconds(run.started_at, run.finished_at)
    rounds: dict[tuple[str, str], float] = {}
    for entry in entries:
        rounds[(entry.node, entry.finished_at or "")] = _seconds(entry.started_at, entry.finished_at)
    round_s = statistics.median(rounds.values())
    requests = len(entries) + sum(1 for e in entries if e.action == "write_config")
    serial_s = requests * round_s + 2 * nodes * (collection_s * args.concurrency / nodes)
    load = os.getloadavg()
    print(f"{args.workers} workers + 1 master, lab --latency-ms {args.latency_ms} --exec-ms {args.exec_ms} "
          f"--service-ms {args.service_ms}, --concurrency {args.concurrency}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"collection: {collection_s:.2f} s (states {states})")
    print(f"fix --apply: {fix_s:.2f} s (exit {fixed.exit_code}; {len(entries)} actions in {len(rounds)} agent "
          f"rounds; apply phase {apply_s:.2f} s, the rest is lease, fresh read, planning and verification)")
    ratio = fix_s / collection_s
    print(f"fix / collection = {ratio:.2f} (goal ≤ 4) → {'OK' if ratio <= 4 else 'OVER'}")
    print(f"serial (computed): {requests} requests one at a time × median round {round_s:.2f} s + 2 collections "
          f"at concurrency 1 ≈ {serial_s:.0f} s ({serial_s / fix_s:.0f}× the parallel fix)")
    print(f"audit after the fix: exit {audit.exit_code} ({'clean' if audit.exit_code == 0 else 'NOT clean'})")
    revert_s = statistics.median(_seconds(e.started_at, e.finished_at) for e in reverts) if reverts else 0.0
    print(f"fix --undo: {undo_s:.2f} s (exit {undone.exit_code}; {len(reverts)} reverts; one at a time they would "
          f"take ≈ {len(reverts) * revert_s:.0f} s at the median revert of {revert_s:.2f} s)")
    print(f"audit after the undo: exit {after_undo.exit_code} "
          f"({'as before the fix' if after_undo.exit_code == 1 else 'NOT as before'})")
    if fixed.exit_code != 0 or audit.exit_code != 0 or undone.exit_code != 0 or after_undo.exit_code != 1:
        print(fixed.output[-3000:], undone.output[-3000:])
        return 1
    return 0 if ratio <= 4 else 1


def _seconds(started: str | None, finished: str | None) -> float:
    if not started or not finished:
        return 0.0
    return (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()


if __name__ == "__main__":
    sys.exit(main())
