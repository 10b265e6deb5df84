"""Host, endpoint and service-account rules: the one answer policies, planner and lab all get."""

from __future__ import annotations

import pytest

from scaleguard.rules.account import account_matches, readers_for
from scaleguard.rules.endpoint import parse_endpoint
from scaleguard.rules.host import is_ip, valid_host


@pytest.mark.parametrize(
    "name", ["master01", "MASTER01.contoso.test", "ssis.contoso.test.", "_srv-1", "10.0.1.1", "fe80::1", "a" * 63]
)
def test_valid_hosts(name: str) -> None:
    assert valid_host(name)


@pytest.mark.parametrize(
    "name", ["", ".", "-master", "master-", "a..b", "a b", "mäster", "a" * 64, ".".join(["abc"] * 64), "x;y"]
)
def test_invalid_hosts(name: str) -> None:
    assert not valid_host(name)


def test_is_ip() -> None:
    assert is_ip("10.0.0.1") and is_ip("::1")
    assert not is_ip("master01") and not is_ip("10.0.0.256")


@pytest.mark.parametrize(
    "raw",
    ["https://master01.contoso.test:8391", "https://master01:8391/", "https://10.0.1.1:8391", "https://[fe80::1]:8391"],
)
def test_well_formed_endpoints(raw: str) -> None:
    endpoint = parse_endpoint(raw)
    assert endpoint.valid and endpoint.issues == ()
    assert endpoint.https_host is not None and endpoint.port == 8391


@pytest.mark.parametrize(
    ("raw", "issue"),
    [
        ("http://master01:8391", "scheme is 'http', not 'https'"),
        ("master01:8391", "not 'https'"),
        ("https://:8391", "has no host"),
        ("https://-bad-:8391", "is not a valid host name"),
        ("https://master01", "has no port"),
        ("https://master01:99999", "port"),
        ("https://master01:x1", "has an invalid port"),
        ("https://master01:8391/path", "has a path '/path'"),
        ("https://master01:8391?q=1", "has a query"),
        ("https://user@master01:8391", "user name"),
        (" https://master01:8391", "has surrounding whitespace"),
        ("https://[fe80::1:8391", "is not a URL"),
    ],
)
def test_malformed_endpoints_say_why(raw: str, issue: str) -> None:
    endpoint = parse_endpoint(raw)
    assert not endpoint.valid
    assert any(issue in text for text in endpoint.issues)


def test_https_host_names_the_master_even_when_the_endpoint_is_malformed() -> None:
    assert parse_endpoint("https://Master01:8391/path").https_host == "master01"
    assert parse_endpoint("http://master01:8391").https_host is None
    assert parse_endpoint("https://master01:8391").normalized == "https://master01:8391"


def test_account_matches_full_and_short_names_only() -> None:
    account = "NT Service\\SSISScaleOutWorker150"
    assert account_matches("NT SERVICE\\ssisscaleoutworker150", account)
    assert account_matches("SSISScaleOutWorker150", account)
    assert account_matches(account, "SSISScaleOutWorker150")
    assert not account_matches("CONTOSO\\SSISScaleOutWorker150", account)
    assert not account_matches("Everyone", account)
    assert account_matches("NT AUTHORITY\\SYSTEM", "LocalSystem")


def test_readers_for_adds_broad_groups() -> None:
    readers = readers_for("NT Service\\SSISScaleOutWorker150")
    assert "ssisscaleoutworker150" in readers and "everyone" in readers
    assert "nt authority\\system" in readers_for("LocalSystem")
