"""How much a second CPU is worth on this machine right now: a fixed pure-Python loop alone, then two at once.

The offline audit uses two processes where the bare pass it is compared with uses one, so on a shared
(virtual) machine whose second CPU is not always there, the audit's ratio moves with the host rather than
with the code. This prints, for ``--repeat`` rounds, the loop's time alone and each copy's time when two
run together; a speed-up of 2.0 means two full CPUs, 1.0 means the two copies share one.
Run with ``python bench/bench_host_parallelism.py``; ``make bench`` measures one round of it around each pair.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

LOOP = 4_000_000


def spin() -> float:
    start = time.perf_counter()
    total = 0
    for i in range(LOOP):
        total += i * i % 7
    return time.perf_counter() - start


def two_at_once() -> tuple[float, float]:
    """Wall time of two copies started together (one forked), and the slower copy's own time."""
    read_end, write_end = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write_end, repr(spin()).encode())
        os._exit(0)
    mine = spin()
    os.waitpid(pid, 0)
    theirs = float(os.read(read_end, 64))
    os.close(read_end)
    os.close(write_end)
    return time.perf_counter() - start, max(mine, theirs)


def speedup() -> float:
    """One round: the loop alone against two copies at once (2.0 = a full second CPU); NaN without fork."""
    if not hasattr(os, "fork"):
        return float("nan")
    alone = spin()
    wall, _slower = two_at_once()
    return 2 * alone / wall


def summary(speedups: list[float]) -> str:
    return (f"second CPU:   median speed-up {statistics.median(speedups):.2f}x over {len(speedups)} rounds "
            f"(min {min(speedups):.2f}x, max {max(speedups):.2f}x; 2.00x = a full second CPU)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not hasattr(os, "fork"):
        print("no fork on this platform: the audit runs in one process here")
        return 0
    speedups = []
    for number in range(1, max(1, args.repeat) + 1):
        alone = spin()
        wall, slower = two_at_once()
        speedups.append(2 * alone / wall)
        print(f"round {number}: alone {alone:.2f} s; two at once {wall:.2f} s (slower copy {slower:.2f} s) "
              f"-> speed-up {speedups[-1]:.2f}x")
    print(f"{summary(speedups)}; load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
