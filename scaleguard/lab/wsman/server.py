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
from scaleguard.lab.wsman.auth import ENCRYPTED_CONTENT_TYPE, Accounts, AuthError, NtlmConnection
from scaleguard.lab.wsman.host import SimulatedHost

AuthMode = Literal["basic", "ntlm"]


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
        self.ntlm: NtlmConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        """Quiet: a lab serving hundreds of hosts must not flood its terminal."""

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        host = self.server.host
        if host.node.faults.hang == "http":
            host.stop.wait()  # read, never answered: the client's read timeout has to save it
            self.close_connection = True
            return
        if self.path.rstrip("/").lower() != "/wsman":
            self._reply(404, b"", "text/plain")
            return
        try:
            user, message = self._authenticate(body)
        except AuthError:
            self._unauthorized()
            return
        if message is None:  # a handshake step already answered, or an empty authenticated POST
            return
        try:
            request = soap.parse_request(message)
        except soap.SoapError as exc:
            self._reply_soap(400, soap.fault(None, soap.SCHEMA_VALIDATION, str(exc), host.machine))
            return
        status, answer = host.handle(request, user)
        self._reply_soap(status, answer)

    # --- authentication -------------------------------------------------------------------------------

    def _authenticate(self, body: bytes) -> tuple[str, bytes | None]:
        password = self.server.host.node.faults.password
        header = self.headers.get("Authorization", "")
        if self.server.auth == "basic":
            if not header.lower().startswith("basic "):
                raise AuthError("no Basic credentials")
            return self.server.accounts.check_basic(header, password), body
        scheme, _, token = header.partition(" ")
        if scheme.lower() in ("negotiate", "ntlm") and token:
            if self.ntlm is None:
                self.ntlm = NtlmConnection(self.server.accounts.user_file(password))
            challenge = self.ntlm.step(base64.b64decode(token))
            if challenge is not None:
                self._reply(
                    401,
                    b"",
                    "text/plain",
                    {"WWW-Authenticate": f"{scheme} {base64.b64encode(challenge).decode()}"},
                )
                return "", None
        if self.ntlm is None or not self.ntlm.authenticated:
            raise AuthError("not authenticated")
        if not body:
            self._reply(200, b"", "application/soap+xml;charset=UTF-8")
            return self.ntlm.user, None
        if "multipart/encrypted" in self.headers.get("Content-Type", ""):
            return self.ntlm.user, self.ntlm.decrypt(body)
        if self.server.tls is None:
            raise AuthError("unencrypted message on an HTTP listener")  # AllowUnencrypted=false
        return self.ntlm.user, body

    def _unauthorized(self) -> None:
        scheme = 'Basic realm="WSMAN"' if self.server.auth == "basic" else "Negotiate"
        self.ntlm = None
        self._reply(401, b"", "text/plain", {"WWW-Authenticate": scheme})

    # --- replies --------------------------------------------------------------------------------------

    def _reply_soap(self, status: int, message: bytes) -> None:
        if self.ntlm is not None and self.ntlm.authenticated and self.server.tls is None:
            self._reply(status, self.ntlm.encrypt(message), ENCRYPTED_CONTENT_TYPE)
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
