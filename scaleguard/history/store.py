"""The history file: one SQLite database (stdlib ``sqlite3``) shared by every nightly run on a machine.

What is kept, and why:

- ``runs``: one row per audit — when, what was audited (``source``) and its *scope* (the set of clusters,
  the unit runs are compared within), the count of findings per status, the exit code, and how many
  problems were new/resolved against the previous run of the same scope;
- ``findings``: every finding of a run that did **not** pass, under its fingerprint. Passes are only
  counted: a 1,000-node fleet yields ~24,000 findings a night, almost all passes, and "what is new /
  what was fixed" only needs the non-passing ones. A year of nightly runs therefore grows with the
  problems the fleet has, not with its size.

Writers take SQLite's write lock for the whole read-previous-then-insert step (``BEGIN IMMEDIATE``), so
two audits finishing at once are serialised and each compares against a complete run.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from pathlib import Path

import platformdirs

from scaleguard.findings.model import Status

SCHEMA_VERSION = 1
HISTORY_ENV = "SCALEGUARD_HISTORY"
"""Overrides the default history location (tests, service accounts); ``off`` turns recording off."""

STATUS_COLUMNS: tuple[Status, ...] = (
    Status.PASS,
    Status.FAIL,
    Status.ERROR,
    Status.NOT_ASSESSED,
    Status.WAIVED,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    generated_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    scope TEXT NOT NULL,
    source TEXT NOT NULL,
    mode TEXT NOT NULL,
    exit_code INTEGER,
    n_pass INTEGER NOT NULL,
    n_fail INTEGER NOT NULL,
    n_error INTEGER NOT NULL,
    n_not_assessed INTEGER NOT NULL,
    n_waived INTEGER NOT NULL,
    new_problems INTEGER,
    resolved_problems INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_scope ON runs (scope, id);
CREATE TABLE IF NOT EXISTS findings (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL,
    policy TEXT NOT NULL,
    cluster TEXT NOT NULL,
    node TEXT NOT NULL,
    subject TEXT,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (run_id, fingerprint)
);
"""


_OFF = frozenset({"", "off", "none", "0"})


def default_history_path() -> Path | None:
    """``$SCALEGUARD_HISTORY`` if set (``off`` → no history), else the user's data dir."""
    override = os.environ.get(HISTORY_ENV)
    if override is not None:
        return None if override.strip().lower() in _OFF else Path(override)
    return Path(platformdirs.user_data_dir("scaleguard", appauthor=False)) / "history.sqlite"


def history_path(option: Path | str | None) -> Path | None:
    """The history file a ``--history`` value means: ``off`` (like ``$SCALEGUARD_HISTORY=off``) means
    none at all, never a file named ``off``; no value means :func:`default_history_path`."""
    if option is None:
        return default_history_path()
    return None if str(option).strip().lower() in _OFF else Path(option)


@dataclass(frozen=True)
class StoredFinding:
    fingerprint: str
    policy: str
    cluster: str
    node: str
    subject: str | None
    status: str
    severity: str
    message: str

    @property
    def is_problem(self) -> bool:
        return self.status in (Status.FAIL.value, Status.ERROR.value)


@dataclass(frozen=True)
class RunRecord:
    id: int
    generated_at: datetime
    recorded_at: datetime
    scope: str
    source: str
    mode: str
    exit_code: int | None
    counts: dict[str, int]
    new_problems: int | None
    resolved_problems: int | None

    @property
    def problems(self) -> int:
        """Failing findings (fail + error): what the trend follows."""
        return self.counts.get(Status.FAIL.value, 0) + self.counts.get(Status.ERROR.value, 0)


@dataclass(frozen=True)
class NewRun:
    """A run about to be recorded (the store assigns its id)."""

    generated_at: datetime
    scope: str
    source: str
    mode: str
    exit_code: int | None
    counts: Mapping[str, int]
    findings: Mapping[str, StoredFinding]


class HistoryStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            yield conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise ValueError(
                f"{self.path}: history schema {row[0]} is newer than this scaleguard understands"
            )

    def record(
        self, run: NewRun, *, compare: Callable[[dict[str, StoredFinding]], tuple[int, int]]
    ) -> tuple[int, RunRecord | None]:
        """Store ``run`` after comparing it with the previous run of its scope, atomically; returns its id
        and that previous run.

        ``compare(previous_findings)`` returns the (new, resolved) counts stored with the run; it runs
        inside the write transaction so no other run can slip in between the read and the insert.
        """
        with self._connect() as conn:
            self._ensure_schema(conn)  # executescript commits, so it runs before the transaction
            conn.execute("BEGIN IMMEDIATE")
            try:
                previous = self._latest(conn, run.scope)
                before = self._findings(conn, previous.id) if previous else None
                new, resolved = compare(before) if before is not None else (None, None)
                cur = conn.execute(
                    "INSERT INTO runs (generated_at, recorded_at, scope, source, mode, exit_code, n_pass,"
                    " n_fail, n_error, n_not_assessed, n_waived, new_problems, resolved_problems)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run.generated_at.isoformat(),
                        datetime.now(UTC).isoformat(),
                        run.scope,
                        run.source,
                        run.mode,
                        run.exit_code,
                        *(int(run.counts.get(s.value, 0)) for s in STATUS_COLUMNS),
                        new,
                        resolved,
                    ),
                )
                run_id = int(cur.lastrowid or 0)
                conn.executemany(
                    "INSERT INTO findings (run_id, fingerprint, policy, cluster, node, subject, status,"
                    " severity, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(run_id, *astuple(f)) for f in run.findings.values()],
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return run_id, previous

    def runs(self, *, scope: str | None = None, limit: int | None = None) -> list[RunRecord]:
        """Runs oldest first (the last ``limit`` of them); an absent file simply has no runs."""
        if not self.path.exists():
            return []
        with self._connect() as conn:
            self._ensure_schema(conn)
            sql = f"SELECT {_RUN_COLUMNS} FROM runs"
            params: list[object] = []
            if scope is not None:
                sql += " WHERE scope = ?"
                params.append(scope)
            sql += " ORDER BY id DESC"
            if limit is not None:
                sql += " LIMIT ?"
                params.append(limit)
            rows = conn.execute(sql, params).fetchall()
        return [_run(row) for row in reversed(rows)]

    def findings(self, run_id: int) -> dict[str, StoredFinding]:
        with self._connect() as conn:
            self._ensure_schema(conn)
            return self._findings(conn, run_id)

    @staticmethod
    def _latest(conn: sqlite3.Connection, scope: str) -> RunRecord | None:
        row = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE scope = ? ORDER BY id DESC LIMIT 1", (scope,)
        ).fetchone()
        return _run(row) if row else None

    @staticmethod
    def _findings(conn: sqlite3.Connection, run_id: int) -> dict[str, StoredFinding]:
        rows = conn.execute(
            "SELECT fingerprint, policy, cluster, node, subject, status, severity, message FROM findings"
            " WHERE run_id = ?",
            (run_id,),
        ).fetchall()
        return {row[0]: StoredFinding(*row) for row in rows}


_RUN_COLUMNS = (
    "id, generated_at, recorded_at, scope, source, mode, exit_code, n_pass, n_fail, n_error, n_not_assessed,"
    " n_waived, new_problems, resolved_problems"
)


def _run(row: tuple[object, ...]) -> RunRecord:
    counts = {s.value: int(str(v)) for s, v in zip(STATUS_COLUMNS, row[7:12], strict=True)}
    return RunRecord(
        id=int(str(row[0])),
        generated_at=datetime.fromisoformat(str(row[1])),
        recorded_at=datetime.fromisoformat(str(row[2])),
        scope=str(row[3]),
        source=str(row[4]),
        mode=str(row[5]),
        exit_code=None if row[6] is None else int(str(row[6])),
        counts=counts,
        new_problems=None if row[12] is None else int(str(row[12])),
        resolved_problems=None if row[13] is None else int(str(row[13])),
    )
