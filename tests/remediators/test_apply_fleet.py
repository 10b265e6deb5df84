"""``fix --apply`` at fleet scale over WinRM: drift checks, re-applying, canaries, restart and failure limits.

The lab runs in this process (``served``); what the nodes went through is read from the lab's own state:
the action log of each node, its certificate stores, and the timeline of service stops and starts.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from fixcases import cluster_state

from scaleguard.lab.serve import PASSWORD_ENV
from scaleguard.remediators.configedit import edit_setting

PASSWORD = "Lab-" + secrets.token_urlsafe(12)
EXPIRING_MASTER = {"cn": ["master01.contoso.test", "MASTER01", "10.0.1.1"], "days_from": -700, "days": 710}
OLD_MASTER = {"cn": ["MASTER01"], "days_from": -900, "days": 800}


@pytest.fixture(autouse=True)
def _lab_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def workers(count: int) -> list[str]:
    return [f"WORKER{i:02d}" for i in range(1, count + 1)]


def rotation(count: int) -> dict[str, Any]:
    """A cluster whose master certificate is about to expire: the fix rotates it and re-pins every worker."""
    return {"workers": workers(count), "certs": {"master": EXPIRING_MASTER}}


def certificates(lab: Any) -> dict[str, tuple[list[str], list[str]]]:
    return {
        n.name: (sorted(c.thumbprint for c in n.root), sorted(c.thumbprint for c in n.my))
        for n in lab.lab.state.nodes()
    }


def actions(lab: Any) -> dict[str, list[str]]:
    return {n.name: [e["op"] for e in n.journal] for n in lab.lab.state.nodes()}


def test_applying_an_applied_plan_again_changes_nothing(served: Any, tmp_path: Path) -> None:
    lab = served(rotation(3))
    first = lab.fix("--apply", "--yes", "--out", str(tmp_path / "first"))
    assert first.exit_code == 0, first.output
    applied_certs, applied_actions = certificates(lab), actions(lab)
    assert applied_actions["WORKER03"]  # the first run did change the workers

    again = lab.fix("--plan", str(tmp_path / "first" / "plan.json"), "--apply", "--yes", "--out", str(tmp_path / "2"))
    assert again.exit_code == 0, again.output
    assert "0 change(s) made" in again.output
    assert certificates(lab) == applied_certs  # no new certificate anywhere
    assert actions(lab) == applied_actions  # not one action (no restart either) on any node
    report = json.loads((tmp_path / "2" / "apply.json").read_text(encoding="utf-8"))
    assert set(report["units"].values()) == {"unchanged"} and report["changes"] == 0
    assert lab.failing() == set()


def test_a_step_whose_node_changed_since_the_plan_stops_its_unit_as_stale(served: Any, tmp_path: Path) -> None:
    lab = served(
        {
            "workers": ["WORKER01", "WORKER02"],
            "certs": {"old": OLD_MASTER},
            "nodes": {"WORKER01": {"root_add": ["old"], "worker_settings": {"MasterHttpsCertThumbprint": "{old}"}}},
        }
    )
    dry = lab.fix("--out", str(tmp_path / "plan"))
    assert dry.exit_code == 0, dry.output
    # someone re-pins WORKER01 by hand (to yet another thumbprint) after the plan was reviewed
    node = lab.lab.state.node("WORKER01")
    with node.lock:
        node.worker_config = edit_setting(node.worker_config, "MasterHttpsCertThumbprint", "AB" * 20).content
    changed = cluster_state(lab.lab.state)
    result = lab.fix("--plan", str(tmp_path / "plan" / "plan.json"), "--apply", "--yes", "--out", str(tmp_path / "r"))
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "r" / "apply.json").read_text(encoding="utf-8"))
    assert "stale" in report["units"].values()
    stale = [s for s in report["steps"].values() if s["status"] == "stale"]
    assert stale and "when planned, now 'ABABAB" in stale[0]["detail"]
    assert cluster_state(lab.lab.state) == changed  # nothing was touched
    assert actions(lab)["WORKER01"] == []


def down_at_once(lab: Any, nodes: list[str]) -> int:
    """The most worker services that were stopped at the same moment, from the lab's timeline."""
    events = sorted(
        (moment, 1 if event == "stop" else -1)
        for n in lab.lab.state.nodes()
        if n.name in nodes
        for moment, _service, event in n.timeline
    )
    down = peak = 0
    for _moment, change in events:
        down += change
        peak = max(peak, down)
    return peak


def test_max_unavailable_bounds_the_workers_restarting_at_once(served: Any) -> None:
    names = workers(8)
    lab = served(rotation(8), service_ms=150)
    result = lab.fix("--apply", "--yes", "--concurrency", "8", "--max-unavailable", "25%")
    assert result.exit_code == 0, result.output
    assert all(len(lab.lab.state.node(n).timeline) == 2 for n in names)  # every worker restarted once
    assert down_at_once(lab, names) == 2  # a quarter of 8, and the run did use both slots


def test_without_a_bound_the_workers_restart_together(served: Any) -> None:
    names = workers(8)
    lab = served(rotation(8), service_ms=150)
    result = lab.fix("--apply", "--yes", "--concurrency", "8")
    assert result.exit_code == 0, result.output
    assert down_at_once(lab, names) > 2  # what --max-unavailable prevents


def test_a_failing_canary_stops_before_any_other_worker_is_touched(served: Any) -> None:
    lab = served(rotation(5))
    before = cluster_state(lab.lab.state)
    lab.lab.state.node("WORKER02").faults.fail_ops = {"import_certificate": 1}
    result = lab.fix("--apply", "--yes", "--canary", "2")
    assert result.exit_code == 1, result.output
    assert "canary check failed" in result.output
    done = actions(lab)
    assert [done[w] for w in ("WORKER03", "WORKER04", "WORKER05")] == [[], [], []]
    assert done["WORKER01"]  # the other canary did go first...
    assert cluster_state(lab.lab.state) == before  # ...and was rolled back with the master


def test_healthy_canaries_let_the_run_go_on(served: Any) -> None:
    lab = served(rotation(4))
    result = lab.fix("--apply", "--yes", "--canary", "2")
    assert result.exit_code == 0, result.output
    assert "canaries WORKER01, WORKER02 fixed; going on" in result.output
    assert lab.failing() == set()


def test_max_failures_stops_starting_new_units(served: Any) -> None:
    readers = ["NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators"]
    names = workers(4)
    lab = served({"workers": names, "nodes": {w: {"key_readers": {w: readers}} for w in names}})
    for name in ("WORKER01", "WORKER02"):
        lab.lab.state.node(name).faults.fail_ops = {"grant_key_read": 1}
    result = lab.fix("--apply", "--yes", "--concurrency", "1", "--max-failures", "1", "--out", str(lab.journal.parent))
    assert result.exit_code == 1, result.output
    assert "--max-failures reached" in result.output
    report = json.loads((lab.journal.parent / "apply.json").read_text(encoding="utf-8"))
    assert sorted(report["units"].values()) == ["failed", "skipped", "skipped", "skipped"]
    assert [actions(lab)[w] for w in ("WORKER02", "WORKER03", "WORKER04")] == [[], [], []]


def test_progress_shows_units_done_failed_left_and_an_eta(served: Any) -> None:
    lab = served(rotation(2))
    result = lab.fix("--apply", "--yes")
    assert result.exit_code == 0, result.output
    assert "progress 1 unit(s) done, 0 failed, 0 left, ETA 0 s" in result.output
