"""Host identity (``host.json``) and SCHANNEL settings (``schannel.json``) from decoded JSON.

Both are small, hand-assembled files, so the readers accept the obvious variations (key case, a lone
string where a list was meant, numbers as strings) and turn anything else into *unknown* with a note.
"""

from __future__ import annotations

from typing import Any

from scaleguard.collectors.parsers.psjson import as_int, as_rows, ci_get
from scaleguard.snapshot.model import HostIdentity, Schannel


def host_from_json(value: Any, computer_name: str) -> tuple[HostIdentity, list[str]]:
    """``{"fqdn": ..., "addresses": [...]}`` → identity; the computer name is the node folder's name."""
    notes: list[str] = []
    rows = as_rows(value)
    if not rows:
        notes.append("holds no JSON object; FQDN and addresses unknown")
        return HostIdentity(computer_name=computer_name), notes
    row = rows[0]
    fqdn = ci_get(row, "fqdn", "DNSHostName", "HostName")
    if fqdn is not None and not isinstance(fqdn, str):
        notes.append(f"fqdn {fqdn!r} is not a string; unknown")
        fqdn = None
    named = ci_get(row, "computer_name", "ComputerName")
    if isinstance(named, str) and named.strip() and named.strip().lower() != computer_name.lower():
        notes.append(f"names the computer {named.strip()!r} but the folder is {computer_name!r}; "
                     "the folder name is used")
    return HostIdentity(
        computer_name=computer_name,
        fqdn=(fqdn.strip() or None) if isinstance(fqdn, str) else None,
        addresses=_addresses(ci_get(row, "addresses", "IPAddress", "IPAddresses"), notes),
    ), notes


def _addresses(raw: Any, notes: list[str]) -> list[str] | None:
    if raw is None:
        return None
    items = raw if isinstance(raw, list) else [raw]
    addresses = [item.strip() for item in items if isinstance(item, str) and item.strip()]
    if len(addresses) != len(items):
        notes.append(f"addresses {raw!r} holds values that are not strings; they were dropped")
    return addresses


def schannel_from_json(value: Any) -> tuple[Schannel, list[str]]:
    """``{"ClientAuthTrustMode": 2, "SendTrustedIssuerList": 0}``; a missing value stays unknown."""
    notes: list[str] = []
    rows = as_rows(value)
    row = rows[0] if rows else {}
    values: dict[str, int | None] = {}
    for column in ("ClientAuthTrustMode", "SendTrustedIssuerList"):
        raw = ci_get(row, column)
        number = as_int(raw)
        if raw is not None and number is None:
            notes.append(f"{column} {raw!r} is not a number; unknown")
        values[column] = number
    return Schannel(
        client_auth_trust_mode=values["ClientAuthTrustMode"],
        send_trusted_issuer_list=values["SendTrustedIssuerList"],
    ), notes
