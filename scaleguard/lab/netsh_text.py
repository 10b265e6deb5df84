"""Turn an evidence folder's ``sslcert.txt`` back into the registry records HTTP.sys keeps.

The lab simulates the registry (``SslBindingInfo``), not netsh, so a dump is read once when the lab starts,
by the project's own netsh parser: the lab must interpret a dump exactly as the offline audit does, or live
and offline findings of the same folder would differ. A dump the parser rejects is kept as text and served
through the agent's netsh fallback, so the live audit meets the same unreadable output.
"""

from __future__ import annotations

from scaleguard.collectors.parsers.netsh import NetshParseError, parse_sslcert
from scaleguard.lab.state import LabBinding


def bindings_from_netsh(data: bytes) -> list[LabBinding] | None:
    """Registry records for a dump, or None when it is not netsh output at all."""
    try:
        parsed = parse_sslcert(data)
    except NetshParseError:
        return None
    return [
        LabBinding(
            ip_port=b.ip_port,
            cert_hash=b.cert_hash or "",
            app_id=b.app_id or "",
            store=b.cert_store,
            kind=b.kind,
        )
        for b in parsed
    ]
