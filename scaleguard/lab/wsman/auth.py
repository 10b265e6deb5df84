"""Server side of WinRM authentication: Basic, and NTLM or Kerberos with WinRM message encryption (pyspnego).

NTLM is connection-bound: the context lives with the TCP connection (one per handler), the handshake is
three exchanges on that connection (anonymous → 401 ``Negotiate``; type 1 → 401 with the challenge;
type 3 → 200), and afterwards every body is sealed in the ``multipart/encrypted`` envelope MS-WSMV
§2.2.9.1.1 describes, which is exactly what pywinrm's ``Encryption`` class produces and expects.

pyspnego's NTLM acceptor reads its accounts from the file named by ``NTLM_USER_FILE``; the lab writes
NT hashes there (smbpasswd format, never the password) — one file per distinct password, so a host with a
``password`` fault has its own — and switches the variable under a lock for the few microseconds a
handshake step needs.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spnego
from spnego._ntlm_raw.crypto import ntowfv1

BOUNDARY = b"--Encrypted Boundary"
PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{PROTOCOL}";boundary="Encrypted Boundary"'

_ENV_LOCK = threading.Lock()


class AuthError(Exception):
    """Credentials were refused (answered with HTTP 401)."""


@dataclass
class Accounts:
    """The one lab account; ``user_file`` holds its NT hash for pyspnego (created on demand)."""

    username: str
    password: str
    _files: dict[str, Path] = field(default_factory=dict, repr=False)
    _folder: Path | None = field(default=None, repr=False)

    def check_basic(self, header: str, password: str | None = None) -> str:
        """The user name if a ``Basic`` header carries this account; raises :class:`AuthError` otherwise."""
        try:
            user, _, given = base64.b64decode(header.split(" ", 1)[1]).decode("utf-8").partition(":")
        except (IndexError, ValueError, binascii.Error) as exc:
            raise AuthError("malformed Basic credentials") from exc
        expected = self.password if password is None else password
        if _bare(user).lower() != _bare(self.username).lower() or given != expected:
            raise AuthError("wrong user name or password")
        return _bare(user)

    def user_file(self, password: str | None = None) -> Path:
        secret = self.password if password is None else password
        key = ntowfv1(secret).hex().upper()
        with _ENV_LOCK:
            if key not in self._files:
                if self._folder is None:
                    self._folder = Path(tempfile.mkdtemp(prefix="scaleguard-lab-ntlm-"))
                path = self._folder / f"users-{len(self._files)}"
                user = _bare(self.username)
                lines = [f"{name}:0:{'0' * 32}:{key}:[U]:LCT-0" for name in (user, f"LAB\\{user}")]
                path.write_text("\n".join(lines) + "\n", encoding="utf-8")
                path.chmod(0o600)
                self._files[key] = path
            return self._files[key]

    def cleanup(self) -> None:
        for path in self._files.values():
            path.unlink(missing_ok=True)
        if self._folder is not None:
            self._folder.rmdir()


def _bare(user: str) -> str:
    return user.rsplit("\\", 1)[-1].split("@", 1)[0]


class SecurityConnection:
    """The security context of one TCP connection (NTLM or Kerberos) and WinRM message encryption with it."""

    def __init__(self) -> None:
        self.context: Any = None
        self.authenticated = False
        self.user = ""
        self.final_token: bytes | None = None  # Kerberos mutual auth: sent with the first answer
        self.delegated = False  # the client forwarded its ticket (Kerberos delegation)

    def _complete(self) -> None:
        self.authenticated = True
        self.user = _bare(str(self.context.client_principal or ""))

    def decrypt(self, body: bytes) -> bytes:
        """The SOAP message inside pywinrm's ``multipart/encrypted`` body."""
        parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
        message = b""
        for header, payload in zip(parts[0::2], parts[1::2], strict=False):
            try:
                length = int(header.split(b"Length=")[1].strip())
            except (IndexError, ValueError) as exc:
                raise AuthError("malformed encrypted message") from exc
            if payload.endswith(BOUNDARY + b"--\r\n"):
                payload = payload[: -len(BOUNDARY + b"--\r\n")]
            sealed = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
            if len(sealed) < 4:
                raise AuthError("malformed encrypted message")
            signature_length = struct.unpack("<i", sealed[:4])[0]
            signature = sealed[4 : 4 + signature_length]
            try:
                plain = self.context.unwrap_winrm(signature, sealed[4 + signature_length :])
            except Exception as exc:  # a tampered, replayed or foreign message
                raise AuthError(f"the encrypted message does not verify: {type(exc).__name__}") from exc
            if len(plain) != length:
                raise AuthError("encrypted message length does not match its header")
            message += plain
        return bytes(message)

    def encrypt(self, message: bytes) -> bytes:
        wrapped = self.context.wrap_winrm(message)
        signature, sealed = bytes(wrapped.header), bytes(wrapped.data)
        headers = (
            f"\tContent-Type: {PROTOCOL}\r\n"
            f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={len(message)}\r\n"
        )
        octets = b"\tContent-Type: application/octet-stream\r\n"
        framed = struct.pack("<i", len(signature)) + signature + sealed
        return BOUNDARY + b"\r\n" + headers.encode() + BOUNDARY + b"\r\n" + octets + framed + BOUNDARY + b"--\r\n"


class NtlmConnection(SecurityConnection):
    """The NTLM state of one TCP connection."""

    def __init__(self, user_file: Path) -> None:
        super().__init__()
        self.user_file = user_file

    def step(self, token: bytes) -> bytes | None:
        """Feed a client token; returns the challenge to send back, or None when authenticated."""
        with _ENV_LOCK:
            previous = os.environ.get("NTLM_USER_FILE")
            os.environ["NTLM_USER_FILE"] = str(self.user_file)
            try:
                if token[8:12] == struct.pack("<I", 1) or self.context is None:
                    self.context = spnego.server(protocol="ntlm")
                    self.authenticated = False
                out = self.context.step(token)
            except Exception as exc:  # pyspnego raises InvalidTokenError and friends on a wrong password
                self.context = None
                raise AuthError(f"NTLM logon refused: {exc}") from exc
            finally:
                if previous is None:
                    os.environ.pop("NTLM_USER_FILE", None)
                else:
                    os.environ["NTLM_USER_FILE"] = previous
        if self.context.complete:
            self._complete()
            return None
        return bytes(out or b"")


class KerberosConnection(SecurityConnection):
    """Kerberos (raw or inside SPNEGO) through the system GSSAPI, as Windows' HTTP.sys Negotiate does.

    The acceptor takes its keys from the keytab ``KRB5_KTNAME`` names (``HTTP/<host>`` principals) and
    accepts a ticket for any of them; a ticket for another service, an expired or a forged one is refused
    by GSSAPI itself. One round trip: the AP-REQ arrives, and the AP-REP (mutual authentication) goes back
    with the answer to that very request.
    """

    def step(self, token: bytes) -> bytes | None:
        self.context = spnego.server(protocol="negotiate")
        self.authenticated = False
        try:
            out = self.context.step(token)
        except Exception as exc:  # GSSError wrapped by pyspnego: bad ticket, unknown key, replay...
            self.context = None
            raise AuthError(f"Kerberos logon refused: {exc}") from exc
        if not self.context.complete:
            self.context = None
            raise AuthError("Kerberos logon refused: the handshake needs more than one round trip (not Kerberos)")
        self.final_token = bytes(out) if out else None
        self.delegated = bool(self.context.context_attr & spnego.ContextReq.delegate)
        self._complete()
        return None
