"""Suite-wide isolation: no test may write to the developer's real scaleguard history file.

Every audit records itself in a history file (default: the user's data dir); tests that run the
pipeline without ``--history`` would otherwise append to it. Tests that exercise history pass an
explicit path, which wins over this default.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_history(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("history") / "history.sqlite"
    monkeypatch.setenv("SCALEGUARD_HISTORY", str(path))
    return path
