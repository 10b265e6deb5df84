"""Fixtures of the fix tests (helpers live in :mod:`fixcases`, which tests import by name)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixcases import Cluster, ServedCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    def make(spec: dict[str, Any] | None = None) -> Cluster:
        return Cluster(spec or {}, tmp_path / f"case{len(list(tmp_path.iterdir()))}")

    return make


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """Serve a cluster spec with the WinRM lab in this process (lab options as keywords)."""
    started: list[ServedCluster] = []

    def serve(spec: dict[str, Any], **lab_options: Any) -> ServedCluster:
        started.append(ServedCluster(spec, tmp_path / f"lab{len(started)}", **lab_options))
        return started[-1]

    yield serve
    for item in started:
        item.lab.close()
