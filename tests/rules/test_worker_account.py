"""Which accounts a plan may grant a worker key to, and which spellings name the same account."""

from __future__ import annotations

import pytest

from scaleguard.rules.account import account_matches, worker_account_problem


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("LocalSystem", "S-1-5-18"),
        ("NT AUTHORITY\\SYSTEM", "s-1-5-18"),
        (".\\LocalSystem", "LocalSystem"),
        ("NT AUTHORITY\\LocalService", "S-1-5-19"),
        ("NT AUTHORITY\\LOCAL SERVICE", "LocalService"),
        ("NetworkService", "S-1-5-20"),
        ("NT Service\\SSISScaleOutWorker150", "nt service\\ssisscaleoutworker150"),
    ],
)
def test_spellings_of_one_account_match(a: str, b: str) -> None:
    assert account_matches(a, b) and account_matches(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [("LocalSystem", "S-1-5-19"), ("S-1-5-20", "NetworkService2"), ("CONTOSO\\svc", "FABRIKAM\\svc")],
)
def test_different_accounts_do_not_match(a: str, b: str) -> None:
    assert not account_matches(a, b)


@pytest.mark.parametrize(
    "account",
    [
        "NT Service\\SSISScaleOutWorker150",
        "LocalSystem",
        "S-1-5-20",
        "NT AUTHORITY\\NETWORK SERVICE",
        "CONTOSO\\svc-ssis",
        "CONTOSO\\gmsa-ssis$",
        ".\\ssisworker",
        "svc-ssis@contoso.test",
    ],
)
def test_worker_service_account_forms_are_accepted(account: str) -> None:
    assert worker_account_problem(account) is None


@pytest.mark.parametrize(
    "account",
    [
        "Everyone",
        "BUILTIN\\Users",
        "NT AUTHORITY\\Authenticated Users",
        "CONTOSO\\Domain Users",
        "NT Service\\MSSQLSERVER",
        "S-1-1-0",
        "svc-ssis",
        "",
        " CONTOSO\\svc",
        "CONTOSO\\svc;x",
    ],
)
def test_groups_and_other_principals_are_refused(account: str) -> None:
    assert worker_account_problem(account) is not None
