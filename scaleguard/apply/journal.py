"""The fix journal (SQLite, local): every request sent to a node, what it answered, and when.

A run is written *before* each action is sent (status ``started``) and completed after, so a run that
was killed half way still says which action may have happened; ``--undo`` replays the inverses of what
a run left in place, newest first, and records them as a run of its own. Secrets never get here: the
executor stores requests with passwords and PFX bytes replaced by what they referred to.

Default location: ``<platformdirs user data dir>/scaleguard/fix-journal.sqlite`` (``--journal FILE``).
"""

from __future__ import annotations

import getpass
import json
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import platformdirs

from scaleguard.remediators.model import Step

Phase = Literal["apply", "rollback", "undo"]
EntryStatus = Literal["started", "done", "failed", "unknown", "skipped"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    undo_of TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    source TEXT,
    operator TEXT,
    host TEXT,
    plan_json TEXT,
    plan_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS entries (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    seq INTEGER NOT NULL,
    phase TEXT NOT NULL,
    step_id TEXT,
    unit TEXT,
    cluster TEXT NOT NULL,
    node TEXT NOT NULL,
    action TEXT NOT NULL,
    request_json TEXT NOT NULL,
    result_json TEXT,
    status TEXT NOT NULL,
    error TEXT,
    inverts_run TEXT,
    inverts_seq INTEGER,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (run_id, seq)
);
"""

_RUN_COLUMNS = "run_id, kind, undo_of, started_at, finished_at, status, source, plan_sha256"
_ENTRY_COLUMNS = (
    "run_id, seq, phase, step_id, unit, cluster, node, action, request_json, result_json, status, "
    "error, inverts_run, inverts_seq, started_at, finished_at"
)
_INSERT_RUN = (
    "INSERT INTO runs (run_id, kind, undo_of, started_at, status, source, operator, host, plan_json, plan_sha256) "
    "VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)"
)
_INSERT_ENTRY = (
    "INSERT INTO entries (run_id, seq, phase, step_id, unit, cluster, node, action, request_json, "
    "status, inverts_run, inverts_seq, started_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'started', ?, ?, ?)"
)
_END_ENTRY = "UPDATE entries SET status = ?, result_json = ?, error = ?, finished_at = ? WHERE run_id = ? AND seq = ?"


def default_journal_path() -> Path:
    return Path(platformdirs.user_data_dir("scaleguard", appauthor=False)) / "fix-journal.sqlite"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    """Sortable and short enough to type: ``20240611T101500-3f9a``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:4]


@dataclass(frozen=True)
class Entry:
    run_id: str
    seq: int
    phase: Phase
    step_id: str | None
    unit: str | None
    cluster: str
    node: str
    action: str
    request: dict[str, Any]
    result: dict[str, Any] | None
    status: EntryStatus
    error: str | None
    inverts_run: str | None
    inverts_seq: int | None
    started_at: str
    finished_at: str | None


@dataclass(frozen=True)
class Run:
    run_id: str
    kind: str
    undo_of: str | None
    started_at: str
    finished_at: str | None
    status: str
    source: str | None
    plan_sha256: str | None = None


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives the process being killed (what the journal is for) without an fsync per entry
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()  # one connection, used by the executor's threads one at a time
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        if "plan_sha256" not in columns:  # a journal written before plans were identified by their hash
            self._db.execute("ALTER TABLE runs ADD COLUMN plan_sha256 TEXT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- runs ---------------------------------------------------------------------------------------

    def start_run(
        self,
        *,
        kind: str,
        source: str,
        plan_json: str | None,
        undo_of: str | None = None,
        run_id: str | None = None,
        plan_sha256: str | None = None,
    ) -> str:
        """Record a run; ``plan_sha256`` is the SHA-256 of the plan.json bytes the operator reviewed."""
        run_id = run_id or new_run_id()
        try:
            operator = getpass.getuser()
        except (KeyError, OSError):
            operator = None
        with self._tx() as db:
            db.execute(
                _INSERT_RUN,
                (run_id, kind, undo_of, _now(), source, operator, socket.gethostname(), plan_json, plan_sha256),
            )
        return run_id

    def finish_run(self, run_id: str, status: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", (status, _now(), run_id))

    def run(self, run_id: str) -> Run | None:
        row = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return Run(*row) if row else None

    def runs(self) -> list[Run]:
        rows = self._db.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY started_at").fetchall()
        return [Run(*row) for row in rows]

    def plan_json(self, run_id: str) -> str | None:
        row = self._db.execute("SELECT plan_json FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    # --- entries -----------------------------------------------------------------------------------

    def begin(
        self,
        run_id: str,
        *,
        phase: Phase,
        cluster: str,
        node: str,
        request: dict[str, Any],
        step_id: str | None = None,
        unit: str | None = None,
        inverts: tuple[str, int] | None = None,
    ) -> int:
        """Record an action about to be sent; returns its sequence number in the run."""
        with self._tx() as db:
            row = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM entries WHERE run_id = ?", (run_id,)).fetchone()
            seq = int(row[0])
            db.execute(
                _INSERT_ENTRY,
                (run_id, seq, phase, step_id, unit, cluster, node, str(request.get("op")), json.dumps(request),
                 *(inverts or (None, None)), _now()),
            )
        return seq

    def end(
        self,
        run_id: str,
        seq: int,
        status: EntryStatus,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                _END_ENTRY,
                (status, json.dumps(result) if result is not None else None, error, _now(), run_id, seq),
            )

    def skip(self, run_id: str, step: Step, reason: str) -> None:
        """A plan step that was not sent (already done, stale, or held back by a failure)."""
        seq = self.begin(
            run_id, phase="apply", cluster=step.cluster, node=step.node, request={"op": step.action}, step_id=step.id,
            unit=step.unit,
        )
        self.end(run_id, seq, "skipped", error=reason)

    def entries(self, run_id: str) -> list[Entry]:
        query = f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE run_id = ? ORDER BY seq"
        rows = self._db.execute(query, (run_id,)).fetchall()
        decoded = [(*r[:8], json.loads(r[8]), json.loads(r[9]) if r[9] else None, *r[10:]) for r in rows]
        return [Entry(*row) for row in decoded]

    def inverted(self, run_id: str) -> set[int]:
        """Sequence numbers of ``run_id`` already undone successfully (by its rollback or any undo run)."""
        rows = self._db.execute(
            "SELECT inverts_seq FROM entries WHERE inverts_run = ? AND status = 'done'", (run_id,)
        ).fetchall()
        return {int(r[0]) for r in rows if r[0] is not None}
