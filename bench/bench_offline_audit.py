"""Offline audit of a 1,000-node fleet versus the floor: reading the files and parsing the certificates.

Goal (issue 2): the full audit costs at most 3x a bare pass that only reads every evidence file and parses
every certificate with `cryptography`, and stays under 1 GiB. Both are timed as whole processes, the way a
user meets them: the audit is `scaleguard audit --evidence FLEET --out DIR` (interpreter start, imports,
every report), the bare pass a Python process that imports `cryptography` and reads the same folder. Each
figure is the process's wall time and its CPU time (user + system, helpers it waited for included).
The package is byte-compiled first, as pip does when it installs it (and as `cryptography` in the bare pass
already is): a checkout run with ``PYTHONDONTWRITEBYTECODE`` set would otherwise compile every module from
source in every audit, a cost no installed copy pays.

A shared two-CPU machine is noisy, so the passes run ``--repeat`` times, interleaved — bare, audit, bare,
audit, ... — over the same freshly written folder (in the page cache for both), and every pair is printed;
the verdict is on the median of the pairs' ratios, with the worst pair shown next to it.
A third process, the floor, is timed after each pair and reported beside the verdict (not part of it): it
imports the libraries the audit needs and reads and parses every file once, the least any audit could do
before judging anything, so the distance between it and the audit is the audit's own code.
Run with ``make bench`` (or ``python bench/bench_offline_audit.py --workers 999 --repeat 5``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

RATIO_GOAL = 3.0
MEMORY_GOAL_MIB = 1024


def bare_pass(cluster: Path) -> None:
    """The floor: every file read once, every certificate parsed (DER, else PEM), nothing judged."""
    from cryptography import x509

    for root, _dirs, names in os.walk(cluster):
        in_store = os.path.basename(os.path.dirname(root)) == "certs"
        for name in names:
            data = Path(root, name).read_bytes()
            if in_store:
                try:
                    x509.load_der_x509_certificate(data)
                except ValueError:
                    x509.load_pem_x509_certificate(data)


def floor_pass(cluster: Path) -> None:
    """What no audit can avoid: the libraries it needs imported, every file read, each distinct certificate
    parsed and hashed, each settings file parsed with defusedxml, each JSON file loaded. No fact, no policy
    and no output: the gap between this and the audit is the audit's own code."""
    import json

    import cel  # noqa: F401
    import defusedxml.ElementTree
    import prometheus_client  # noqa: F401
    import pydantic  # noqa: F401
    import typer  # noqa: F401
    import yaml  # noqa: F401
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    parsed: dict[bytes, bytes] = {}
    for root, _dirs, names in os.walk(cluster):
        in_store = os.path.basename(os.path.dirname(root)) == "certs"
        for name in names:
            data = Path(root, name).read_bytes()
            if in_store and data not in parsed:
                try:
                    certificate = x509.load_der_x509_certificate(data)
                except ValueError:
                    certificate = x509.load_pem_x509_certificate(data)
                parsed[data] = certificate.fingerprint(hashes.SHA1())
            elif name.endswith(".config"):
                defusedxml.ElementTree.fromstring(data)
            elif name.endswith(".json"):
                json.loads(data)


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    max_rss_mib: float


def timed(argv: list[str], ok: set[int]) -> Run:
    env = {**os.environ, "SCALEGUARD_HISTORY": "off"}  # never write the developer's history file
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read().decode() if child.stderr else ""
    if child.returncode not in ok:
        sys.exit(f"{argv[1:3]} exited {child.returncode}:\n{stderr}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)  # KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=999)
    parser.add_argument("--repeat", type=int, default=5, help="bare/audit pairs to run (default 5)")
    parser.add_argument("--keep", type=Path, help="write the fleet and reports here instead of a temp dir")
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--floor", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_pass(args.bare)
        return 0
    if args.floor:
        floor_pass(args.floor)
        return 0

    import scaleguard
    from scaleguard.lab.scenario import fleet_scenario

    with tempfile.TemporaryDirectory(prefix="scaleguard-bench-") as tmp:
        base = args.keep or Path(tmp)
        cluster, out = base / "CONTOSO-SSIS", base / "report"
        scenario = fleet_scenario(args.workers)
        scenario.write(cluster)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(scaleguard.__file__).parent)], check=True)
        bare_argv = [sys.executable, __file__, "--bare", str(cluster)]
        audit_argv = [sys.executable, "-m", "scaleguard.cli.main", "audit", "--evidence", str(cluster),
                      "--out", str(out)]
        floor_argv = [sys.executable, __file__, "--floor", str(cluster)]
        pairs, floors = [], []
        for _ in range(max(1, args.repeat)):
            pairs.append((timed(bare_argv, {0}), timed(audit_argv, {0, 1})))  # exit code 1: planted defects fail
            floors.append(timed(floor_argv, {0}))

    print(f"fleet:   {len(scenario.nodes)} nodes (1 master, {args.workers} workers); "
          f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    for number, (bare, audit) in enumerate(pairs, start=1):
        print(f"pair {number}:  bare {bare.wall:.2f} s wall / {bare.cpu:.2f} s CPU, "
              f"audit {audit.wall:.2f} s wall / {audit.cpu:.2f} s CPU -> {audit.wall / bare.wall:.2f}x; "
              f"peak RSS audit {audit.max_rss_mib:.0f} MiB")
    ratios = [audit.wall / bare.wall for bare, audit in pairs]
    ratio = statistics.median(ratios)
    memory = max(audit.max_rss_mib for _, audit in pairs)
    bare_cpu, audit_cpu = statistics.median(b.cpu for b, _ in pairs), statistics.median(a.cpu for _, a in pairs)
    print(f"medians: bare {statistics.median(b.wall for b, _ in pairs):.2f} s wall / {bare_cpu:.2f} s CPU, "
          f"audit {statistics.median(a.wall for _, a in pairs):.2f} s wall / {audit_cpu:.2f} s CPU "
          f"(CPU ratio {audit_cpu / bare_cpu:.2f}x: what the wall ratio is on an idle machine)")
    floor_wall, floor_cpu = statistics.median(f.wall for f in floors), statistics.median(f.cpu for f in floors)
    print(f"floor:   {floor_wall:.2f} s wall / {floor_cpu:.2f} s CPU (median), "
          f"{floor_cpu / bare_cpu:.2f}x the bare pass in CPU: the audit's libraries imported, every file read and "
          f"parsed once, nothing judged or written; "
          f"the audit is {audit_cpu / floor_cpu:.2f}x that")
    print(f"ratio:   median {ratio:.2f}x the bare pass over {len(pairs)} pairs (best {min(ratios):.2f}x, worst "
          f"{max(ratios):.2f}x; goal <= {RATIO_GOAL:.0f}x: {'ok' if ratio <= RATIO_GOAL else 'OVER GOAL'}); "
          f"peak memory {memory:.0f} MiB (goal < {MEMORY_GOAL_MIB} MiB: "
          f"{'ok' if memory < MEMORY_GOAL_MIB else 'OVER GOAL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
