"""`scaleguard lab create`: writes the example folder, and never writes into a folder that has content."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from scaleguard.cli.main import app

runner = CliRunner()


def test_creates_the_demo_with_its_readme(tmp_path: Path) -> None:
    folder = tmp_path / "CONTOSO-SSIS"
    result = runner.invoke(app, ["lab", "create", str(folder), "--workers", "4", "--seed", "3"])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == [
        "MASTER01", "README.txt", "WORKER01", "WORKER02", "WORKER03", "WORKER04",
    ]
    assert "planted: WORKER02:" in result.stderr
    assert "WORKER03: its worker certificate expires in 20 days" in (folder / "README.txt").read_text()


def test_healthy_plants_nothing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["lab", "create", str(tmp_path / "ok"), "--healthy", "--workers", "1"])
    assert result.exit_code == 0 and "planted" not in result.stderr
    assert "none - every check should pass" in (tmp_path / "ok" / "README.txt").read_text()


def test_refuses_a_folder_with_content(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["lab", "create", str(tmp_path)])
    assert result.exit_code == 2 and "exists and is not an empty folder" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
