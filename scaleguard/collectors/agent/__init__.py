"""The node agent: PowerShell shipped as package data, and how it travels to a node.

The command line carries only a small fixed bootstrap (``-EncodedCommand``, far below cmd.exe's 8191
characters); the agent script and the JSON request travel on stdin separated by four NULs, as Ansible
pipelines its modules. The request is data the agent parses with ``ConvertFrom-Json``: nothing from an
inventory or a finding is ever spliced into PowerShell source.
"""

from __future__ import annotations

import base64
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

PAYLOAD_SEPARATOR = b"\x00\x00\x00\x00"
POWERSHELL = "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand"
_ENCODED = re.compile(r"-(?:EncodedCommand|enc|e|ec)\s+([A-Za-z0-9+/=]+)", re.IGNORECASE)


@lru_cache(maxsize=8)
def agent_script(name: str = "collect.ps1") -> str:
    """A ``.ps1`` shipped in this package (ASCII only, so no code page can alter it)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="ascii")


def bootstrap_script() -> str:
    return agent_script("bootstrap.ps1")


def bootstrap_command() -> str:
    """The whole command line a node runs: PowerShell reading script and request from stdin."""
    encoded = base64.b64encode(bootstrap_script().encode("utf-16-le")).decode("ascii")
    return f"{POWERSHELL} {encoded}"


def stdin_payload(request: dict[str, Any], script: str | None = None, *, secret: str | None = None) -> bytes:
    """``script NUL NUL NUL NUL request-json [NUL NUL NUL NUL secret-b64]``, ASCII-only.

    Non-ASCII request text is JSON-escaped. A ``secret`` (a PFX password) travels after a second separator,
    base64 of its UTF-8, so it is never part of the JSON the agent gives ``ConvertFrom-Json``: the bootstrap
    keeps it in ``$ScaleguardSecret``, out of every cmdlet's parameters, which Module Logging (4103) records.
    """
    body = agent_script() if script is None else script
    payload = body.encode("ascii") + PAYLOAD_SEPARATOR + json.dumps(request, ensure_ascii=True).encode("ascii")
    if secret is not None:
        payload += PAYLOAD_SEPARATOR + base64.b64encode(secret.encode("utf-8"))
    return payload


def split_payload(data: bytes) -> tuple[str, dict[str, Any]]:
    """The inverse of :func:`stdin_payload` without the secret (used by the lab, which reads what the
    bootstrap would)."""
    script, sep, rest = data.partition(PAYLOAD_SEPARATOR)
    if not sep:
        raise ValueError("no NUL separator between script and request")
    request, _, _secret = rest.partition(PAYLOAD_SEPARATOR)
    parsed = json.loads(request.decode("utf-8").strip())
    if not isinstance(parsed, dict):
        raise ValueError("the request is not a JSON object")
    return script.decode("utf-8"), parsed


def payload_secret(data: bytes) -> str | None:
    """The secret after the request (what the bootstrap puts in ``$ScaleguardSecret``), or None."""
    _script, _, rest = data.partition(PAYLOAD_SEPARATOR)
    _request, sep, secret = rest.partition(PAYLOAD_SEPARATOR)
    if not sep:
        return None
    return base64.b64decode(secret.strip(), validate=True).decode("utf-8")


def decode_encoded_command(command_line: str) -> str | None:
    """The script behind ``powershell -EncodedCommand <b64>``, or None for any other command line."""
    found = _ENCODED.search(command_line)
    if found is None or "powershell" not in command_line.lower():
        return None
    try:
        return base64.b64decode(found.group(1)).decode("utf-16-le")
    except (ValueError, UnicodeDecodeError):
        return None
