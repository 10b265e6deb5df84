"""Offline audit of a 1,000-node fleet versus the floor: reading the files and parsing the certificates.

Goal (issue 2): the full audit — read + evaluate + every report — costs at most 3x a bare pass that only
reads every evidence file and parses every certificate with `cryptography`, and stays under 1 GiB.

Both passes run in fresh child processes over the same freshly written folder (so both find it in the
page cache), with imports done before the clock starts; each child reports its own peak RSS, so the
figures do not include the fleet generator's memory. A shared two-CPU machine is noisy (the same pass
varies by half from one run to the next), so the passes run ``--repeat`` times, interleaved — bare,
audit, bare, audit, ... — and every pair is printed; the verdict is on the median of the pairs' ratios
(each pair ran at nearly the same moment, under the same conditions), with the worst pair shown next
to it. Run with ``make bench`` (or ``python bench/bench_offline_audit.py --workers 999 --repeat 5``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_host_parallelism as host  # noqa: E402 - found through the line above

RATIO_GOAL = 3.0
MEMORY_GOAL_MIB = 1024


def bare_pass(cluster: Path) -> dict[str, Any]:
    """The floor: every file read once, every certificate parsed (DER, else PEM), nothing judged."""
    from cryptography import x509

    start = time.perf_counter()
    files = certs = size = 0
    for root, _dirs, names in os.walk(cluster):
        in_store = os.path.basename(os.path.dirname(root)) == "certs"
        for name in names:
            data = Path(root, name).read_bytes()
            files += 1
            size += len(data)
            if in_store:
                try:
                    x509.load_der_x509_certificate(data)
                except ValueError:
                    x509.load_pem_x509_certificate(data)
                certs += 1
    return {"seconds": time.perf_counter() - start, "files": files, "certificates": certs, "bytes": size}


def full_audit(cluster: Path, out: Path) -> dict[str, Any]:
    """What `scaleguard audit --evidence` does, stage by stage, without the CLI's printing."""
    import scaleguard.collectors.evidence
    import scaleguard.findings.postprocess
    import scaleguard.policies.engine
    import scaleguard.policies.loader
    import scaleguard.reports.registry  # noqa: F401 - imported before the clock starts
    from scaleguard.pipeline import AuditOptions, run_audit

    stages: dict[str, float] = {}
    marks: list[tuple[str, float]] = []
    start = time.perf_counter()
    result = run_audit(
        AuditOptions(out_dir=out, evidence=cluster, progress=False, allow_incomplete=True),
        on_stage=lambda stage: marks.append((stage, time.perf_counter())),
    )
    end = time.perf_counter()
    for (stage, at), (_next, until) in zip(marks, [*marks[1:], ("end", end)], strict=True):
        stages[stage] = until - at
    return {
        "seconds": end - start,
        "stages": stages,
        "findings": len(result.findings.findings),
        "failing": sum(1 for f in result.findings.findings if f.status.value == "fail"),
        "outputs": {name: path.stat().st_size for name, path in sorted(result.outputs.items())},
    }


def child(mode: str, cluster: Path, out: Path) -> None:
    result = bare_pass(cluster) if mode == "bare" else full_audit(cluster, out)
    result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    # the audit may fork helpers (scaleguard.parallel): the largest one's peak, pages shared with the
    # parent included
    result["children_max_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(result))


def run_child(mode: str, cluster: Path, out: Path) -> dict[str, Any]:
    env = {**os.environ, "SCALEGUARD_HISTORY": "off"}  # never write the developer's history file
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(cluster), str(out)],
        capture_output=True, text=True, env=env,
    )
    if done.returncode != 0:
        sys.exit(f"the {mode} pass failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=999)
    parser.add_argument("--repeat", type=int, default=5, help="bare/audit pairs to run (default 5)")
    parser.add_argument("--keep", type=Path, help="write the fleet and reports here instead of a temp dir")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "CLUSTER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, cluster, out = args.child
        child(mode, Path(cluster), Path(out))
        return 0

    from scaleguard.lab.scenario import fleet_scenario

    with tempfile.TemporaryDirectory(prefix="scaleguard-bench-") as tmp:
        base = args.keep or Path(tmp)
        cluster, out = base / "CONTOSO-SSIS", base / "report"
        start = time.perf_counter()
        scenario = fleet_scenario(args.workers)
        scenario.write(cluster)
        generated = time.perf_counter() - start
        pairs = []
        second_cpu = []  # what the host's second CPU was worth around each pair (bench_host_parallelism)
        for _ in range(max(1, args.repeat)):
            second_cpu.append(host.speedup())
            pairs.append((run_child("bare", cluster, out), run_child("audit", cluster, out)))

    nodes = len(scenario.nodes)
    bare, full = pairs[-1]
    print(f"fleet:        {nodes} nodes (1 master, {args.workers} workers), {bare['certificates']} "
          f"certificate files, {bare['files']} files, {bare['bytes'] / 2**20:.1f} MiB; "
          f"generated in {generated:.1f} s; load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    ratios = []
    for number, ((bare, full), speedup) in enumerate(zip(pairs, second_cpu, strict=True), start=1):
        ratios.append(full["seconds"] / bare["seconds"])
        stages = ", ".join(f"{stage} {secs:.2f}" for stage, secs in full["stages"].items())
        print(f"pair {number}:       bare {bare['seconds']:.2f} s, audit {full['seconds']:.2f} s ({stages}) "
              f"-> {ratios[-1]:.2f}x; second CPU {speedup:.2f}x; peak RSS bare {bare['max_rss_mib']:.0f} MiB, "
              f"audit {full['max_rss_mib']:.0f} MiB (largest forked helper {full['children_max_rss_mib']:.0f} MiB)")
    outputs = ", ".join(f"{name} {size / 2**20:.2f} MiB" for name, size in full["outputs"].items())
    print(f"findings:     {full['findings']} ({full['failing']} failing)")
    print(f"outputs:      {outputs}")
    bare_median = statistics.median(b["seconds"] for b, _ in pairs)
    audit_median = statistics.median(f["seconds"] for _, f in pairs)
    print(f"medians:      bare {bare_median:.2f} s, audit {audit_median:.2f} s "
          f"(ratio of medians {audit_median / bare_median:.2f}x)")
    print(host.summary(second_cpu) + ", one before each pair")
    ratio = statistics.median(ratios)
    memory = max(f["max_rss_mib"] for _, f in pairs)
    verdict_time = "ok" if ratio <= RATIO_GOAL else "OVER GOAL"
    verdict_mem = "ok" if memory < MEMORY_GOAL_MIB else "OVER GOAL"
    print(f"ratio:        median {ratio:.2f}x the bare pass over {len(pairs)} pairs (best {min(ratios):.2f}x, "
          f"worst {max(ratios):.2f}x; goal <= {RATIO_GOAL:.0f}x: {verdict_time}); peak memory {memory:.0f} MiB "
          f"(goal < {MEMORY_GOAL_MIB} MiB: {verdict_mem})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
