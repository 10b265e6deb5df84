"""MasterSettings.config / WorkerSettings.config, whatever shape the real file turns out to have.

No verbatim settings file has been seen (reference §1.4): the root element, any namespace, element versus
attribute form, even XML versus JSON are unconfirmed. So the reader does not assume a shape; it looks for
the documented setting names anywhere in the document (element, attribute, JSON key, or the .NET
``<add key=".." value=".."/>`` / ``<setting name=".."><value>..</value></setting>`` pairs), matches them
case-insensitively and namespace-agnostically, and reports them under their documented spelling. Values
are kept exactly as written (after decoding) so a policy can tell a thumbprint with a stray space from a
missing one. The first occurrence of a setting wins; a later, different one is reported as a note.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from scaleguard.collectors.parsers.text import DecodedText, as_text, codec_family, declared_xml_encoding
from scaleguard.safetext import may_hold_surrogates, plain_json
from scaleguard.snapshot.model import ConfigFile

ConfigKind = Literal["master", "worker"]

MASTER_SETTINGS: tuple[str, ...] = (
    "PortNumber",
    "SSLCertThumbprint",
    "SqlServerName",
    "CleanupCompletedJobsIntervalInMs",
    "DealWithExpiredTasksIntervalInMs",
    "MasterHeartbeatIntervalInMs",
    "SqlConnectionTimeoutInSecs",
    "InstanceName",
)
WORKER_SETTINGS: tuple[str, ...] = (
    "DisplayName",
    "Description",
    "MasterEndpoint",
    "MasterHttpsCertThumbprint",
    "WorkerHttpsCertThumbprint",
    "StoreLocation",
    "StoreName",
    "AgentHeartbeatInterval",
    "TaskHeartbeatInterval",
    # both documented spellings: which one shipped files use is unconfirmed (reference §1.3)
    "HeartbeatErrorTolerance",
    "HeartbeatErrorTollerance",
    "TaskRequestMaxCPU",
    "TaskRequestMinMemory",
    "MaxTaskCount",
    "LeaseInterval",
    "LeaseInternval",
    "TasksRootFolder",
    "TaskLogLevel",
    "TaskLogSegment",
    "TaskLogEnabled",
    "ExecutionLogCacheFolder",
    "ExecutionLogMaxBufferLogCount",
    "ExecutionLogMaxInMemoryBufferCount",
    "ExecutionLogRetryCount",
    "ExecutionLogRetryTimeout",
    "AgentId",
)

_CANONICAL: dict[str | None, dict[str, str]] = {
    "master": {name.lower(): name for name in MASTER_SETTINGS},
    "worker": {name.lower(): name for name in WORKER_SETTINGS},
    None: {name.lower(): name for name in (*MASTER_SETTINGS, *WORKER_SETTINGS)},
}
_PAIR_NAME_KEYS = ("key", "name")
_NOTES_LIMIT = 20


class _Collector:
    """Settings in document order; remembers conflicting duplicates instead of silently picking one."""

    def __init__(self, known: dict[str, str]) -> None:
        self.known = known
        self.settings: dict[str, str] = {}
        self.notes: list[str] = []
        self.conflicts = 0

    def summary(self) -> list[str]:
        extra = self.conflicts - _NOTES_LIMIT
        return [*self.notes, f"{extra} more conflicting duplicates"] if extra > 0 else self.notes

    def offer(self, name: str, value: str) -> None:
        canonical = self.known.get(name.lower())
        if canonical is None:
            return
        previous = self.settings.get(canonical)
        if previous is None:
            self.settings[canonical] = value
        elif previous != value:
            self.conflicts += 1
            if self.conflicts > _NOTES_LIMIT:
                return
            self.notes.append(f"{canonical} is given more than once with different values; "
                              f"the first one ({previous!r}) is used, {value!r} is ignored")


def parse_config(data: bytes | str, path: str, *, kind: ConfigKind | None = None) -> ConfigFile:
    """Settings file bytes (or already-decoded text) → :class:`ConfigFile`; never raises on content."""
    return parse_config_with_notes(data, path, kind=kind)[0]


def parse_config_with_notes(
    data: bytes | str, path: str, *, kind: ConfigKind | None = None
) -> tuple[ConfigFile, list[str]]:
    """As :func:`parse_config`, plus observations (encoding mismatch, duplicates) for diagnostics."""
    decoded = as_text(data)
    notes = list(decoded.notes)
    encoding = None if decoded.encoding == "unknown" else decoded.encoding
    text = decoded.text.lstrip("\ufeff \t\r\n")
    collector = _Collector(_CANONICAL[kind])
    if not text:
        return ConfigFile(path=path, encoding=encoding, parse_error="the file is empty"), notes
    if text[0] == "<":
        notes.extend(_declaration_mismatch(decoded, text))
        error = _collect_xml(text, collector)
        fmt: Literal["xml", "json", "unknown"] = "xml"
    elif text[0] in "{[":
        error = _collect_json(text, collector)
        fmt = "json"
    else:
        return ConfigFile(
            path=path, encoding=encoding, format="unknown",
            parse_error=f"neither XML nor JSON ({_describe_start(text)}, {len(text)} characters)",
        ), notes
    if error is not None:
        return ConfigFile(path=path, encoding=encoding, format=fmt, parse_error=error), notes
    notes.extend(collector.summary())
    return ConfigFile(path=path, encoding=encoding, format=fmt, settings=collector.settings), notes


def _describe_start(text: str) -> str:
    """What the first character is, in words: the file is never quoted (it may be anything)."""
    first = text[0]
    if first.isalpha():
        return "starts with a letter"
    if first.isdigit():
        return "starts with a digit"
    if first.isprintable():
        return "starts with punctuation"
    return f"starts with the control character U+{ord(first):04X}"


def _without_declaration(text: str) -> str:
    """``text`` minus a leading ``<?xml ...?>`` declaration, found by string search (no pattern)."""
    body = text.lstrip()
    if not body.startswith("<?xml") or body[5:6].isalnum() or body[5:6] == "_":
        return text
    close = body.find(">")
    return body[close + 1 :] if close > 0 and body[close - 1] == "?" else text


def _declaration_mismatch(decoded: DecodedText, text: str) -> list[str]:
    declared = declared_xml_encoding(text)
    if declared is None or decoded.encoding == "unknown":
        return []
    declared_family = codec_family(declared)
    if declared_family is None:
        return [f"the XML declaration names an unknown encoding {declared!r}; read as {decoded.encoding}"]
    if declared_family != codec_family(decoded.encoding):
        return [f"the XML declaration says {declared!r} but the bytes are {decoded.encoding}; "
                f"read as {decoded.encoding}"]
    return []


def _collect_xml(text: str, collector: _Collector) -> str | None:
    # The bytes already decided the encoding; a stale declaration must not get a second vote.
    body = _without_declaration(text)
    try:
        root = SafeET.fromstring(body)
    except DefusedXmlException as exc:
        return f"refused unsafe XML ({type(exc).__name__}): {exc}"
    except ParseError as exc:
        return f"not well-formed XML: {exc}"
    for element in root.iter():
        _offer_element(element, collector)
    return None


def _local(name: str) -> str:
    if "}" in name:
        name = name.rsplit("}", 1)[1]
    return name.rsplit(":", 1)[-1] if ":" in name else name


def _offer_element(element: Element, collector: _Collector) -> None:
    tag = element.tag
    if not isinstance(tag, str):
        return
    if not element.attrib:  # the common shape, <Name>value</Name>: nothing else to look at
        if len(element) == 0:
            collector.offer(_local(tag), element.text or "")
        return
    attributes = {_local(k).lower(): v for k, v in element.attrib.items()}
    if len(element) == 0:
        text = element.text or ""
        if not text and "value" in attributes:
            text = attributes["value"]
        collector.offer(_local(tag), text)
    for pair_key in _PAIR_NAME_KEYS:
        named = attributes.get(pair_key)
        if named is not None and named.lower() in collector.known:
            collector.offer(named, _pair_value(element, attributes))
            break
    for attr_name, attr_value in element.attrib.items():
        if _local(attr_name).lower() not in _PAIR_NAME_KEYS + ("value",):
            collector.offer(_local(attr_name), attr_value)


def _pair_value(element: Element, attributes: dict[str, str]) -> str:
    if "value" in attributes:
        return attributes["value"]
    for child in element:
        if isinstance(child.tag, str) and _local(child.tag).lower() == "value":
            return child.text or ""
    return element.text or ""


def _collect_json(text: str, collector: _Collector) -> str | None:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc}"
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, arrays nested 10,000 deep
        return f"not usable JSON ({type(exc).__name__})"
    if may_hold_surrogates(text):
        document = plain_json(document)
    for key, value in _json_pairs(document):
        scalar = _json_scalar(value)
        if scalar is not None:
            collector.offer(key, scalar)
    return None


def _json_pairs(document: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) in document order, depth first, with an explicit stack: nested generators
    would cost each pair once per level of nesting, and the nesting is the file's to choose."""
    pending: list[Iterator[Any]] = [iter((document,))]
    while pending:
        node = next(pending[-1], _DONE)
        if node is _DONE:
            pending.pop()
            continue
        if isinstance(node, tuple):  # a (key, value) member of an object
            key, value = node
            yield key, value
            pending.append(iter((value,)))
        elif isinstance(node, dict):
            lowered = {str(k).lower(): v for k, v in node.items()}
            for pair_key in _PAIR_NAME_KEYS:
                named = lowered.get(pair_key)
                if isinstance(named, str) and "value" in lowered:
                    yield named, lowered["value"]
                    break
            pending.append((str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            pending.append(iter(node))


_DONE = object()


def _json_scalar(value: Any) -> str | None:
    """JSON scalars as the text a config would hold; ``null`` is an empty value, objects are not values."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return json.dumps(value)
    return None
