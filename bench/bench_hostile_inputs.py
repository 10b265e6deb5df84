"""Hostile and oversized evidence: how long each case takes and how much memory it needs.

Each case runs in a fresh child process (imports done before the clock starts) and reports its wall time;
the parent reads the child's peak RSS from ``wait4``, so the figures are per case and do not include
the generator's memory. Cases:

* ``netsh-40k-spaces`` / ``netsh-4mib-utf16``: the netsh parser on ``"a" + " " * N + "x"`` (the shape
  that made the old field pattern quadratic), 40,000 characters and a 4 MiB UTF-16 file;
* ``pem-128k`` / ``pem-1mib``: the certificate reader on repeated ``-----BEGIN A-----`` markers;
* ``bindings-150k``: a full offline audit (every report) of a 3-node cluster whose master's
  ``sslcert.txt`` holds 150,000 bindings (3.6 MB);
* ``waivers-20k``: a full offline audit of the same cluster without the big file, with a 20,000-entry
  waiver file (1.4 MB), as the CLI runs it (the file is checked, then applied);
* ``certificates-N``: a full offline audit with N distinct certificates in one node's Root store.

Run ``python bench/bench_hostile_inputs.py`` (``--only NAME`` for one case); note ``uptime``'s load
average next to the figures, the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

MIB = 1024 * 1024
BINDINGS = 150_000
WAIVERS = 20_000
CERTIFICATES = 2_000


def _cluster(folder: Path) -> Path:
    from scaleguard.lab.scenario import demo_scenario

    cluster = folder / "CONTOSO"
    demo_scenario(2, seed=3, defects=False).write(cluster)
    return cluster


def _bindings_text(count: int) -> bytes:
    lines = ["", "SSL Certificate bindings:", "-------------------------", ""]
    lines += [f"IP:port : 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:443" for i in range(count)]
    return ("\n".join(lines) + "\n").encode()


def _waivers_yaml(count: int) -> str:
    expires = (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
    rows = ["waivers:"]
    for i in range(count):
        rows += [f"  - policy: SO-W{i % 90:02d}", f"    node: WRK-{i:05d}", "    reason: accepted in CHG-1",
                 "    owner: ops", f"    expires: {expires}"]
    return "\n".join(rows) + "\n"


def _write_certificates(cluster: Path, count: int) -> None:
    from scaleguard.lab.certs import CertSpec, make_certificate

    ca = make_certificate(CertSpec(common_names=("bench CA",), ca=True, key_seed=77))
    store = cluster / "WORKER01" / "certs" / "Root"
    for index in range(count):
        spec = CertSpec(common_names=(f"host{index:05d}",), serial=index + 1, key_seed=78)
        (store / f"c{index:05d}.cer").write_bytes(make_certificate(spec, issuer=ca).der)


# --- what a child runs ---------------------------------------------------------------------------------


def _child_parse(kind: str, path: str) -> dict[str, Any]:
    from scaleguard.collectors.parsers.certs import CertificateParseError, load_certificates_with_notes
    from scaleguard.collectors.parsers.netsh import NetshParseError, parse_sslcert_with_notes

    data = Path(path).read_bytes()
    start = time.perf_counter()
    try:
        if kind == "netsh":
            parse_sslcert_with_notes(data)
        else:
            load_certificates_with_notes(data, source="bench.pem")
    except (NetshParseError, CertificateParseError):
        pass
    return {"seconds": time.perf_counter() - start, "bytes": len(data)}


def _child_audit(cluster: str, out: str, waivers: str | None) -> dict[str, Any]:
    from scaleguard.cli.audit_cmd import _check_waivers
    from scaleguard.pipeline import AuditOptions, run_audit

    start = time.perf_counter()
    if waivers is not None:
        _check_waivers(Path(waivers), None)  # what the CLI does before collecting
    result = run_audit(AuditOptions(
        out_dir=Path(out), evidence=Path(cluster), progress=False, history=Path("off"),
        waivers=Path(waivers) if waivers else None,
    ))
    return {"seconds": time.perf_counter() - start, "findings": len(result.findings.findings),
            "exit": int(result.exit_code)}


def _run_child(args: list[str], timeout: float) -> dict[str, Any]:
    process = subprocess.Popen(  # the audit's own warnings (20,000 stale waivers) are not the figures
        [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            process.kill()
            os.wait4(process.pid, 0)
            return {"seconds": None, "note": f"killed after {timeout:.0f} s"}
        time.sleep(0.05)
    assert process.stdout is not None
    output = process.stdout.read()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        return {"seconds": None, "note": f"child exited {process.returncode}"}
    result: dict[str, Any] = json.loads(output)
    result["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)  # KiB on Linux
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run only the case with this name")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a case is killed")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        kind, *rest = options.child
        if kind == "audit":
            cluster, out, waivers = rest
            print(json.dumps(_child_audit(cluster, out, waivers or None)))
        else:
            print(json.dumps(_child_parse(kind, rest[0])))
        return

    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as temp:
        work = Path(temp)
        baseline = _cluster(work / "plain")
        cases: dict[str, Callable[[], list[str]]] = {}

        def parse_case(name: str, kind: str, data: bytes) -> None:
            def prepare() -> list[str]:
                path = work / name
                path.write_bytes(data)
                return [kind, str(path)]

            cases[name] = prepare

        parse_case("netsh-40k-spaces", "netsh", ("a" + " " * 40_000 + "x").encode())
        parse_case("netsh-4mib-utf16", "netsh",
                   b"\xff\xfe" + ("a" + " " * (2 * MIB - 3) + "x").encode("utf-16-le"))
        parse_case("pem-128k", "pem", b"-----BEGIN A-----" * (128 * 1024 // 17))
        parse_case("pem-1mib", "pem", b"-----BEGIN A-----" * (MIB // 17))

        def bindings() -> list[str]:
            cluster = _cluster(work / "bindings")
            text = _bindings_text(BINDINGS)
            (cluster / "MASTER01" / "sslcert.txt").write_bytes(text)
            print(f"  (sslcert.txt: {len(text) / 1e6:.1f} MB)", flush=True)
            return ["audit", str(cluster), str(work / "bindings-out"), ""]

        def waivers() -> list[str]:
            path = work / "waivers.yaml"
            path.write_text(_waivers_yaml(WAIVERS), encoding="utf-8")
            print(f"  (waivers.yaml: {path.stat().st_size / 1e6:.1f} MB)", flush=True)
            return ["audit", str(baseline), str(work / "waivers-out"), str(path)]

        def certificates() -> list[str]:
            cluster = _cluster(work / "certs")
            _write_certificates(cluster, CERTIFICATES)
            return ["audit", str(cluster), str(work / "certs-out"), ""]

        cases["baseline-audit"] = lambda: ["audit", str(baseline), str(work / "baseline-out"), ""]
        cases[f"bindings-{BINDINGS // 1000}k"] = bindings
        cases[f"waivers-{WAIVERS // 1000}k"] = waivers
        cases[f"certificates-{CERTIFICATES}"] = certificates

        print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)
        for name, prepare in cases.items():
            if options.only and name != options.only:
                continue
            print(f"{name}:", flush=True)
            result = _run_child(prepare(), options.timeout)
            seconds = result.pop("seconds")
            shown = f"{seconds:.2f} s" if seconds is not None else result.pop("note")
            print(f"  {shown}, peak RSS {result.pop('peak_rss_mib', '?')} MiB  {result or ''}", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    main()
