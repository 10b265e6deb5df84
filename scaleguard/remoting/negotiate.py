"""Kerberos and Negotiate for pywinrm through pyspnego (GSSAPI), with WinRM message encryption.

Why not pywinrm's own ``kerberos`` transport: it needs pykerberos or winkerberos (C extensions that are not
in a normal install) and it cannot take a password (a ``kinit`` must run first). pyspnego is already how
the project speaks NTLM; with its ``kerberos`` extra (python-gssapi and pykrb5 over MIT krb5) it gives a
Kerberos context that can acquire a ticket from a password in memory (a ``MEMORY:`` credential cache,
nothing written to disk) or use the user's ticket cache, and whose ``wrap_winrm``/``unwrap_winrm`` produce
exactly the MS-WSMV §2.2.9.1 encrypted payload that pywinrm's ``Encryption`` class frames.

So :class:`SpnegoTransport` is a pywinrm ``Transport`` whose requests session authenticates with
:class:`HttpSpnegoAuth`, and pywinrm's ``Encryption(session, "kerberos")`` calls that auth's
``wrap_winrm(host, message)``/``unwrap_winrm(host, message, signature)`` — the interface pywinrm's vendored
requests-kerberos offers, so pywinrm's message framing and checks are reused unchanged.

The handshake answers the server's 401 (as pypsrp does), so over HTTPS the channel binding token is computed
from the certificate the connection actually got. Mutual authentication is required: a server that accepts
the request without proving itself (no final token) is refused.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase
from winrm.exceptions import WinRMError
from winrm.transport import Transport

SpnegoProtocol = Literal["kerberos", "negotiate"]
AUTH_SCHEMES = ("negotiate", "kerberos")


def kerberos_unavailable_reason() -> str | None:
    """Why Kerberos cannot work here, or None when it can (checked once per run, before connecting)."""
    try:
        import gssapi  # noqa: F401
        import krb5  # noqa: F401
    except ImportError as exc:
        return (
            f"the Python GSSAPI bindings are missing ({exc.name or exc}): install the kerberos support with "
            "`pip install 'pyspnego[kerberos]'` (it builds against the system's krb5 headers: "
            "Debian/Ubuntu `apt-get install libkrb5-dev`, RHEL `dnf install krb5-devel`)"
        )
    except OSError as exc:  # the extension is there but libgssapi_krb5 cannot be loaded
        return f"the system's Kerberos library cannot be loaded: {exc}"
    from spnego._gss import GSSAPIProxy

    if "kerberos" not in GSSAPIProxy.available_protocols():
        return "the system's GSSAPI library offers no Kerberos mechanism (is MIT or Heimdal krb5 installed?)"
    return None


@dataclass(frozen=True)
class SpnegoSettings:
    protocol: SpnegoProtocol
    username: str | None  # None: the default principal of the ticket cache
    password: str | None  # None: use the ticket cache (KRB5CCNAME or the system default)
    service: str = "HTTP"
    hostname_override: str | None = None
    delegate: bool = False


class HttpSpnegoAuth(AuthBase):
    """HTTP Negotiate (RFC 4559) for one connection's security context, plus WinRM wrap/unwrap."""

    def __init__(self, settings: SpnegoSettings) -> None:
        self.settings = settings
        self.context: Any = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Connection"] = "Keep-Alive"
        request.register_hook("response", self._on_response)  # type: ignore[no-untyped-call]
        return request

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401:
            return response
        offered = response.headers.get("WWW-Authenticate", "")
        scheme = _pick_scheme(offered)
        if scheme is None:
            raise WinRMError(
                f"the server offers no Negotiate or Kerberos authentication (it offers: {offered or 'nothing'})"
            )
        self.context = self._new_context(response)
        token: bytes | None = self.context.step()
        while token is not None:
            _ = response.content  # finish reading so the connection is reused: the context is bound to it
            response.raw.release_conn()
            request = response.request.copy()
            request.headers["Authorization"] = f"{scheme} {base64.b64encode(token).decode()}"
            response = response.connection.send(request, **kwargs)
            answer = _server_token(response.headers.get("WWW-Authenticate", ""))
            if response.status_code == 401 and answer is None:
                self.context = None
                return response  # refused: pywinrm raises InvalidCredentialsError
            if answer is None:
                break
            token = self.context.step(answer)
        if not self.context.complete:
            self.context = None
            raise WinRMError(
                "the server accepted the request without completing mutual authentication "
                "(no final Kerberos token): its identity was not proven"
            )
        return response

    def _new_context(self, response: requests.Response) -> Any:
        import spnego
        from spnego.channel_bindings import GssChannelBindings

        s = self.settings
        hostname = s.hostname_override or (urlsplit(response.url).hostname or "")
        bindings = None
        certificate = _peer_certificate(response)
        if certificate is not None:
            bindings = GssChannelBindings(application_data=b"tls-server-end-point:" + _certificate_hash(certificate))
        wanted = spnego.ContextReq.default
        if s.delegate:
            wanted |= spnego.ContextReq.delegate
        return spnego.client(
            s.username,
            s.password,
            hostname=hostname,
            service=s.service,
            channel_bindings=bindings,
            context_req=wanted,
            protocol=s.protocol,
            options=spnego.NegotiateOptions.wrapping_winrm,
        )

    # --- what pywinrm's Encryption(session, "kerberos") calls ----------------------------------------

    def wrap_winrm(self, host: Any, message: bytes) -> tuple[bytes, bytes]:
        if self.context is None or not self.context.complete:
            raise WinRMError("message encryption needs an authenticated connection")
        result = self.context.wrap_winrm(message)
        if result.padding_length:
            # pywinrm frames Length as the plain message size; a padded cipher (RC4) would not fit that frame
            raise WinRMError("the negotiated Kerberos encryption type pads messages (RC4?); use AES")
        return bytes(result.data), bytes(result.header)

    def unwrap_winrm(self, host: Any, message: bytes, signature: bytes) -> bytes:
        if self.context is None or not self.context.complete:
            raise WinRMError("message decryption needs an authenticated connection")
        return bytes(self.context.unwrap_winrm(signature, message))


class SpnegoTransport(Transport):
    """pywinrm's transport with :class:`HttpSpnegoAuth`: encryption over HTTP unless ``message_encryption``
    is ``never`` (over HTTPS, TLS protects the messages and WinRM does not wrap them)."""

    def __init__(
        self,
        endpoint: str,
        *,
        settings: SpnegoSettings,
        verify: bool | str,
        read_timeout_sec: float,
        message_encryption: Literal["auto", "never"],
    ) -> None:
        super().__init__(
            endpoint,
            auth_method="kerberos",  # pywinrm's name for an auth whose session offers wrap_winrm
            read_timeout_sec=read_timeout_sec,  # type: ignore[arg-type]
            server_cert_validation="ignore" if verify is False else "validate",  # pywinrm then mutes urllib3's
            message_encryption=message_encryption,  # warning per request: --insecure is reported once instead
            proxy=None,
        )
        self.spnego = settings
        self.verify = verify

    def build_session(self) -> requests.Session:
        if self.session:
            return self.session
        session = requests.Session()
        session.trust_env = False  # no proxy, netrc or CA bundle from the environment: only what was configured
        session.verify = self.verify
        session.auth = HttpSpnegoAuth(self.spnego)
        session.headers.update(self.default_headers)
        self.session = session
        if self.message_encryption == "auto" and not self.endpoint.lower().startswith("https"):
            self.setup_encryption(session)  # one empty POST runs the handshake, then every body is sealed
        return session


def _pick_scheme(offered: str) -> str | None:
    names = {part.strip().split(" ", 1)[0].lower() for part in offered.split(",") if part.strip()}
    for scheme in AUTH_SCHEMES:
        if scheme in names:
            return "Negotiate" if scheme == "negotiate" else "Kerberos"
    return None


def _server_token(header: str) -> bytes | None:
    for part in header.split(","):
        scheme, _, token = part.strip().partition(" ")
        if scheme.lower() in AUTH_SCHEMES and token.strip():
            try:
                return base64.b64decode(token.strip(), validate=True)
            except ValueError:
                return None
    return None


def _peer_certificate(response: requests.Response) -> bytes | None:
    """The DER certificate of the TLS connection the response came on (None over plain HTTP)."""
    try:
        sock: Any = response.raw._fp.fp.raw._sock  # type: ignore[union-attr]  # urllib3 internals, as pypsrp
    except AttributeError:
        return None
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    der = getpeercert(True)
    return bytes(der) if der else None


def _certificate_hash(der: bytes) -> bytes:
    """RFC 5929 tls-server-end-point: the certificate's signature hash, SHA-256 for MD5/SHA-1 (or unknown)."""
    from cryptography import x509

    try:
        algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
    except Exception:  # noqa: BLE001 - an unknown algorithm falls back to SHA-256, as the RFC says
        algorithm = None
    name = algorithm.name if algorithm is not None else "sha256"
    return hashlib.new("sha256" if name in ("md5", "sha1") else name, der).digest()
