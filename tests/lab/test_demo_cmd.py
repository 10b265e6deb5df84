"""`scaleguard lab demo DIR`: the Makefile's demo as one Python command (Windows jump hosts have no bash)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scaleguard.cli.main import app

pytestmark = pytest.mark.lab


def test_the_demo_runs_every_step_and_ends_clean(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    code = "import sys; from scaleguard.cli.main import app; sys.argv[0] = 'scaleguard'; app()"
    done = subprocess.run(
        [sys.executable, "-c", code, "lab", "demo", str(folder), "--latency-ms", "0", "--exec-ms", "0",
         "--no-progress"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stderr
    steps = ["== offline audit", "== the same nodes served", "== live audit", "== fix --apply over WinRM",
             "== audit after the fix", "== fix --apply again"]
    assert [out.find(s) for s in steps] == sorted(out.find(s) for s in steps) and all(s in out for s in steps)
    assert "Exit 1: failing findings" in out and "Exit 0: nothing failing" in out
    assert "nothing to do" in out
    for name in ("report", "live-report", "after-fix"):
        assert (folder / name / "report.html").is_file()
    assert (folder / "fix" / "plan.json").is_file() and (folder / "fix" / "journal.sqlite").is_file()
    assert (folder / "history.sqlite").is_file()  # the audits' history stays in the demo folder
    assert f"report after the fix (clean): {(folder / 'after-fix' / 'report.html').resolve()}" in " ".join(
        out.split()
    )


def test_the_demo_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me", encoding="utf-8")
    result = CliRunner().invoke(app, ["lab", "demo", str(tmp_path)])
    assert result.exit_code == 1
    assert "exists and is not an empty folder" in result.stderr
    assert (tmp_path / "mine.txt").read_text(encoding="utf-8") == "keep me"
