"""Report tests read hand-built artefacts (see report_samples.py); the browser tests share one Chromium.

The browser fixture needs Chromium (Debian's ``chromium``; CI installs it). Without it the browser tests
are skipped, unless SCALEGUARD_REQUIRE_BROWSER=1 (set by .ci/run), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from report_samples import sample_context

from scaleguard.reports.base import ReportContext

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture
def context() -> ReportContext:
    return sample_context()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("SCALEGUARD_REQUIRE_BROWSER") == "1":
            pytest.fail("SCALEGUARD_REQUIRE_BROWSER=1 but Chromium is not installed (apt-get install chromium)")
        pytest.skip("Chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()
