"""``scaleguard lab demo DIR``: the whole story in one command, with nothing but Python (Windows jump hosts).

Each step runs the CLI in its own process, as a person would, so the demo shows exactly what the commands
do; a step whose exit code breaks the demo's promise stops it, and the lab is stopped on the way out,
whatever happened.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scaleguard.history.store import HISTORY_ENV
from scaleguard.lab.process import LabProcess
from scaleguard.lab.serve import PASSWORD_ENV

DEFAULT_PASSWORD = "scaleguard-demo-lab"
"""The lab's own password (it guards nothing but the simulator on 127.0.0.1); $SCALEGUARD_LAB_PASSWORD wins."""
_CLI = "import sys; from scaleguard.cli.main import app; sys.argv[0] = 'scaleguard'; app()"


class DemoFailed(RuntimeError):
    """A step did not do what the demo promises; the message says which."""


@dataclass(frozen=True)
class DemoOptions:
    folder: Path
    latency_ms: int = 20
    exec_ms: int = 300
    progress: bool = True


def run_demo(options: DemoOptions, say: Callable[[str], None]) -> dict[str, Path]:
    """Every step in order; returns the artefacts to look at, raises :class:`DemoFailed` on a broken promise."""
    root = options.folder
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DemoFailed(f"{root} exists and is not an empty folder; remove it or choose a new one")
    password = os.environ.get(PASSWORD_ENV) or DEFAULT_PASSWORD
    # its audits keep their history in the demo folder, so the demo leaves nothing in the user's data folder
    env = {**os.environ, PASSWORD_ENV: password, HISTORY_ENV: str(root / "history.sqlite")}
    evidence = root / "CONTOSO-SSIS"
    quiet = [] if options.progress else ["--no-progress"]

    def cli(*args: str | Path, capture: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", _CLI, *map(str, args)], env=env, text=True, check=False,
            capture_output=capture, stdin=subprocess.DEVNULL,
        )

    if cli("lab", "create", evidence).returncode != 0:
        raise DemoFailed("lab create failed")
    say("== offline audit of the evidence folder (the planted defects fail, exit 1)")
    code = cli("audit", "--evidence", evidence, "--out", root / "report", *quiet).returncode
    if code != 1:
        raise DemoFailed(f"the offline audit exited {code}, expected 1 (the planted defects)")
    say("== the same nodes served as WinRM hosts by the lab")
    with LabProcess(evidence, root / "lab", password, latency_ms=options.latency_ms, exec_ms=options.exec_ms) as lab:
        inventory = lab.inventory
        say(f"   inventory: {inventory}")
        say("== live audit over WinRM (the planted defects fail, exit 1)")
        code = cli("audit", "--inventory", inventory, "--out", root / "live-report", *quiet).returncode
        if code != 1:
            raise DemoFailed(f"the live audit exited {code}, expected 1 (the planted defects)")
        journal = root / "fix" / "journal.sqlite"
        fix: list[str | Path] = ["fix", "--inventory", inventory, "--journal", journal, "--apply", "--yes", *quiet]
        say("== fix --apply over WinRM")
        if cli(*fix, "--out", root / "fix").returncode != 0:
            raise DemoFailed("the fix did not fix everything")
        say("== audit after the fix (must be clean)")
        if cli("audit", "--inventory", inventory, "--out", root / "after-fix", *quiet).returncode != 0:
            raise DemoFailed("the audit after the fix is not clean")
        say("== fix --apply again (must find nothing to do)")
        again = cli(*fix, capture=True)
        sys.stderr.write(again.stdout + again.stderr)
        if again.returncode != 0:
            raise DemoFailed("the second fix failed")
        if "nothing to do" not in again.stdout + again.stderr:
            raise DemoFailed("the second fix changed something")
    return {
        "report": root / "report" / "report.html",
        "live report (collected over WinRM from the lab)": root / "live-report" / "report.html",
        "fix plan": root / "fix" / "plan.json",
        "what the fix did": root / "fix" / "apply.json",
        "report after the fix (clean)": root / "after-fix" / "report.html",
    }
