"""``netsh http show sslcert`` text → :class:`SslBinding` list, on any Windows build and in any language.

Labels are localized (German prints ``IP:Port`` and ``Zertifikathash``) and the trailing fields differ by
build (Server 2022 adds a dozen plus "Extended Properties" blocks and extra blank lines), so the parser
keys on the shape of values instead: an endpoint (``IP:port``, ``[v6]:port``, ``host:port``) opens a
binding, the first 40-hex value in it is the certificate hash and the first ``{GUID}`` the application
ID. The store name has no shape of its own (``Ctl Store Name`` also prints ``(null)``), so it is taken
from a known label or else from its fixed position right after the application ID.

Unknown is not empty: text that is not recognisably netsh output raises :class:`NetshParseError`, while
the "no bindings" shapes (a header with no blocks, "The system cannot find the file specified.") give
``[]``.

The text comes from the node, so no pattern here may backtrack: a line is split on its separating colon
by plain string search, and the value-shape patterns are only ever applied whole (``fullmatch``) to one
value, where each of them is linear. The error message says what the text is not and how long it is; it
never quotes it (the file may be anything, including a link to a secret).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from scaleguard.collectors.parsers.text import as_text
from scaleguard.rules.host import is_ip
from scaleguard.snapshot.model import SslBinding


class NetshParseError(ValueError):
    """The text is not ``netsh http show sslcert`` output (so the bindings are unknown, not empty)."""


_ENDPOINT = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.%a-zA-Z]+\]|[A-Za-z0-9_*](?:[A-Za-z0-9_.*-]*[A-Za-z0-9_*])?):(?P<port>\d{1,5})"
)
_HASH = re.compile(r"[0-9A-Fa-f]{40}")
_GUID = re.compile(r"\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}")
_COLONS = (":", "\uff1a")
_STORE_LABELS = frozenset({"certificate store name", "zertifikatspeichername", "zertifikatsspeichername"})
_CCS_LABELS = frozenset({"central certificate store", "zentraler zertifikatspeicher"})
_NO_BINDING_MESSAGES = (
    "the system cannot find the file specified",
    "das system kann die angegebene datei nicht finden",
    "le fichier spécifié est introuvable",
    "el sistema no puede encontrar el archivo especificado",
)
_NULL_VALUES = frozenset({"", "(null)", "(nul)", "(leer)"})
MAX_BINDINGS = 4096
"""More HTTP.sys bindings than any Scale Out node has (a master needs one, an IIS box a few hundred).

Every binding becomes facts that each policy's evaluation converts again, so an output with more is not
read as bindings at all: they are unknown (not assessed), and the node's time and memory stay bounded."""


BindingKind = Literal["ipport", "hostnameport", "ccs"]


@dataclass
class _Block:
    ip_port: str
    kind: BindingKind
    cert_hash: str | None = None
    app_id: str | None = None
    store: str | None = None
    store_known: bool = False
    after_app_id: bool = False
    notes: list[str] = field(default_factory=list)


def parse_sslcert(data: bytes | str) -> list[SslBinding]:
    """Bindings in the order netsh printed them; raises :class:`NetshParseError` for non-netsh text."""
    return parse_sslcert_with_notes(data)[0]


def parse_sslcert_with_notes(data: bytes | str) -> tuple[list[SslBinding], list[str]]:
    decoded = as_text(data)
    lines = decoded.text.lstrip("\ufeff").splitlines()
    blocks: list[_Block] = []
    saw_header = False
    previous_line = ""
    for line in lines:
        if _is_dashes(line) and previous_line.rstrip().endswith(_COLONS):
            saw_header = True
        if line.strip():
            previous_line = line
        split = split_field(line)
        if split is None:
            continue
        label, value = split
        if value is None:
            continue
        opened = _open_block(label, value)
        if opened is not None:
            if len(blocks) == MAX_BINDINGS:
                raise NetshParseError(f"the netsh output lists more than {MAX_BINDINGS} bindings; "
                                      "too many to be a Scale Out node's, so they are not read")
            blocks.append(opened)
        elif blocks:
            _fill(blocks[-1], label, value)
    if not blocks:
        _check_no_bindings(decoded.text, saw_header)
    notes = list(decoded.notes)
    for block in blocks:
        notes.extend(block.notes)
        if block.cert_hash is None and block.kind != "ccs":
            notes.append(f"binding {block.ip_port} shows no 40-hex certificate hash")
    return [_binding(b) for b in blocks], notes


def split_field(line: str) -> tuple[str, str | None] | None:
    """``(label, value)`` of a ``Label : value`` line, or ``None`` when the line has no such colon.

    The separator is the first colon (ASCII or full-width) that is followed by a space, a tab or nothing
    but white space, so labels that contain a colon themselves (German ``IP:Port``) stay whole. The value
    is ``None`` when the colon ends the line, ``""`` when only white space follows. Found with a few
    plain substring searches, each linear and none backtracking.
    """
    end = len(line.rstrip())
    start = len(line) - len(line.lstrip())
    if start >= end:
        return None
    found = [line.find(colon + space, start + 1) for colon in _COLONS for space in " \t"]
    if line[end - 1] in _COLONS and end - 1 > start:
        found.append(end - 1)
    candidates = [position for position in found if position >= 0]
    if not candidates:
        return None
    colon = min(candidates)
    label = line[start:colon].rstrip()
    after = colon + 1
    if after >= end:  # nothing but white space after the colon
        return label, "" if after < len(line) and line[after] in " \t" else None
    return label, line[after:end].lstrip(" \t")


def _is_dashes(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 5 and not stripped.strip("-")


def _open_block(label: str, value: str) -> _Block | None:
    lowered = label.lower()
    if lowered in _CCS_LABELS and value.isdigit():
        return _Block(ip_port=f"*:{value}", kind="ccs")
    endpoint = _ENDPOINT.fullmatch(value)
    if endpoint is None:
        return None
    host = endpoint.group("host")
    is_ip = _is_ip(host)
    # "0:10"-like values are only endpoints where the label says so; IP literals always are
    if not is_ip and ":" not in label and "\uff1a" not in label and "port" not in lowered:
        return None
    return _Block(ip_port=value, kind="ipport" if is_ip else "hostnameport")


def _fill(block: _Block, label: str, value: str) -> None:
    after_app_id, block.after_app_id = block.after_app_id, False
    if label.lower() in _STORE_LABELS:
        block.store, block.store_known = _store(value), True
        return
    if _HASH.fullmatch(value):
        if block.cert_hash is None:
            block.cert_hash = value.upper()
        return
    if _GUID.fullmatch(value):
        if block.app_id is None:
            block.app_id = value
            block.after_app_id = True
        return
    if after_app_id and not block.store_known:
        block.store, block.store_known = _store(value), True


def _store(value: str) -> str | None:
    return None if value.strip().lower() in _NULL_VALUES else value.strip()


def _is_ip(host: str) -> bool:
    candidate = host[1:-1] if host.startswith("[") else host
    return is_ip(candidate.split("%", 1)[0])


def _check_no_bindings(text: str, saw_header: bool) -> None:
    lowered = " ".join(text.lower().split())
    if any(message in lowered for message in _NO_BINDING_MESSAGES) or saw_header:
        return
    if not lowered:
        raise NetshParseError("the netsh output is empty")
    lines = len(text.strip().splitlines())
    raise NetshParseError(
        f"not `netsh http show sslcert` output ({len(text)} characters in {lines} line(s), "
        "no binding block and no bindings header)"
    )


def _binding(block: _Block) -> SslBinding:
    return SslBinding(
        ip_port=block.ip_port,
        kind=block.kind,
        cert_hash=block.cert_hash,
        app_id=block.app_id,
        cert_store=block.store,
    )
