"""One simulated Windows host behind WinRM: shells, commands, their timing, and the injected faults.

Commands are not executed: the lab recognises the agent bootstrap, reads the JSON request it would read
from stdin, and answers from the node state (:func:`scaleguard.lab.dispatch.dispatch_timed`). Timing is simulated
without burning CPU: a command is *done* ``exec_s`` after it started, and a Receive long-polls (sleeps)
until then or until the client's OperationTimeout, exactly the contract real WinRM has (MS-WSMV: no output
before OperationTimeout → fault 2150858793, and the client asks again).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from scaleguard.collectors.agent import (
    PAYLOAD_SEPARATOR,
    bootstrap_script,
    decode_encoded_command,
    payload_secret,
    split_payload,
)
from scaleguard.lab.dispatch import dispatch_timed
from scaleguard.lab.state import SECRET_KEY, ActionError, LabNode, PartialChangeError
from scaleguard.lab.wsman import soap

MAX_SHELLS_PER_USER = 30  # winrs/MaxShellsPerUser default
QUOTA_MAX_SHELLS = 0x803381A5
NAIVE_MARKER = "# scaleguard-request:"
RUNBOOK_MARK = b"#Requires -Version 5.1\n# scaleguard change-window runbook"
"""How a runbook begins (its whole fixed text is checked before anything runs)."""
MALFORMED_STDOUT = b'WARNING: agent output truncated\r\n{"schema": "scaleguard-agent/1", "identity": {'

Answer = tuple[int, bytes]


@dataclass
class Command:
    id: str
    command_line: str
    started: float
    stdin: bytearray = field(default_factory=bytearray)
    stdin_closed: bool = False
    ready: threading.Event = field(default_factory=threading.Event)
    done_at: float = 0.0
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0


@dataclass
class Shell:
    id: str
    expires_after_first_command: bool = False
    commands: dict[str, Command] = field(default_factory=dict)


class SimulatedHost:
    """WS-Man operations of one node; thread-safe (one lock for shells, the node lock for its state)."""

    def __init__(self, node: LabNode, *, exec_s: float, address: str, stop: threading.Event) -> None:
        self.node = node
        self.exec_s = exec_s
        self.address = address
        self.stop = stop
        self.machine = node.name.upper()
        self._lock = threading.Lock()
        self._shells: dict[str, Shell] = {}
        self._shells_created = 0
        self._commands_seen = 0
        self._bootstrap = bootstrap_script()

    # --- WS-Man verbs ---------------------------------------------------------------------------------

    def handle(self, request: soap.WsmanRequest, user: str) -> Answer:
        action = request.action
        if action == soap.ACTION_CREATE:
            return self._create(request, user)
        shell = self._shell(request)
        if shell is None:
            return self._fault(request, soap.SHELL_NOT_FOUND, _shell_not_found(request.shell_id))
        if action == soap.ACTION_COMMAND:
            return self._command(request, shell)
        if action == soap.ACTION_SEND:
            return self._send(request, shell)
        if action == soap.ACTION_RECEIVE:
            return self._receive(request, shell)
        if action == soap.ACTION_SIGNAL:
            stream = request.find("Signal")
            command_id = stream.get("CommandId") if stream is not None else None
            with self._lock:
                shell.commands.pop(str(command_id), None)
            return 200, soap.empty_response(request, "SignalResponse")
        if action == soap.ACTION_DELETE:
            with self._lock:
                self._shells.pop(shell.id, None)
            return 200, soap.empty_response(request, "DeleteResponse")
        return self._fault(request, soap.ACTION_NOT_SUPPORTED, f"The action {action} is not supported.")

    def _create(self, request: soap.WsmanRequest, user: str) -> Answer:
        with self._lock:
            if len(self._shells) >= MAX_SHELLS_PER_USER:
                return self._quota_fault(request, QUOTA_MAX_SHELLS, f"{MAX_SHELLS_PER_USER} concurrent shells")
            self._shells_created += 1
            shell = Shell(
                id=str(uuid.uuid4()).upper(),
                expires_after_first_command=self._shells_created <= self.node.faults.expired_shells,
            )
            self._shells[shell.id] = shell
        owner = f"{self.machine}\\{user}"
        return 200, soap.create_response(request, shell.id, self.address, owner)

    def _command(self, request: soap.WsmanRequest, shell: Shell) -> Answer:
        with self._lock:
            self._commands_seen += 1
            if self._commands_seen <= self.node.faults.quota_faults:
                return self._quota_fault(request, soap.QUOTA_MAX_OPERATIONS, "1500 concurrent operations")
            if shell.expires_after_first_command:
                self._shells.pop(shell.id, None)
        element = request.find("Command")
        line = (element.text or "").strip() if element is not None else ""
        arguments = request.find("Arguments")
        if arguments is not None and arguments.text:
            line = f"{line} {arguments.text.strip()}"
        command = Command(id=str(uuid.uuid4()).upper(), command_line=line, started=time.monotonic())
        with self._lock:
            shell.commands[command.id] = command
        console_stdin = request.options.get("WINRS_CONSOLEMODE_STDIN", "TRUE").upper() == "TRUE"
        script = decode_encoded_command(line)
        if script is None or script.strip() != self._bootstrap.strip() or console_stdin:
            # Not the stdin bootstrap: it runs on its own (a naive one-script-per-call client).
            self._finish(command, script)
        return 200, soap.command_response(request, command.id)

    def _send(self, request: soap.WsmanRequest, shell: Shell) -> Answer:
        stream = request.find("Stream")
        if stream is None:
            return self._fault(request, soap.SCHEMA_VALIDATION, "Send without a Stream element.")
        command = shell.commands.get(str(stream.get("CommandId")))
        if command is None:
            return self._fault(request, soap.SHELL_NOT_FOUND, "The command is not found in the shell.")
        command.stdin += base64.b64decode((stream.text or "").encode("ascii"))
        if stream.get("End", "false").lower() == "true" and not command.stdin_closed:
            command.stdin_closed = True
            self._finish(command, self._bootstrap)
        return 200, soap.empty_response(request, "SendResponse")

    def _receive(self, request: soap.WsmanRequest, shell: Shell) -> Answer:
        desired = request.find("DesiredStream")
        command = shell.commands.get(str(desired.get("CommandId") if desired is not None else None))
        if command is None:
            return self._fault(request, soap.SHELL_NOT_FOUND, "The command is not found in the shell.")
        deadline = time.monotonic() + request.operation_timeout_s
        never_done = self.node.faults.hang == "receive"
        if not never_done:
            command.ready.wait(max(0.0, deadline - time.monotonic()))
        if not never_done and command.ready.is_set() and command.done_at <= deadline:
            self._sleep_until(command.done_at)
            if self._shell(request) is None:
                return self._fault(request, soap.SHELL_NOT_FOUND, _shell_not_found(request.shell_id))
            return 200, soap.receive_response(
                request, command.id, command.stdout, command.stderr, command.exit_code
            )
        self._sleep_until(deadline)
        reason = ("The WS-Management service cannot complete the operation within the time specified in "
                  "OperationTimeout.")
        return self._fault(request, soap.OPERATION_TIMEOUT, reason)

    # --- running a command ----------------------------------------------------------------------------

    def _finish(self, command: Command, script: str | None) -> None:
        command.stdout, command.stderr, command.exit_code, waited_until = self._run(command, script)
        command.done_at = max(command.started + self.exec_s, time.monotonic(), waited_until)
        command.ready.set()

    def _run(self, command: Command, script: str | None) -> tuple[bytes, bytes, int, float]:
        """stdout, stderr, exit code, and when the agent would be done (it waits for a service)."""
        if script is None:
            program = command.command_line.split(" ", 1)[0]
            message = (f"'{program}' is not recognized as an internal or external command,\r\n"
                       "operable program or batch file.\r\n")
            return b"", message.encode("ascii", "replace"), 1, 0.0
        mode = self.node.faults.language_mode
        if mode != "FullLanguage":  # what bootstrap.ps1 writes (Write-Error) outside FullLanguage
            message = f"scaleguard: PowerShell runs in {mode} (AppLocker/WDAC); the agent needs FullLanguage"
            return b"", _clixml_error(message), 4, 0.0
        try:
            if script.strip() == self._bootstrap.strip():
                body = bytes(command.stdin).partition(PAYLOAD_SEPARATOR)[0]
                if body.startswith(RUNBOOK_MARK):
                    return self._run_runbook(body)
                request = request_from_stdin(bytes(command.stdin))
            elif script.startswith(NAIVE_MARKER):
                request = json.loads(script.splitlines()[0][len(NAIVE_MARKER) :])
            else:
                raise ActionError("the scaleguard lab answers agent requests only; it does not run PowerShell")
            if self.node.faults.malformed_output and request.get("op") == "collect":
                return MALFORMED_STDOUT, b"", 0, 0.0
            result, waited_until = dispatch_timed(self.node, request)
        except PartialChangeError as exc:
            answer = json.dumps({"partial": True, "result": exc.result}, ensure_ascii=True).encode("ascii")
            return answer, _clixml_error(str(exc)), 3, exc.ends_at
        except ActionError as exc:
            return b"", _clixml_error(str(exc)), 1, exc.ends_at
        except (ValueError, KeyError) as exc:
            return b"", _clixml_error(f"malformed request: {exc}"), 1, 0.0
        except Exception:  # a bug in a handler must not kill the host; it shows as a failed command
            return b"", _clixml_error(traceback.format_exc(limit=5)), 1, 0.0
        stdout = json.dumps(result, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        return stdout, b"", 0, waited_until

    def _run_runbook(self, body: bytes) -> tuple[bytes, bytes, int, float]:
        """A change-window runbook handed to the bootstrap: run only if it is one scaleguard wrote for the
        shipped agent (:mod:`scaleguard.lab.runbook` does what its driver does), else refused."""
        from scaleguard.apply.runbook_script import NotARunbook, parse_runbook
        from scaleguard.lab.runbook import RunbookRefused, run_runbook

        try:
            data = parse_runbook(body.decode("ascii"))
        except (NotARunbook, UnicodeDecodeError) as exc:
            return b"", _clixml_error(f"{exc}; the scaleguard lab runs no other PowerShell"), 1, 0.0
        try:
            document, code = run_runbook(self.node, data)
        except RunbookRefused as exc:
            return b"", _clixml_error(f"scaleguard runbook: {exc}"), 2, 0.0
        return json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode("ascii"), b"", code, 0.0

    # --- helpers --------------------------------------------------------------------------------------

    def _shell(self, request: soap.WsmanRequest) -> Shell | None:
        with self._lock:
            return self._shells.get(request.shell_id or "")

    def _fault(self, request: soap.WsmanRequest, code: int, reason: str) -> Answer:
        return 500, soap.fault(request, code, reason, self.machine)

    def _quota_fault(self, request: soap.WsmanRequest, code: int, allowed: str) -> Answer:
        """A WinRM quota exceeded: the fault carries the MSFT_WmiError with the same code."""
        reason = ("The WS-Management service cannot process the request. This user is allowed a maximum "
                  f"number of {allowed}, which has been exceeded.")
        return 500, soap.fault(request, code, reason, self.machine, wmi_error=code)

    def _sleep_until(self, moment: float) -> None:
        delay = moment - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)

    def open_shells(self) -> int:
        with self._lock:
            return len(self._shells)


def _shell_not_found(shell_id: str | None) -> str:
    return (
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was not "
        "found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer "
        "exists on the server. Provide the correct ShellId or create a new shell and retry the operation."
    )


def request_from_stdin(data: bytes) -> dict[str, Any]:
    """What the bootstrap hands the agent: the JSON request, and the secret after it (``$ScaleguardSecret``)
    under :data:`SECRET_KEY`, which no request JSON may set."""
    _agent, request = split_payload(data)
    request.pop(SECRET_KEY, None)
    secret = payload_secret(data)
    if secret is not None:
        request[SECRET_KEY] = secret
    return request


def _clixml_error(message: str) -> bytes:
    """PowerShell's error stream as it arrives over WinRM under -EncodedCommand."""
    text = escape(message).replace("\r", "").replace("\n", "_x000D__x000A_")
    return (
        '#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        f'<S S="Error">{text}_x000D__x000A_</S></Objs>'
    ).encode()
