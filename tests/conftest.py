"""Suite-wide isolation: no test may touch the developer's own scaleguard data, or leave /tmp behind.

Every audit records itself in a history file (default: the user's data dir); tests that run the pipeline
without ``--history`` would otherwise append to it. Three layers:

* for the whole session, ``HOME``, the XDG folders and ``TMPDIR`` point into a session tmp folder, so
  anything that asks platformdirs or :mod:`tempfile` (including a subprocess) lands there, even in a
  module-scoped fixture that runs before any per-test fixture;
* every test gets its own ``SCALEGUARD_HISTORY``; tests that exercise history pass an explicit path,
  which wins over this default;
* at the end, the suite fails if the real ``~/.local/share/scaleguard`` changed (its listing with sizes
  and modification times is compared with the one taken at the start), or if a ``scaleguard*`` entry is
  left in the session's own temporary folder, where everything the suite and its subprocesses create
  through :mod:`tempfile` goes;
* the ``/tmp/scaleguard*`` listing is compared too.

Where the run is alone (``CI`` or ``SCALEGUARD_STRICT_TMP`` set, as ``.ci/run`` does) any change to the
data folder or ``/tmp/scaleguard*`` fails the suite. On a developer machine other scaleguard runs (an
operator's audit, another checkout's tests) may write there at the same time, so there a change fails
the suite only when it is provably ours — a history row whose source lies in this session's tmp tree —
and is a warning otherwise; the session-tmp check above catches this suite's own temporary files
either way.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

REAL_DATA = Path(os.path.expanduser("~")) / ".local" / "share" / "scaleguard"
TMP = Path("/tmp")
_ISOLATED = ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "TMPDIR")


def _data_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path → (size, mtime in ns) of everything under ``folder`` (empty when absent)."""
    if not folder.exists():
        return {}
    state = {".": (0, folder.stat().st_mtime_ns)}
    for path in folder.rglob("*"):
        info = path.lstat()
        state[str(path.relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return state


def _scaleguard_entries(folder: Path) -> set[str]:
    return {path.name for path in folder.glob("scaleguard*")}


@pytest.fixture(scope="session", autouse=True)
def _isolated_user_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_before = _data_state(REAL_DATA)
    tmp_before = _scaleguard_entries(TMP)
    home = tmp_path_factory.mktemp("home")
    session_tmp = tmp_path_factory.mktemp("tmp")
    saved = {name: os.environ.get(name) for name in _ISOLATED}
    saved_tempdir = tempfile.tempdir
    os.environ["HOME"] = str(home)
    os.environ["TMPDIR"] = str(session_tmp)
    tempfile.tempdir = str(session_tmp)
    for name, sub in (("XDG_DATA_HOME", ".local/share"), ("XDG_CONFIG_HOME", ".config"),
                      ("XDG_CACHE_HOME", ".cache"), ("XDG_STATE_HOME", ".local/state")):
        os.environ[name] = str(home / sub)
    try:
        yield home
    finally:
        tempfile.tempdir = saved_tempdir
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    data_after = _data_state(REAL_DATA)
    left_in_tmp = sorted(_scaleguard_entries(TMP) - tmp_before)
    left_in_session_tmp = sorted(_scaleguard_entries(session_tmp))
    strict = bool(os.environ.get("CI") or os.environ.get("SCALEGUARD_STRICT_TMP"))
    session_root = str(tmp_path_factory.getbasetemp()) + os.sep
    problems, notices = [], []
    if data_after != data_before:
        changed = sorted(set(data_after.items()) ^ set(data_before.items()))
        ours = _history_rows_from(REAL_DATA / "history.sqlite", session_root)
        message = f"{REAL_DATA} changed during the suite: {changed[:6]}"
        if strict or ours:
            problems.append(f"{message}; {ours} history row(s) name this session's files")
        else:
            notices.append(f"{message} (no row names this session's files: another process?)")
    if left_in_tmp:
        message = f"{len(left_in_tmp)} new entries in {TMP}: {left_in_tmp[:10]}"
        (problems if strict else notices).append(message)
    if left_in_session_tmp:
        problems.append(f"the suite left {len(left_in_session_tmp)} scaleguard entries in its temporary "
                        f"folder: {left_in_session_tmp[:10]}")
    for notice in notices:
        warnings.warn(f"{notice}; set SCALEGUARD_STRICT_TMP=1 to fail on it", stacklevel=1)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


def _history_rows_from(history: Path, session_root: str) -> int:
    """How many recorded runs name a source inside this session's tmp tree (read-only)."""
    if not history.is_file():
        return 0
    try:
        with closing(sqlite3.connect(f"{history.as_uri()}?mode=ro", uri=True)) as connection:
            row = connection.execute(
                "SELECT COUNT(*) FROM runs WHERE instr(source, ?) > 0", (session_root,)
            ).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


@pytest.fixture(autouse=True)
def _isolated_history(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("history") / "history.sqlite"
    monkeypatch.setenv("SCALEGUARD_HISTORY", str(path))
    return path
