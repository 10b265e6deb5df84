"""The lab's HTTP side: one listening port per simulated host, all served by one process.

Design for a 2-core machine serving hundreds of hosts: every port is a ``ThreadingHTTPServer`` (HTTP/1.1
keep-alive, Nagle off, a deep accept queue), but none of them runs its own ``serve_forever`` loop; one
acceptor thread waits on all listening sockets with a selector and hands each new connection to a
thread of its own. Waiting (``--latency-ms``, ``--exec-ms``, long polls) is ``Event.wait``, never a busy
loop, so a few hundred idle hosts cost nothing. TLS handshakes happen in the connection's thread, not in
the acceptor, so one slow client cannot stall the others.
"""

from __future__ import annotations

import base64
import selectors
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from scaleguard.lab.wsman import soap
from scaleguard.lab.wsman.auth import (
    ENCRYPTED_CONTENT_TYPE,
    Accounts,
    AuthError,
    KerberosConnection,
    NtlmConnection,
    SecurityConnection,
)
from scaleguard.lab.wsman.host import SimulatedHost

AuthMode = Literal["basic", "ntlm", "kerberos"]
# WinRM's MaxEnvelopeSizekb defaults to 500 (KiB): a larger envelope is refused. The lab refuses a larger HTTP
# body outright, plus 4 KiB for the encryption framing, and never reads it.
MAX_BODY = 500 * 1024 + 4096


def _content_length(value: str | None) -> int | None:
    if value is None:
        return 0
    text = value.strip()
    return int(text) if text.isdigit() and len(text) <= 12 else None


class HostServer(ThreadingHTTPServer):
    """The HTTP endpoint of one simulated host."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        host: SimulatedHost,
        *,
        accounts: Accounts,
        auth: AuthMode,
        latency_s: float,
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(address, WsmanHandler)
        self.host = host
        self.accounts = accounts
        self.auth = auth
        self.latency_s = latency_s
        self.tls = tls
        self.delegated_logons = 0  # Kerberos logons that forwarded the client's ticket (delegate: true)
        self.socket.setblocking(False)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.setblocking(True)  # accepted from a non-blocking listener
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate (or went away): nothing to answer
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()


class WsmanHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: HostServer

    def setup(self) -> None:
        super().setup()
        self.security: SecurityConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Quiet: a lab serving hundreds of hosts must not flood its terminal."""

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
        """Authenticate from the headers first; only then read the body (at most ``MAX_BODY`` bytes).

        An unauthenticated or oversized request is answered and the connection closed without reading what
        the client sends, so an anonymous client cannot make the lab buffer anything.
        """
        host = self.server.host
        length = _content_length(self.headers.get("Content-Length"))
        if length is None:
            self._refuse(400, "a POST needs a valid Content-Length")
            return
        if self.path.rstrip("/").lower() != "/wsman":
            self._refuse(404, "")
            return
        try:
            user, authenticated = self._authenticate_headers()
        except AuthError:
            self._unauthorized()
            return
        if length > MAX_BODY:
            self.security = None
            if authenticated:
                self._refuse(413, f"the request body exceeds {MAX_BODY} bytes")
            else:  # the handshake leg was answered already; its oversized body is not read
                self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        if not authenticated:  # a handshake leg: its body is the request it will be re-sent with
            return
        if host.node.faults.hang == "http":
            host.stop.wait()  # read, never answered: the client's read timeout has to save it
            self.close_connection = True
            return
        try:
            message = self._plain_body(body)
        except AuthError:
            self._unauthorized()
            return
        if message is None:  # an empty authenticated POST (pywinrm's encryption set-up)
            self._reply(200, b"", "application/soap+xml;charset=UTF-8")
            return
        try:
            request = soap.parse_request(message)
        except soap.SoapError as exc:
            self._reply_soap(400, soap.fault(None, soap.SCHEMA_VALIDATION, str(exc), host.machine))
            return
        status, answer = host.handle(request, user)
        self._reply_soap(status, answer)

    # --- authentication -------------------------------------------------------------------------------

    def _authenticate_headers(self) -> tuple[str, bool]:
        """(user, authenticated) from the Authorization header alone; a handshake leg is answered here."""
        password = self.server.host.node.faults.password
        header = self.headers.get("Authorization", "")
        if self.server.auth == "basic":
            if not header.lower().startswith("basic "):
                raise AuthError("no Basic credentials")
            return self.server.accounts.check_basic(header, password), True
        scheme, _, token = header.partition(" ")
        if scheme.lower() in ("negotiate", "kerberos", "ntlm") and token:
            try:
                raw = base64.b64decode(token, validate=True)
            except ValueError as exc:
                raise AuthError("malformed token") from exc
            if self.server.auth == "kerberos":
                self.security = KerberosConnection()
            elif not isinstance(self.security, NtlmConnection):
                self.security = NtlmConnection(self.server.accounts.user_file(password))
            challenge = self.security.step(raw)
            if self.security.delegated:
                self.server.delegated_logons += 1
            if challenge is not None:
                self.close_connection = False
                self._reply(
                    401,
                    b"",
                    "text/plain",
                    {"WWW-Authenticate": f"{scheme} {base64.b64encode(challenge).decode()}"},
                )
                return "", False
        if self.security is None or not self.security.authenticated:
            raise AuthError("not authenticated")
        return self.security.user, True

    def _plain_body(self, body: bytes) -> bytes | None:
        if not body:
            return None
        if self.security is None:  # Basic: the body is the message (TLS, or AllowUnencrypted on HTTP)
            return body
        if "multipart/encrypted" in self.headers.get("Content-Type", ""):
            return self.security.decrypt(body)
        if self.server.tls is None:
            raise AuthError("unencrypted message on an HTTP listener")  # AllowUnencrypted=false
        return body

    def _unauthorized(self) -> None:
        if self.server.auth == "basic":
            scheme = 'Basic realm="WSMAN"'
        else:
            scheme = "Negotiate" if self.server.auth == "ntlm" else "Negotiate, Kerberos"
        self.security = None
        self._refuse(401, "", {"WWW-Authenticate": scheme})

    def _refuse(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        """Answer and close without reading the body (the client may still be sending it)."""
        self.close_connection = True
        self._reply(status, text.encode(), "text/plain", {**(headers or {}), "Connection": "close"})

    # --- replies --------------------------------------------------------------------------------------

    def _reply_soap(self, status: int, message: bytes) -> None:
        if self.security is not None and self.security.authenticated and self.server.tls is None:
            self._reply(status, self.security.encrypt(message), ENCRYPTED_CONTENT_TYPE)
        else:
            self._reply(status, message, "application/soap+xml;charset=UTF-8")

    def _reply(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        if self.server.latency_s:
            self.server.host.stop.wait(self.server.latency_s)
        self.send_response(status)
        self.send_header("Server", "Microsoft-HTTPAPI/2.0")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        final = self.security.final_token if self.security is not None else None
        if final is not None and status != 401:
            assert self.security is not None
            self.security.final_token = None  # mutual authentication: the AP-REP rides on the first answer
            self.send_header("WWW-Authenticate", f"Negotiate {base64.b64encode(final).decode()}")
        self.end_headers()
        self.wfile.write(body)


class Acceptor:
    """One thread accepting connections for every host server (instead of one loop thread per port)."""

    def __init__(self, servers: list[HostServer]) -> None:
        self.servers = servers
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        for server in servers:
            self._selector.register(server.socket, selectors.EVENT_READ, server)
        self._thread = threading.Thread(target=self._run, name="lab-acceptor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _events in self._selector.select(timeout=0.2):
                server: HostServer = key.data
                try:
                    server.handle_request()  # the socket is ready: this accepts without waiting
                except Exception as exc:  # never let one bad connection stop the whole lab
                    print(f"lab: {server.host.node.name}: {exc}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._selector.close()
        for server in self.servers:
            server.server_close()


def reserve_closed_port(address: str, port: int) -> socket.socket:
    """A bound, never listening socket: the port stays ours and every connection to it is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    return sock
