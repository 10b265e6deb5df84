"""Inverse rules (pure) and the SQLite journal: what undoes what, and what is still in effect."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scaleguard.apply.inverse import answer_problems, inverse
from scaleguard.apply.journal import Journal, default_journal_path
from scaleguard.apply.undo import UndoError, pending_entries, undo_run

TP = "A" * 40


@pytest.mark.parametrize(
    ("request_", "result", "requests", "deferred"),
    [
        (
            {"op": "create_certificate", "store": "Root"},
            {"thumbprint": TP},
            [{"op": "remove_certificate", "store": "Root", "thumbprint": TP, "delete_key": True}],
            [],
        ),
        (  # a move to Root that failed half-way: the agent's partial answer names the store it was left in
            {"op": "create_certificate", "store": "Root"},
            {"thumbprint": TP, "store": "My"},
            [
                {"op": "remove_certificate", "store": "My", "thumbprint": TP, "delete_key": True},
                {"op": "remove_certificate", "store": "Root", "thumbprint": TP, "delete_key": True},
            ],
            [],
        ),
        (
            {"op": "create_certificate", "store": "Root"},
            {"thumbprint": TP, "store": "Elsewhere"},
            [{"op": "remove_certificate", "store": "Root", "thumbprint": TP, "delete_key": True}],
            [],
        ),
        (
            {"op": "import_certificate", "store": "Root"},
            {"thumbprint": TP, "already_present": False},
            [{"op": "remove_certificate", "store": "Root", "thumbprint": TP, "delete_key": False}],
            [],
        ),
        ({"op": "import_certificate", "store": "Root"}, {"thumbprint": TP, "already_present": True}, [], []),
        (
            {"op": "copy_certificate", "from_store": "My", "to_store": "Root"},
            {"thumbprint": TP, "already_present": False},
            [{"op": "remove_certificate", "store": "Root", "thumbprint": TP, "delete_key": False}],
            [],
        ),
        (
            {"op": "remove_certificate", "store": "My", "backup_name": "r\\s1.cer"},
            {"removed": True, "thumbprint": TP, "had_key": True, "key_deleted": False, "backup_sha256": "cd"},
            [
                {
                    "op": "restore_certificate",
                    "store": "My",
                    "thumbprint": TP,
                    "backup_name": "r\\s1.cer",
                    "backup_sha256": "cd",
                    "had_key": True,
                }
            ],
            [],
        ),
        (
            {"op": "set_binding", "ip_port": "0.0.0.0:8391"},
            {"previous": {"ip_port": "0.0.0.0:8391", "cert_hash": TP, "app_id": "{x}", "cert_store": None}},
            [
                {
                    "op": "set_binding",
                    "ip_port": "0.0.0.0:8391",
                    "cert_hash": TP,
                    "app_id": "{x}",
                }  # no cert_store: the agent refuses null; left out, HTTP.sys uses MY as before
            ],
            [],
        ),
        (
            {"op": "set_binding", "ip_port": "0.0.0.0:8391"},
            {"previous": {"ip_port": "0.0.0.0:8391", "cert_hash": TP, "app_id": "{x}", "cert_store": "MY"}},
            [{"op": "set_binding", "ip_port": "0.0.0.0:8391", "cert_hash": TP, "app_id": "{x}", "cert_store": "MY"}],
            [],
        ),
        (
            {"op": "set_binding", "ip_port": "0.0.0.0:8391"},
            {"previous": None},
            [{"op": "delete_binding", "ip_port": "0.0.0.0:8391"}],
            [],
        ),
        (
            {"op": "write_config", "path": "C:\\x\\Binn\\WorkerSettings.config", "backup_name": "r\\s2-W"},
            {"changed": True, "after_sha256": "ab", "backup_sha256": "01"},
            [
                {
                    "op": "restore_file",
                    "path": "C:\\x\\Binn\\WorkerSettings.config",
                    "backup_name": "r\\s2-W",
                    "backup_sha256": "01",
                    "expected_sha256": "ab",
                }
            ],
            [],
        ),
        ({"op": "write_config", "path": "p", "backup_name": "r\\s2-W"}, {"changed": False}, [], []),
        (
            {"op": "grant_key_read", "store": "My", "thumbprint": TP, "account": "a"},
            {"already": False},
            [{"op": "revoke_key_read", "store": "My", "thumbprint": TP, "account": "a"}],
            [],
        ),
        (
            {"op": "grant_key_read", "store": "My", "thumbprint": TP, "account": "a"},
            {"already": True},
            [],
            [],
        ),
        (
            {"op": "set_service_start_mode", "name": "S", "mode": "Automatic"},
            {"previous": "Manual"},
            [{"op": "set_service_start_mode", "name": "S", "mode": "Manual"}],
            [],
        ),
        ({"op": "set_service_start_mode", "name": "S", "mode": "Automatic"}, {"previous": "Auto"}, [], []),
        (
            {"op": "start_service", "name": "S"},
            {"was_running": False},
            [{"op": "stop_service", "name": "S"}],
            [],
        ),
        (
            {"op": "restart_service", "name": "S"},
            {"restarted": True},
            [],
            [{"op": "restart_service", "name": "S"}],
        ),
        ({"op": "restart_service", "name": "S"}, {"restarted": False}, [], []),
        (
            {"op": "set_schannel_value", "name": "ClientAuthTrustMode", "value": 2},
            {"name": "ClientAuthTrustMode", "value": 2, "previous": None, "existed": False},
            [{"op": "delete_schannel_value", "name": "ClientAuthTrustMode"}],
            [],
        ),
        (
            {"op": "set_schannel_value", "name": "ClientAuthTrustMode", "value": 2},
            {"name": "ClientAuthTrustMode", "value": 2, "previous": 0, "existed": True},
            [{"op": "set_schannel_value", "name": "ClientAuthTrustMode", "value": 0}],
            [],
        ),
        (
            {"op": "set_schannel_value", "name": "ClientAuthTrustMode", "value": 2},
            {"name": "ClientAuthTrustMode", "value": 2, "previous": 2, "existed": True},
            [],
            [],
        ),
        (
            {"op": "delete_schannel_value", "name": "SendTrustedIssuerList"},
            {"name": "SendTrustedIssuerList", "previous": 1, "existed": True},
            [{"op": "set_schannel_value", "name": "SendTrustedIssuerList", "value": 1}],
            [],
        ),
        (
            {"op": "delete_schannel_value", "name": "SendTrustedIssuerList"},
            {"name": "SendTrustedIssuerList", "previous": None, "existed": False},
            [],
            [],
        ),
    ],
)
def test_inverse_restores_exactly_what_was_before(
    request_: dict[str, Any],
    result: dict[str, Any],
    requests: list[dict[str, Any]],
    deferred: list[dict[str, Any]],
) -> None:
    undo = inverse(request_, result)
    assert undo.requests == requests and undo.deferred == deferred


def test_unknown_outcomes_only_get_safe_inverses() -> None:
    write = inverse({"op": "write_config", "path": "p", "backup_name": "r\\s", "expected_sha256": "ef"}, None)
    # the file's SHA-256 before the write is what its backup must still have to be restored
    assert write.requests == [{"op": "restore_file", "path": "p", "backup_name": "r\\s", "backup_sha256": "ef"}]
    create = inverse({"op": "create_certificate", "store": "Root"}, None)
    assert create.requests == [] and "by hand" in create.note
    assert inverse({"op": "restart_service", "name": "S"}, None).deferred == [{"op": "restart_service", "name": "S"}]
    schannel = inverse({"op": "set_schannel_value", "name": "ClientAuthTrustMode", "value": 2}, None)
    assert schannel.requests == [] and "by hand" in schannel.note  # the value it replaced is unknown


@pytest.mark.parametrize(
    ("request_", "result", "problem"),
    [
        ({"op": "stop_service", "name": "S"}, {"name": "S", "was_running": "false"}, "was_running is str 'false'"),
        ({"op": "restart_service", "name": "S"}, {"name": "S", "restarted": 1}, "restarted is int '1'"),
        ({"op": "import_certificate", "store": "Root", "thumbprint": TP}, {"thumbprint": TP},
         "already_present is missing"),
        ({"op": "grant_key_read", "account": "A"}, {"account": "A", "already": None}, "already is missing"),
        ({"op": "remove_certificate", "store": "My", "backup_name": "b"},
         {"removed": True, "thumbprint": TP, "had_key": "yes", "key_deleted": False}, "had_key is str 'yes'"),
        ({"op": "write_config", "path": "p", "backup_name": "b"}, {"changed": "no"}, "changed is str 'no'"),
        ({"op": "set_binding", "ip_port": "0.0.0.0:8391"}, {"ip_port": "0.0.0.0:8391"}, "(previous)"),
        ({"op": "set_schannel_value", "name": "N", "value": 2}, {"name": "N", "value": 2}, "(previous)"),
    ],
    ids=["text", "number", "missing", "null", "removal-detail", "config", "binding-previous", "schannel-previous"],
)
def test_an_answer_whose_undo_fields_are_not_the_agents_is_refused_and_its_inverse_is_unsure(
    request_: dict[str, Any], result: dict[str, Any], problem: str
) -> None:
    """Found by review: these fields were read by truthiness, so ``was_running: "false"`` meant "was running"
    (the undo left the service running) and a binding answer without ``previous`` was undone by deleting it."""
    assert any(problem in p for p in answer_problems(request_["op"], result)), answer_problems(request_["op"], result)
    undo = inverse(request_, result)
    assert undo.unsure and "does not say what it replaced" in undo.note
    assert undo == replace(inverse(request_, None), note=undo.note, unsure=True)  # only what is safe blind


def test_the_answers_the_agent_writes_pass_the_answer_check() -> None:
    assert answer_problems("stop_service", {"name": "S", "was_running": False}) == []
    assert answer_problems("remove_certificate", {"removed": False, "thumbprint": TP}) == []  # nothing else to say
    assert answer_problems("set_binding", {"ip_port": "0.0.0.0:8391", "previous": None, "verb": "add"}) == []
    assert answer_problems("read_file", {"content_b64": ""}) == []  # nothing to undo, nothing to check


def test_a_certificate_deleted_with_its_key_is_reported_not_restored() -> None:
    undo = inverse(
        {"op": "remove_certificate", "store": "My", "backup_name": "b"},
        {"removed": True, "thumbprint": TP, "key_deleted": True},
    )
    assert undo.requests == [] and "cannot be restored" in undo.note


def test_journal_records_runs_entries_and_what_was_reverted(tmp_path: Path) -> None:
    path = tmp_path / "j" / "journal.sqlite"
    with Journal(path) as journal:
        run = journal.start_run(kind="apply", source="inv.yaml", plan_json='{"x": 1}')
        first = journal.begin(
            run,
            phase="apply",
            cluster="C",
            node="W1",
            request={"op": "start_service", "name": "S"},
            step_id="s001",
            unit="u01",
        )
        journal.end(run, first, "done", result={"was_running": False})
        second = journal.begin(
            run,
            phase="apply",
            cluster="C",
            node="W1",
            request={"op": "stop_service", "name": "S"},
            step_id="s002",
            unit="u01",
        )
        journal.finish_run(run, "interrupted")
    with Journal(path) as journal:  # everything survived a restart of the process
        assert journal.run(run).status == "interrupted"  # type: ignore[union-attr]
        assert journal.plan_json(run) == '{"x": 1}'
        entries = journal.entries(run)
        assert [(e.seq, e.status, e.result) for e in entries] == [
            (1, "done", {"was_running": False}),
            (2, "started", None),
        ]
        assert [e.seq for e in pending_entries(journal, run)] == [second, first]
        undo_id = journal.start_run(kind="undo", source="undo", plan_json=None, undo_of=run)
        seq = journal.begin(
            undo_id,
            phase="undo",
            cluster="C",
            node="W1",
            request={"op": "stop_service"},
            inverts=(run, first),
        )
        journal.end(undo_id, seq, "done", result={})
        assert journal.inverted(run) == {first}
        assert [e.seq for e in pending_entries(journal, run)] == [second]


def test_undo_refuses_unknown_runs_and_undo_runs(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        with pytest.raises(UndoError, match="no run"):
            undo_run("nope", None, journal)  # type: ignore[arg-type]
        undo_id = journal.start_run(kind="undo", source="x", plan_json=None)
        with pytest.raises(UndoError, match="only apply runs"):
            undo_run(undo_id, None, journal)  # type: ignore[arg-type]


def test_default_journal_lives_in_the_user_data_folder() -> None:
    path = default_journal_path()
    assert path.name == "fix-journal.sqlite" and "scaleguard" in str(path)
