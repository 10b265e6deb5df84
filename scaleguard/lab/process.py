"""Run ``scaleguard lab serve`` as a child process (tests, benchmarks, the demo).

The lab must not share the auditor's GIL (an in-process simulator halves its throughput), so it always
runs in its own interpreter. Readiness is the inventory file appearing: the lab writes it
atomically only after every port listens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from scaleguard.lab import DEFAULT_SERVICE_MS
from scaleguard.lab.serve import PASSWORD_ENV

# The `scaleguard lab serve` command itself, without importing every other command (pandas, reports...):
# a lab starts in well under a second, which keeps the test suite and the benchmark quick.
_ENTRY = "from scaleguard.cli import lab_serve_cmd; from scaleguard.cli.groups import app; app()"


@dataclass
class LabProcess:
    evidence: Path
    workdir: Path
    password: str
    latency_ms: int = 0
    exec_ms: int = 0
    service_ms: int = DEFAULT_SERVICE_MS
    https: bool = False
    auth: str = "basic"
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    host_timeout: float | None = None
    port_base: int = 0
    startup_timeout: float = 60.0
    _process: subprocess.Popen[bytes] | None = None

    @property
    def inventory(self) -> Path:
        return self.workdir / "lab-inventory.yaml"

    def start(self) -> LabProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.inventory.unlink(missing_ok=True)
        command = [
            sys.executable, "-c", _ENTRY, "lab", "serve",
            "--evidence", str(self.evidence),
            "--inventory-out", str(self.inventory),
            "--latency-ms", str(self.latency_ms),
            "--exec-ms", str(self.exec_ms),
            "--service-ms", str(self.service_ms),
            "--auth", self.auth,
        ]
        if self.https:
            command.append("--https")
        if self.faults:
            faults_file = self.workdir / "lab-faults.json"
            faults_file.write_text(json.dumps(self.faults), encoding="utf-8")
            command += ["--faults", str(faults_file)]
        if self.port_base:
            command += ["--port-base", str(self.port_base)]
        if self.host_timeout is not None:
            command += ["--host-timeout", str(self.host_timeout)]
        root = str(Path(__file__).resolve().parents[2])  # the lab must import this very scaleguard
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, PASSWORD_ENV: self.password, "COLUMNS": "200", "PYTHONPATH": path}
        log = (self.workdir / "lab.log").open("wb")
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while not self.inventory.exists():
            if self._process.poll() is not None:
                raise RuntimeError(f"the lab exited with {self._process.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the lab did not start within {self.startup_timeout:g} s: {self.log()}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log(self) -> str:
        path = self.workdir / "lab.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stop(self) -> int | None:
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> LabProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
