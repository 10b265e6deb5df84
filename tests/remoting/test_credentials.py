"""Credentials are resolved by reference at collection time and never shown."""

from __future__ import annotations

import keyring
import pytest
from keyring.backend import KeyringBackend

from scaleguard.remoting.credentials import CredentialError, CredentialResolver, Secret
from scaleguard.remoting.inventory import CredentialRef


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.store.pop((service, username), None)


def test_secret_is_masked_everywhere_but_reveal() -> None:
    secret = Secret("s3cr3t-value")
    assert secret.reveal() == "s3cr3t-value"
    for shown in (repr(secret), str(secret), f"{secret}", f"{[secret]}", f"{ {'p': secret} }"):
        assert "s3cr3t" not in shown


def test_environment_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_TEST_PW", "from-env")
    secret = CredentialResolver().resolve(CredentialRef("env", "SG_TEST_PW"), "u", context="c")
    assert secret is not None and secret.reveal() == "from-env"


def test_missing_environment_variable_names_the_variable_not_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SG_TEST_PW", raising=False)
    with pytest.raises(CredentialError, match="environment variable SG_TEST_PW, which is not set"):
        CredentialResolver().resolve(CredentialRef("env", "SG_TEST_PW"), "u", context="inv.yaml cluster c")


def test_keyring_reference() -> None:
    backend = MemoryKeyring()
    backend.set_password("scaleguard-prod", "CORP\\auditor", "from-keyring")
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        resolver = CredentialResolver()
        secret = resolver.resolve(CredentialRef("keyring", "scaleguard-prod"), "CORP\\auditor", context="c")
        assert secret is not None and secret.reveal() == "from-keyring"
        with pytest.raises(CredentialError, match="holds no password for 'other'"):
            resolver.resolve(CredentialRef("keyring", "scaleguard-prod"), "other", context="c")
    finally:
        keyring.set_keyring(previous)


def test_prompt_is_asked_once_per_reference() -> None:
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "typed"

    resolver = CredentialResolver(prompt=prompt)
    for _ in range(3):
        secret = resolver.resolve(CredentialRef("prompt"), "auditor", context="cluster prod")
        assert secret is not None and secret.reveal() == "typed"
    assert asked == ["Password for auditor (cluster prod): "]


def test_prompt_without_a_terminal_is_a_clear_error() -> None:
    def no_tty(_: str) -> str:
        raise EOFError

    with pytest.raises(CredentialError, match="no terminal"):
        CredentialResolver(prompt=no_tty).resolve(CredentialRef("prompt"), "u", context="c")


def test_no_reference_means_no_password() -> None:
    assert CredentialResolver().resolve(None, "u", context="c") is None
