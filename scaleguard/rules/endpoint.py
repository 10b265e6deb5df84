"""When a worker's MasterEndpoint is well formed (SO-W01), and what it names.

SSIS reads it as ``https://host:port`` with an optional trailing ``/``: an https URL with a valid host
(see :mod:`scaleguard.rules.host`), a port in 1-65535 and no path, query, fragment, user name or
surrounding whitespace. The policy reports every problem found; the planner only rewrites an endpoint
this calls invalid, and picks the master a worker talks to by the host this parses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from scaleguard.rules.host import valid_host


@dataclass(frozen=True)
class Endpoint:
    scheme: str | None
    host: str | None
    port: int | None
    path: str
    issues: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return not self.issues

    @property
    def https_host(self) -> str | None:
        """The host when this is an https URL that names one, whatever else is wrong with it."""
        return self.host if self.scheme == "https" else None

    @property
    def normalized(self) -> str | None:
        if not self.host or not self.port:
            return None
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme or ''}://{shown}:{self.port}"


@lru_cache(maxsize=1024)
def parse_endpoint(raw: str) -> Endpoint:
    """Every worker of a fleet names the same one or two endpoints, hence the cache."""
    text = raw.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return Endpoint(None, None, None, "", ("is not a URL",))
    scheme = parts.scheme.lower() or None
    try:
        port, port_invalid = parts.port, False
    except ValueError:
        port, port_invalid = None, True
    issues: list[str] = []
    if scheme != "https":
        issues.append(f"scheme is {scheme!r}, not 'https'" if scheme else "is not a URL")
    if not host:
        issues.append("has no host")
    elif not valid_host(host):
        issues.append(f"host {host!r} is not a valid host name or address")
    if port is None:
        issues.append("has an invalid port" if port_invalid else "has no port")
    elif not 1 <= port <= 65535:
        issues.append(f"port {port} is outside 1-65535")
        port = None
    if parts.path not in ("", "/"):
        issues.append(f"has a path {parts.path!r}")
    if parts.query or parts.fragment or parts.username is not None:
        issues.append("has a query, fragment or user name")
    if text != raw:
        issues.append("has surrounding whitespace")
    return Endpoint(scheme, host or None, port, parts.path, tuple(issues))
