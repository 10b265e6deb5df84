"""Report tests read hand-built artefacts (see report_samples.py)."""

from __future__ import annotations

import pytest
from report_samples import sample_context

from scaleguard.reports.base import ReportContext


@pytest.fixture
def context() -> ReportContext:
    return sample_context()
