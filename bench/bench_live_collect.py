"""Live collection over WinRM against the lab: scaleguard's way versus the naive way.

Goal (issue 3): 200 lab hosts with ``--latency-ms 50 --exec-ms 1000`` collected at ``--concurrency 50``
within 1.5 × ⌈200/50⌉ × (6 × 50 ms + 1000 ms) = 7.8 s. Six exchanges is what one agent run costs on a
reused shell (Create, Command, Send, Receive, Signal, Delete); the exec time is paid once per host.

For comparison the same hosts are read the naive way: ``winrm.Session.run_ps`` once per artefact (a new
shell and TCP connection per call, 5 exchanges plus the exec time each), as most scripts do. The lab
answers those from the same node state (a ``# scaleguard-request:`` first line names the artefact).

The lab runs in its own process (it must not share the collector's GIL). Prints figures; not a test.
Run: ``python bench/bench_live_collect.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ARTEFACTS = ("identity", "sql", "configs", "stores", "bindings", "services", "schannel", "ssisdb")


def budget_s(hosts: int, concurrency: int, latency_ms: int, exec_ms: int) -> float:
    return 1.5 * math.ceil(hosts / concurrency) * (6 * latency_ms + exec_ms) / 1000


def scaleguard_way(inventory: Path, concurrency: int) -> tuple[float, dict[str, int]]:
    from scaleguard.collectors.live import collect_inventory, summarize

    start = time.perf_counter()
    snapshot = collect_inventory(inventory, concurrency=concurrency, insecure=False, progress=False)
    elapsed = time.perf_counter() - start
    return elapsed, dict(summarize(snapshot).states)


def naive_way(inventory: Path, concurrency: int, password: str) -> tuple[float, int, int]:
    """``Session.run_ps`` per artefact per host; returns (seconds, calls, failed calls)."""
    import winrm

    document = yaml.safe_load(inventory.read_text(encoding="utf-8"))
    user = document["defaults"]["transport"]["username"]
    endpoints = [
        f"http://{node['host']}:{node['port']}/wsman"
        for cluster in document["clusters"]
        for node in [*cluster.get("masters", []), *cluster.get("workers", [])]
    ]

    def one_host(endpoint: str) -> int:
        session = winrm.Session(endpoint, auth=(user, password), transport="basic", proxy=None)
        failed = 0
        for artefact in ARTEFACTS:
            request = json.dumps({"op": "collect", "sections": [artefact]})
            script = f"# scaleguard-request: {request}\n$ErrorActionPreference = 'Stop'\n"
            result = session.run_ps(script)
            failed += result.status_code != 0
        return failed

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        failures = sum(pool.map(one_host, endpoints))
    return time.perf_counter() - start, len(endpoints) * len(ARTEFACTS), failures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--exec-ms", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--skip-naive", action="store_true", help="only time scaleguard's way")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    from scaleguard.lab.process import LabProcess
    from scaleguard.lab.scenario import fleet_scenario
    from scaleguard.lab.serve import PASSWORD_ENV

    password = secrets.token_urlsafe(16)
    os.environ[PASSWORD_ENV] = password
    with tempfile.TemporaryDirectory(prefix="scaleguard-bench-live-") as tmp:
        folder = Path(tmp) / "fleet"
        fleet_scenario(args.hosts - 1, seed=7).write(folder)
        lab = LabProcess(
            folder, Path(tmp) / "lab", password, latency_ms=args.latency_ms, exec_ms=args.exec_ms
        )
        with lab:
            goal = budget_s(args.hosts, args.concurrency, args.latency_ms, args.exec_ms)
            elapsed, states = scaleguard_way(lab.inventory, args.concurrency)
            verdict = "OK" if elapsed <= goal and states.get("ok", 0) == args.hosts else "OVER BUDGET"
            print(
                f"scaleguard (Protocol, 1 shell/host, stdin agent): {args.hosts} hosts in {elapsed:.2f} s "
                f"at concurrency {args.concurrency}; states {states}"
            )
            print(
                f"  budget 1.5 × ⌈{args.hosts}/{args.concurrency}⌉ × (6 × {args.latency_ms} ms + "
                f"{args.exec_ms} ms) = {goal:.2f} s → {verdict} ({elapsed / goal:.0%} of budget)"
            )
            if not args.skip_naive:
                naive_s, calls, failed = naive_way(lab.inventory, args.concurrency, password)
                print(
                    f"naive (Session.run_ps per artefact, {len(ARTEFACTS)} artefacts/host): {calls} calls in "
                    f"{naive_s:.2f} s ({failed} failed) → {naive_s / elapsed:.1f}× slower"
                )
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
