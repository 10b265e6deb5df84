"""Which host names and addresses may go into a certificate, a URL or a policy verdict.

A DNS/NetBIOS name (labels of 1-63 letters, digits, ``-`` or ``_``, not starting or ending with ``-``,
253 characters at most without the trailing dot) or an IP address. Anything else is refused everywhere:
SO-W01 calls such a MasterEndpoint invalid, and the planner never writes one into a certificate request
or a configuration file.
"""

from __future__ import annotations

import ipaddress

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def valid_host(name: str) -> bool:
    if is_ip(name):
        return True
    bare = name[:-1] if name.endswith(".") else name
    if not bare or len(bare) > 253:
        return False
    return all(_valid_label(label) for label in bare.split("."))


def _valid_label(label: str) -> bool:
    return (
        0 < len(label) <= 63
        and not label.startswith("-")
        and not label.endswith("-")
        and all(ch in _LABEL_CHARS for ch in label)
    )
