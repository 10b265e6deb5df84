"""Files handed to scaleguard (a plan to apply, a runbook's result) are read only when they are what they
claim: a regular file, not a link, within the caller's limit — and a pipe never blocks the read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scaleguard.cli.main import app
from scaleguard.safefile import UnsafeFile, read_limited


def test_a_regular_file_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(b"x" * 3000)
    assert read_limited(path, 3000) == b"x" * 3000


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(b"x" * 3001)
    with pytest.raises(UnsafeFile, match="larger than 3000 bytes"):
        read_limited(path, 3000)


def test_a_link_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_bytes(b"{}")
    link = tmp_path / "plan.json"
    link.symlink_to(target)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        read_limited(link, 3000)


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "plan.json"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeFile, match="not a regular file"):
        read_limited(fifo, 3000)


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_fix_refuses_such_a_plan_with_the_usage_exit_code(tmp_path: Path, kind: str) -> None:
    plan = tmp_path / "plan.json"
    if kind == "link":
        (tmp_path / "real.json").write_text("{}", encoding="utf-8")
        plan.symlink_to(tmp_path / "real.json")
    else:
        os.mkfifo(plan)
    result = CliRunner().invoke(app, ["fix", "--plan", str(plan), "--journal", str(tmp_path / "j.sqlite")])
    assert result.exit_code == 2, result.output
    assert ("symbolic link" if kind == "link" else "not a regular file") in result.output
    assert not (tmp_path / "j.sqlite").exists()


def test_a_file_named_on_the_command_line_may_be_a_link(tmp_path: Path) -> None:
    target = tmp_path / "shared" / "inventory.yaml"
    target.parent.mkdir()
    target.write_bytes(b"clusters: []\n")
    link = tmp_path / "inventory.yaml"
    link.symlink_to(target)
    assert read_limited(link, 3000, named=True) == b"clusters: []\n"
    os.mkfifo(tmp_path / "pipe.yaml")
    with pytest.raises(UnsafeFile, match="not a regular file"):
        read_limited(tmp_path / "pipe.yaml", 3000, named=True)


def test_a_policy_file_linked_into_a_policy_folder_is_not_read(tmp_path: Path) -> None:
    from scaleguard.policies.loader import load_directory

    outside = tmp_path / "outside.yaml"
    outside.write_text("not: a policy\n", encoding="utf-8")
    folder = tmp_path / "pack"
    folder.mkdir()
    (folder / "linked.yaml").symlink_to(outside)
    parsed = load_directory(folder)
    assert parsed.with_lines == []
    reason = f"cannot read: {folder / 'linked.yaml'} is a symbolic link; links are not followed"
    assert [p.reason for p in parsed.problems] == [reason]


@pytest.mark.parametrize("flag", ["--inventory", "--waivers"])
def test_an_inventory_or_waiver_file_that_is_a_pipe_is_a_usage_error_not_a_hang(tmp_path: Path, flag: str) -> None:
    from scaleguard.lab.scenario import demo_scenario

    pipe = tmp_path / "named.yaml"
    os.mkfifo(pipe)
    evidence = demo_scenario(defects=False).write(tmp_path / "CONTOSO-SSIS")
    source = ["--evidence", str(evidence), flag, str(pipe)] if flag == "--waivers" else [flag, str(pipe)]
    result = CliRunner().invoke(app, ["audit", *source, "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2, result.output
