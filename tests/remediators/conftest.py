"""Fixtures of the fix tests (helpers live in :mod:`fixcases`, which tests import by name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fixcases import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    def make(spec: dict[str, Any] | None = None) -> Cluster:
        return Cluster(spec or {}, tmp_path / f"case{len(list(tmp_path.iterdir()))}")

    return make
