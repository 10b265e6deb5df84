"""Every console the CLI writes through, so ``NO_COLOR`` means no styling at all.

Rich honours ``NO_COLOR`` by dropping colours but keeps bold, dim and underline; https://no-color.org asks
for no "ANSI colour" and users who set it (screen readers, log collectors, CI logs) expect plain text. A
non-empty ``NO_COLOR`` therefore turns the colour system off entirely (no escape sequence is written),
for our summaries, tables, progress bars and typer's help alike.
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console


def no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def console(*, stderr: bool = True, **options: Any) -> Console:
    """A Rich console on stderr (summaries, tables, progress) unless ``stderr=False`` (data on stdout)."""
    if no_color():
        options["color_system"] = None
    options.setdefault("highlight", False)
    return Console(stderr=stderr, **options)
