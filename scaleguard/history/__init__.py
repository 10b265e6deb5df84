"""Audit history: every run and its open findings in one SQLite file, for "what changed since last night"."""

from scaleguard.history.compare import compare_runs, scope_of
from scaleguard.history.store import HistoryStore, RunRecord, StoredFinding, default_history_path, history_path

__all__ = [
    "HistoryStore",
    "RunRecord",
    "StoredFinding",
    "compare_runs",
    "default_history_path",
    "history_path",
    "scope_of",
]
