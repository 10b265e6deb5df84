"""What ``fix`` and its runbook commands share: the usage error (exit 2) and how a refusal is worded."""

from __future__ import annotations


class FixUsageError(Exception):
    """What the user asked for cannot be done as asked (exit 2)."""


def refused(headline: str, reasons: list[str]) -> str:
    """A headline and one indented line per reason (``step <id>: <reason>``)."""
    return headline + ":\n" + "\n".join(f"  {reason}" for reason in reasons)
