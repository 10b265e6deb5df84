"""One host's WinRM channel: a pywinrm ``Protocol``, one reused shell, a hard deadline.

Why not ``winrm.Session``: it opens and deletes a shell (and a TCP/TLS connection) for every call and
``get_command_output`` retries OperationTimeout forever, so one silent host would hang an audit. Here the
Receive long poll is driven by hand and every HTTP exchange is budgeted against the host's deadline
(OperationTimeout and the socket read timeout both shrink as it nears).

Faults Windows documents as recoverable are recovered: a shell that expired or was lost (2150858843) and
the leaking operation quota (0x803381A6) re-create the shell, too many shells (0x803381A5) waits and
retries. A command is only re-run after such a fault when the caller says it is idempotent (collection
is; a fix step may not be), otherwise the fault is reported with the node's state unknown.

A ``HostChannel`` is used by one thread at a time (pywinrm and its NTLM context are not thread-safe).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from xml.sax.saxutils import unescape as xml_unescape

import requests
from spnego.exceptions import SpnegoError
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from scaleguard.remoting.credentials import Secret
from scaleguard.remoting.negotiate import SpnegoSettings, SpnegoTransport
from scaleguard.snapshot.model import CollectionState

log = logging.getLogger(__name__)

SHELL_NOT_FOUND = 2150858843
QUOTA_MAX_OPERATIONS = 0x803381A6
QUOTA_MAX_SHELLS = 0x803381A5
QUOTA_LIMIT = 2150858815
RECYCLE_FAULTS = frozenset({SHELL_NOT_FOUND, QUOTA_MAX_OPERATIONS})
WAIT_FAULTS = frozenset({QUOTA_MAX_SHELLS, QUOTA_LIMIT})
STDIN_CHUNK = 128 * 1024  # well below the 500 KiB MaxEnvelopeSize once base64 and XML are added
MAX_RECOVERIES = 3
AUTH_FAILURES: tuple[type[BaseException], ...] = (PermissionError, SpnegoError)
SHELL_COMMAND_BUDGET = 1000  # recycle before the per-shell operation quota (1500) is reached


class ChannelError(Exception):
    """The host could not run the command; ``state`` is what the snapshot records (SO-C01)."""

    def __init__(self, state: CollectionState, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason


@dataclass(frozen=True)
class ChannelSettings:
    endpoint: str
    auth: Literal["basic", "ntlm", "kerberos", "negotiate", "certificate"]
    username: str | None = None
    password: Secret | None = None
    ca_bundle: Path | None = None
    validate_tls: bool = True
    client_cert: Path | None = None
    client_key: Path | None = None
    operation_timeout_s: int = 20
    spn_service: str = "HTTP"
    spn_hostname: str | None = None
    delegate: bool = False
    message_encryption: Literal["auto", "never"] = "auto"


@dataclass
class CommandResult:
    stdout: bytes
    stderr: bytes
    exit_code: int
    shells_opened: int = 0
    recoveries: list[str] = field(default_factory=list)


class HostChannel:
    """``run`` a command with stdin on one host before ``deadline`` (a ``time.monotonic()`` instant)."""

    def __init__(self, settings: ChannelSettings, *, deadline: float) -> None:
        self.settings = settings
        self.deadline = deadline
        self._protocol: Protocol | None = None
        self._shell_id: str | None = None
        self._shell_commands = 0
        self.shells_opened = 0

    # --- public ---------------------------------------------------------------------------------------

    def run(self, command: str, stdin: bytes, *, idempotent: bool = True) -> CommandResult:
        recoveries: list[str] = []
        while True:
            try:
                stdout, stderr, code = self._run_once(command, stdin)
            except WSManFaultError as fault:
                code_seen = _fault_code(fault)
                if code_seen in WAIT_FAULTS and len(recoveries) < MAX_RECOVERIES:
                    recoveries.append(f"fault {code_seen}: waited and retried")
                    self._pause(1.0 * len(recoveries))
                    continue
                if code_seen in RECYCLE_FAULTS and len(recoveries) < MAX_RECOVERIES:
                    if not idempotent and self._command_started:
                        raise ChannelError(
                            CollectionState.FAILED,
                            _fault_text(fault) + " while the command was running; it was not re-run "
                            "(not idempotent), the node state is unknown",
                        ) from fault
                    recoveries.append(f"fault {code_seen}: shell re-created")
                    log.info("%s: %s; re-creating the shell", self.settings.endpoint, _fault_text(fault))
                    self._forget_shell()
                    continue
                gave_up = f" (gave up after: {'; '.join(recoveries)})" if recoveries else ""
                raise ChannelError(CollectionState.FAILED, _fault_text(fault) + gave_up) from fault
            except ChannelError:
                raise
            except requests.exceptions.ReadTimeout as exc:
                if self._remaining() <= 1.0:  # the read timeout was the deadline, cut to fit
                    raise ChannelError(CollectionState.TIMED_OUT, self._timeout_reason()) from exc
                raise classify(exc, self.settings) from exc
            except Exception as exc:
                raise classify(exc, self.settings) from exc
            return CommandResult(stdout, stderr, code, self.shells_opened, recoveries)

    def close(self) -> None:
        """Delete the shell and drop the connection; never raises (the collection result is what counts)."""
        protocol, shell_id = self._protocol, self._shell_id
        self._protocol, self._shell_id = None, None
        if protocol is None:
            return
        try:
            if shell_id is not None and self._remaining() > 1:
                self._budget(protocol, short=True)
                protocol.close_shell(shell_id, close_session=True)
            else:
                protocol.transport.close_session()
        except Exception as exc:  # noqa: BLE001 - closing is best effort
            log.debug("%s: closing the shell failed: %s", self.settings.endpoint, type(exc).__name__)
            with contextlib.suppress(Exception):
                protocol.transport.close_session()

    def __enter__(self) -> HostChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one attempt --------------------------------------------------------------------------------

    def _run_once(self, command: str, stdin: bytes) -> tuple[bytes, bytes, int]:
        self._command_started = False
        protocol = self._ensure_protocol()
        shell_id = self._ensure_shell(protocol)
        self._phase = "starting the agent"
        self._budget(protocol, short=True)
        command_id = protocol.run_command(shell_id, command, console_mode_stdin=False)
        self._command_started = True
        self._shell_commands += 1
        try:
            for start in range(0, max(len(stdin), 1), STDIN_CHUNK):
                self._phase = "sending the agent script"
                chunk = stdin[start : start + STDIN_CHUNK]
                self._budget(protocol, short=True)
                protocol.send_command_input(
                    shell_id, command_id, chunk, end=start + STDIN_CHUNK >= len(stdin)
                )
            return self._receive(protocol, shell_id, command_id)
        finally:
            self._signal(protocol, shell_id, command_id)

    def _receive(self, protocol: Protocol, shell_id: str, command_id: str) -> tuple[bytes, bytes, int]:
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        self._phase = "waiting for the agent's output (the command was still running)"
        while True:
            self._budget(protocol, short=False)
            try:
                out, err, code, done = protocol.get_command_output_raw(shell_id, command_id)
            except WinRMOperationTimeoutError:
                continue  # the long poll ended without output: ask again (until the deadline)
            stdout.append(out)
            stderr.append(err)
            if done:
                return b"".join(stdout), b"".join(stderr), code

    def _signal(self, protocol: Protocol, shell_id: str, command_id: str) -> None:
        if self._remaining() <= 0.5:
            return
        try:
            self._budget(protocol, short=True)
            protocol.cleanup_command(shell_id, command_id)
        except (WinRMTransportError, WSManFaultError) as exc:
            # Ansible ignores HTTP 400 here too: the command is over either way
            log.debug("%s: terminating the command failed: %s", self.settings.endpoint, exc)

    # --- shell and protocol -------------------------------------------------------------------------

    def _ensure_protocol(self) -> Protocol:
        if self._protocol is None:
            s = self.settings
            cert = s.auth == "certificate"
            spnego = s.auth in ("kerberos", "negotiate")
            self._protocol = Protocol(
                endpoint=s.endpoint,
                transport="kerberos" if spnego else s.auth,  # type: ignore[arg-type]  # replaced below
                username=None if cert else s.username,
                password=None if cert or s.password is None else s.password.reveal(),
                ca_trust_path=str(s.ca_bundle) if s.ca_bundle else None,  # type: ignore[arg-type]
                server_cert_validation="validate" if s.validate_tls else "ignore",
                cert_pem=str(s.client_cert) if s.client_cert else None,
                cert_key_pem=str(s.client_key) if s.client_key else None,
                read_timeout_sec=s.operation_timeout_s + 10,
                operation_timeout_sec=s.operation_timeout_s,
                message_encryption=s.message_encryption,
                proxy=None,
            )
            if spnego:
                self._protocol.transport = SpnegoTransport(
                    s.endpoint,
                    settings=SpnegoSettings(
                        protocol="kerberos" if s.auth == "kerberos" else "negotiate",
                        username=s.username,
                        password=None if s.password is None else s.password.reveal(),
                        service=s.spn_service,
                        hostname_override=s.spn_hostname,
                        delegate=s.delegate,
                    ),
                    verify=(str(s.ca_bundle) if s.ca_bundle else True) if s.validate_tls else False,
                    read_timeout_sec=s.operation_timeout_s + 10,
                    message_encryption=s.message_encryption,
                )
        return self._protocol

    def _ensure_shell(self, protocol: Protocol) -> str:
        if self._shell_id is not None and self._shell_commands >= SHELL_COMMAND_BUDGET:
            self._delete_shell(protocol)
        if self._shell_id is None:
            self._phase = "opening a shell"
            self._budget(protocol, short=True)
            self._shell_id = protocol.open_shell(codepage=65001, noprofile=True)
            self._shell_commands = 0
            self.shells_opened += 1
        return self._shell_id

    def _forget_shell(self) -> None:
        self._shell_id = None
        self._shell_commands = 0

    def _delete_shell(self, protocol: Protocol) -> None:
        shell_id, self._shell_id = self._shell_id, None
        if shell_id is None:
            return
        try:
            self._budget(protocol, short=True)
            protocol.close_shell(shell_id, close_session=False)
        except (WinRMTransportError, WSManFaultError):
            pass

    # --- time -----------------------------------------------------------------------------------------

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _budget(self, protocol: Protocol, *, short: bool) -> None:
        """Fit the next exchange into what is left of the deadline, or give up now."""
        remaining = self._remaining()
        if remaining <= 0.2:
            raise ChannelError(CollectionState.TIMED_OUT, self._timeout_reason())
        operation = max(1, min(self.settings.operation_timeout_s, int(remaining) - 1))
        protocol.operation_timeout_sec = operation
        read = operation + (5 if short else 2)
        protocol.transport.read_timeout_sec = max(0.2, min(read, remaining))  # type: ignore[assignment]

    def _pause(self, seconds: float) -> None:
        if self._remaining() <= seconds:
            raise ChannelError(CollectionState.TIMED_OUT, self._timeout_reason())
        time.sleep(seconds)

    def _timeout_reason(self) -> str:
        return f"{self.settings.endpoint}: no answer before the per-host deadline while {self._phase}"

    _command_started = False
    _phase = "connecting"


def _fault_code(fault: WSManFaultError) -> int | None:
    return fault.wmierror_code or fault.wsman_fault_code


def _fault_text(fault: WSManFaultError) -> str:
    code = _fault_code(fault)
    reason = " ".join((fault.reason or "").split())
    return f"WS-Management fault {code} ({hex(code) if code else '?'}): {reason}"


def classify(exc: BaseException, settings: ChannelSettings) -> ChannelError:
    """Turn what pywinrm/requests raise into a collection state and a reason a human can act on."""
    where = settings.endpoint
    if isinstance(exc, InvalidCredentialsError):
        user = settings.username or "the client certificate"
        return ChannelError(
            CollectionState.AUTH_REFUSED,
            f"{where} refused the credentials of {user} ({settings.auth}, HTTP 401)",
        )
    if isinstance(exc, AUTH_FAILURES) or type(exc).__module__.split(".")[0] == "krb5":
        return ChannelError(
            CollectionState.AUTH_REFUSED, f"{where}: {settings.auth} logon failed: {_logon_reason(exc, settings)}"
        )
    if isinstance(exc, requests.exceptions.SSLError):
        hint = (
            ""
            if not settings.validate_tls
            else " (give the CA with ca_bundle, or --insecure to skip validation)"
        )
        return ChannelError(CollectionState.FAILED, f"TLS with {where} failed: {_tls_reason(exc)}{hint}")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return ChannelError(CollectionState.UNREACHABLE, f"{where}: no TCP connection before the timeout")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return ChannelError(
            CollectionState.TIMED_OUT, f"{where} accepted the request but did not answer in time"
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        return ChannelError(CollectionState.UNREACHABLE, f"{where} is unreachable: {_connection_reason(exc)}")
    if isinstance(exc, WinRMTransportError):
        return ChannelError(CollectionState.FAILED, f"{where} answered HTTP {exc.code}")
    if isinstance(exc, WinRMError):
        return ChannelError(CollectionState.FAILED, f"{where}: {_short(exc)}")
    return ChannelError(CollectionState.FAILED, f"{where}: unexpected {type(exc).__name__}: {_short(exc)}")


# MIT krb5 error codes (krb5_err.h) a logon meets, in words an operator can act on.
KRB5_REASONS = {
    -1765328353: "the KDC refused the password (wrong password)",
    -1765328360: "the KDC refused the pre-authentication (wrong password?)",
    -1765328378: "the user is unknown to the KDC",
    -1765328366: "the user's account is disabled or locked",
    -1765328361: "the user's password has expired",
    -1765328228: "no KDC of the realm could be reached",
}


def _logon_reason(exc: BaseException, settings: ChannelSettings) -> str:
    """The part of a GSSAPI/krb5 error that says what went wrong, with the SPN when the KDC lacks it."""
    code = getattr(exc, "err_code", None)  # krb5.Krb5Error (pykrb5) from the in-memory kinit
    if isinstance(code, int) and code in KRB5_REASONS:
        return f"{KRB5_REASONS[code]} for {settings.username or 'the ticket cache user'}"
    text = " ".join(str(exc).split())
    start = text.find("Minor (")
    if start >= 0:
        start = text.find("): ", start) + 3
        end = text.find(", Context:", start)
        text = text[start : end if end > start else len(text)]
    if "not found in Kerberos database" in text:
        host = settings.spn_hostname or (urlsplit(settings.endpoint).hostname or "")
        text += (
            f" (the KDC knows no SPN {settings.spn_service}/{host}: set spn_hostname to the name the host's "
            "HTTP SPN is registered under)"
        )
    return text[:400] or type(exc).__name__


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def _tls_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in (
        "certificate verify failed",
        "hostname mismatch",
        "wrong version number",
        "handshake failure",
    ):
        index = text.find(marker)
        if index >= 0:
            end = text.find(" (_ssl.c", index)
            return text[index : end if end > index else index + 160].strip(" ,.'\"")
    return _short(exc)


def _connection_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "No route to host",
        "Connection reset",
        "timed out",
        "Temporary failure in name resolution",
        "Network is unreachable",
    ):
        if marker.lower() in text.lower():
            return marker.lower()
    return _short(exc)


_CLIXML_HEADER = "#< CLIXML"
_CLIXML_STRING = re.compile(r'<S S="(\w+)">([^<]*)</S>')  # linear: no run can cross a '<'


def describe_stderr(stderr: bytes) -> str:
    """PowerShell's stderr as plain text: the agent's own message first, then the error records.

    Over WinRM, PowerShell serialises its error (and warning) streams as CLIXML blocks, while the agent's
    ``[Console]::Error.WriteLine`` reason arrives as plain text before, between or after them. The plain
    text is kept, then the ``Error`` strings of the CLIXML; warnings only when there is nothing else.
    """
    text = stderr.decode("utf-8", errors="replace")
    plain: list[str] = []
    errors: list[str] = []
    warnings: list[str] = []
    # positions, not slices of the rest: a node can repeat the header a million times
    position = 0
    header = text.find(_CLIXML_HEADER)
    while header >= 0:
        plain.append(text[position:header])
        after = header + len(_CLIXML_HEADER)
        start = text.find("<Objs", after)
        end = text.find("</Objs>", start) if start >= 0 else -1
        if end < 0:
            position = after
            break
        position = end + len("</Objs>")
        for kind, value in _CLIXML_STRING.findall(text, start, position):
            target = errors if kind == "Error" else warnings if kind == "Warning" else None
            if target is not None:
                target.append(_unclixml(value))
        header = text.find(_CLIXML_HEADER, position)
    plain.append(text[position:])
    parts = ["".join(plain).strip(), "".join(errors).strip()]
    described = " ".join(" ".join(p for p in parts if p).split())
    if not described:
        described = " ".join("".join(warnings).split())
    return described[:500]


def _unclixml(value: str) -> str:
    value = value.replace("_x000D__x000A_", "\n").replace("_x000A_", "\n").replace("_x000D_", "")
    return xml_unescape(value, {"&quot;": '"', "&apos;": "'"})
