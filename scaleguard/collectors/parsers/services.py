"""Service rows (``Win32_Service`` via CIM, or ``Get-Service``) → :class:`Service`.

Which cmdlet produced the JSON changes the column names (``State``/``Status``, ``StartMode``/``StartType``,
``StartName``/``UserName``) and, on some PowerShell versions, turns enums into numbers. Numbers are mapped
to the words ``Win32_Service`` uses so that policies only ever see one vocabulary (``Running``, ``Auto``).
"""

from __future__ import annotations

from typing import Any

from scaleguard.collectors.parsers.psjson import as_int, as_rows, ci_get
from scaleguard.snapshot.model import Service

# System.ServiceProcess.ServiceControllerStatus
SERVICE_STATES = {
    1: "Stopped", 2: "Start Pending", 3: "Stop Pending", 4: "Running",
    5: "Continue Pending", 6: "Pause Pending", 7: "Paused",
}
# System.ServiceProcess.ServiceStartMode, spelled as Win32_Service.StartMode
START_MODES = {0: "Boot", 1: "System", 2: "Auto", 3: "Manual", 4: "Disabled"}


def services_from_json(value: Any) -> tuple[list[Service], list[str]]:
    """Decoded services JSON (lone object or array) → services, plus notes about rows it had to skip."""
    services: list[Service] = []
    notes: list[str] = []
    for index, row in enumerate(as_rows(value), start=1):
        name = ci_get(row, "Name", "ServiceName")
        if not isinstance(name, str) or not name.strip():
            notes.append(f"row {index} has no service Name; skipped")
            continue
        state = _word(ci_get(row, "State", "Status"), SERVICE_STATES, "State", name, notes)
        start_mode = _word(ci_get(row, "StartMode", "StartType"), START_MODES, "StartMode", name, notes)
        account = ci_get(row, "StartName", "UserName")
        services.append(Service(
            name=name.strip(), state=state, start_mode=start_mode,
            account=account.strip() if isinstance(account, str) and account.strip() else None,
        ))
    return services, notes


def _word(raw: Any, words: dict[int, str], column: str, service: str, notes: list[str]) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str) and not raw.strip().lstrip("-").isdigit():
        return raw.strip() or None
    number = as_int(raw)
    if number is None:
        notes.append(f"{service}: {column} {raw!r} is not understood; treated as unknown")
        return None
    if number not in words:
        notes.append(f"{service}: {column} {number} is not a known value; treated as unknown")
        return None
    return words[number]
