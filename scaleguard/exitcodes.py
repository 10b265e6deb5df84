"""Exit codes are a contract with pipelines (docs/architecture.md, "Outputs and exit codes"); this is the only
place that decides them."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from scaleguard.findings.model import Finding, Severity, Status


class ExitCode(IntEnum):
    OK = 0
    FAILING = 1
    USAGE = 2
    INCOMPLETE = 3


def audit_exit_code(
    findings: Iterable[Finding], fail_on: Severity, *, allow_incomplete: bool = False, warn_only: bool = False
) -> ExitCode:
    """Incomplete (error / not_assessed) outranks failing: an audit that could not look is not clean."""
    if warn_only:
        return ExitCode.OK
    findings = list(findings)
    incomplete = any(
        f.status is Status.ERROR or (f.status is Status.NOT_ASSESSED and f.applicable) for f in findings
    )
    if incomplete and not allow_incomplete:
        return ExitCode.INCOMPLETE
    if any(f.status is Status.FAIL and f.severity.at_least(fail_on) for f in findings):
        return ExitCode.FAILING
    return ExitCode.OK
