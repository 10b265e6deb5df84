"""Resolving credential *references* to passwords, at the last moment, without ever showing them.

The inventory only says where a password is (environment variable, OS keyring, interactive prompt).
:class:`Secret` carries the value through the collector: its ``repr``/``str`` are masked so a stray log
line, traceback or f-string cannot leak it, and only :meth:`Secret.reveal` (called where pywinrm needs
it) gives it out.
"""

from __future__ import annotations

import getpass
import os
import threading
from collections.abc import Callable

from scaleguard.remoting.errors import InventoryError
from scaleguard.remoting.inventory import CredentialRef


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("secret", len(self._value)))


class CredentialError(InventoryError):
    """A referenced credential could not be found (a usage error, reported before any host is contacted)."""


Prompt = Callable[[str], str]


class CredentialResolver:
    """Resolves each distinct (reference, user) once per run; thread-safe, prompts one at a time."""

    def __init__(self, prompt: Prompt | None = None) -> None:
        self._prompt = prompt or getpass.getpass
        self._cache: dict[tuple[CredentialRef, str | None], Secret] = {}
        self._lock = threading.Lock()

    def resolve(self, ref: CredentialRef | None, username: str | None, *, context: str) -> Secret | None:
        if ref is None:
            return None
        key = (ref, username)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._fetch(ref, username, context)
            return self._cache[key]

    def _fetch(self, ref: CredentialRef, username: str | None, context: str) -> Secret:
        if ref.kind == "env":
            value = os.environ.get(ref.name or "")
            if not value:
                raise CredentialError(
                    f"{context}: the password is taken from environment variable {ref.name}, which is not set"
                )
            return Secret(value)
        if ref.kind == "keyring":
            if not username:
                raise CredentialError(f"{context}: a keyring credential needs a username")
            try:
                import keyring
                from keyring.errors import KeyringError
            except ImportError as exc:  # pragma: no cover - keyring is a dependency
                raise CredentialError(f"{context}: the keyring package is not installed") from exc
            try:
                value = keyring.get_password(ref.name or "", username)
            except KeyringError as exc:
                raise CredentialError(
                    f"{context}: the OS keyring could not be read ({type(exc).__name__})"
                ) from exc
            if not value:
                raise CredentialError(
                    f"{context}: keyring service {ref.name!r} holds no password for {username!r}"
                )
            return Secret(value)
        try:
            value = self._prompt(f"Password for {username or 'WinRM'} ({context}): ")
        except (EOFError, OSError) as exc:
            raise CredentialError(f"{context}: cannot prompt for the password (no terminal)") from exc
        if not value:
            raise CredentialError(f"{context}: no password was entered")
        return Secret(value)
