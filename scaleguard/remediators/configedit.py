"""Change one setting's value in a MasterSettings/WorkerSettings file and nothing else, byte for byte.

Nobody has seen a verbatim settings file (reference §1.4): it may be XML (element, attribute or
``<add key=".." value=".."/>`` form) or JSON, UTF-8 or UTF-16 with or without BOM, CRLF or LF. A fix
that re-serialised the document would silently rewrite all of that, and an operator diffing the file
afterwards could no longer tell what scaleguard did. So the file is never re-serialised: the value's
span is located in the decoded text with a small lexer that skips comments, CDATA and processing
instructions, and only that span is replaced before the text is encoded back with the original
encoding and BOM (the parsers' own :func:`decode_text`/:func:`encode_text`, so reading and writing agree
on what the file is).

Every occurrence the parser would read is edited, because the parser reports conflicting duplicates;
the result is parsed again and must name the new value while every other setting keeps its old one.
Anything ambiguous (a value split by comments, undecodable bytes, a setting that is absent) is refused
rather than guessed.

The file comes from the node, so the lexer's patterns only ever run on a document the hardened parser
(expat through defusedxml, or ``json``) has already accepted, and never on one with a DOCTYPE. On such a
document every token ends at its own terminator (a comment at its ``-->``, a start tag at the ``>``
after its quoted attributes), so each token is scanned once and the lexing is linear; on malformed input
the same lazy patterns would rescan to the end once per unterminated opener.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from scaleguard.collectors.parsers.config import parse_config
from scaleguard.collectors.parsers.text import decode_text, encode_text


class ConfigEditError(ValueError):
    """The file cannot be edited safely; it is left untouched."""


@dataclass(frozen=True)
class EditResult:
    content: bytes
    old_values: tuple[str, ...]
    occurrences: int
    encoding: str
    changed: bool


@dataclass(frozen=True)
class _Span:
    """Characters ``start:end`` of the decoded text hold the value; ``kind`` says how to escape it."""

    start: int
    end: int
    kind: str  # "text", "cdata", "attr", "json", "selfclose"
    quote: str = '"'
    old: str = ""
    tag_name: str = ""


def edit_setting(data: bytes, setting: str, value: str) -> EditResult:
    """``data`` with every occurrence of ``setting`` set to ``value``; raises :class:`ConfigEditError`."""
    decoded = decode_text(data)
    if any("replaced" in note for note in decoded.notes):
        raise ConfigEditError(f"the file is not valid {decoded.encoding}; refusing to rewrite it")
    text = decoded.text
    if encode_text(text, decoded.encoding) != data:
        raise ConfigEditError("the file does not round-trip through its own encoding; refusing to rewrite it")
    body = text.lstrip("\ufeff \t\r\n")
    if not body:
        raise ConfigEditError("the file is empty")
    before = parse_config(data, "config")
    if before.parse_error:
        raise ConfigEditError(f"the file does not parse ({before.parse_error}); refusing to rewrite it")
    try:
        if body[0] == "<":
            if "<!DOCTYPE" in body:
                raise ConfigEditError("the file has a DOCTYPE; refusing to rewrite it")
            spans = _xml_spans(text, setting)
        elif body[0] in "{[":
            spans = _json_spans(text, setting)
        else:
            raise ConfigEditError("the file is neither XML nor JSON")
    except RecursionError as exc:
        raise ConfigEditError("the file is nested too deeply to be edited safely") from exc
    if not spans:
        raise ConfigEditError(f"{setting} is not in the file")
    new_text = text
    for span in sorted(spans, key=lambda s: s.start, reverse=True):
        new_text = new_text[: span.start] + _render(span, value) + new_text[span.end :]
    content = encode_text(new_text, decoded.encoding)
    _verify(data, content, setting, value)
    return EditResult(
        content=content,
        old_values=tuple(s.old for s in sorted(spans, key=lambda s: s.start)),
        occurrences=len(spans),
        encoding=decoded.encoding,
        changed=content != data,
    )


def read_setting(data: bytes, setting: str) -> str | None:
    """The value the parsers read for ``setting`` (used to record the before-state of an edit)."""
    parsed = parse_config(data, "config")
    wanted = setting.lower()
    return next((v for k, v in parsed.settings.items() if k.lower() == wanted), None)


def _render(span: _Span, value: str) -> str:
    if span.kind == "json":
        return json.dumps(value, ensure_ascii=False)
    if span.kind == "cdata":
        if "]]>" in value:
            raise ConfigEditError("the new value cannot be written inside CDATA")
        return value
    if span.kind == "attr":
        escaped = value.replace("&", "&amp;").replace("<", "&lt;")
        return escaped.replace(span.quote, "&quot;" if span.quote == '"' else "&apos;")
    escaped = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if span.kind == "selfclose":
        return f">{escaped}</{span.tag_name}>"
    return escaped


def _verify(before: bytes, after: bytes, setting: str, value: str) -> None:
    """The edit must read back as intended and leave every other setting as it was."""
    old = parse_config(before, "config")
    new = parse_config(after, "config")
    if new.parse_error and not old.parse_error:
        raise ConfigEditError(f"the edited file no longer parses: {new.parse_error}")
    wanted = setting.lower()
    for key, old_value in old.settings.items():
        if key.lower() != wanted and new.settings.get(key) != old_value:
            raise ConfigEditError(f"editing {setting} would change {key}; refusing")
    read_back = next((v for k, v in new.settings.items() if k.lower() == wanted), None)
    known = any(k.lower() == wanted for k in new.settings) or any(k.lower() == wanted for k in old.settings)
    if known and read_back != value:
        raise ConfigEditError(f"{setting} reads back as {read_back!r}, not {value!r}")


# --- XML ---------------------------------------------------------------------------------------------

_XML_TOKEN = re.compile(
    r"(?P<comment><!--.*?-->)"
    r"|(?P<cdata><!\[CDATA\[(?P<cdata_body>.*?)\]\]>)"
    r"|(?P<pi><\?.*?\?>)"
    r"|(?P<doctype><!DOCTYPE(?:[^\[>]|\[.*?\])*>)"
    r"|(?P<end></(?P<end_name>[^\s>]+)\s*>)"
    r"|(?P<start><(?P<name>[^\s/>!?]+)(?P<attrs>(?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(?P<selfclose>/?)>)",
    re.DOTALL,
)
_XML_ATTR = re.compile(r"(?P<name>[^\s=/>]+)\s*=\s*(?P<q>[\"'])(?P<value>.*?)(?P=q)", re.DOTALL)
_PAIR_NAME_KEYS = ("key", "name")


@dataclass
class _Attr:
    name: str
    start: int
    end: int
    quote: str
    raw: str


@dataclass
class _Element:
    name: str
    attrs: list[_Attr]
    start_tag_end: int
    self_closing: bool
    self_close_start: int = 0
    children: list[_Element] | None = None
    content: list[tuple[str, int, int]] | None = None  # (kind, start, end) of text/cdata/comment pieces
    end_tag_start: int = 0

    @property
    def local(self) -> str:
        return _local(self.name)

    def attr(self, local_name: str) -> _Attr | None:
        return next((a for a in self.attrs if _local(a.name).lower() == local_name), None)


def _local(name: str) -> str:
    return name.rsplit(":", 1)[-1]


def _xml_unescape(raw: str) -> str:
    def repl(match: re.Match[str]) -> str:
        entity = match.group(1)
        named = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
        if entity in named:
            return named[entity]
        try:
            code = int(entity[2:], 16) if entity.startswith("#x") else int(entity[1:])
        except ValueError:
            return match.group(0)
        return chr(code)

    return re.sub(r"&(#x[0-9A-Fa-f]+|#\d+|[A-Za-z]+);", repl, raw)


def _parse_xml(text: str) -> list[_Element]:
    """Every element with the spans an edit needs, in document order (no validation beyond nesting)."""
    elements: list[_Element] = []
    stack: list[_Element] = []
    position = 0
    for match in _XML_TOKEN.finditer(text):
        if match.start() > position and stack:
            assert stack[-1].content is not None
            stack[-1].content.append(("text", position, match.start()))
        position = match.end()
        if match.group("comment") is not None and stack:
            assert stack[-1].content is not None
            stack[-1].content.append(("comment", match.start(), match.end()))
        elif match.group("cdata") is not None and stack:
            assert stack[-1].content is not None
            stack[-1].content.append(("cdata", match.start("cdata_body"), match.end("cdata_body")))
        elif match.group("start") is not None:
            attrs_offset = match.start("attrs")
            attrs = [
                _Attr(
                    a.group("name"),
                    attrs_offset + a.start("value"),
                    attrs_offset + a.end("value"),
                    a.group("q"),
                    a.group("value"),
                )
                for a in _XML_ATTR.finditer(match.group("attrs"))
            ]
            self_closing = match.group("selfclose") == "/"
            element = _Element(
                name=match.group("name"),
                attrs=attrs,
                start_tag_end=match.end(),
                self_closing=self_closing,
                self_close_start=match.start("selfclose"),
                children=[],
                content=[],
            )
            if stack:
                assert stack[-1].children is not None
                stack[-1].children.append(element)
            elements.append(element)
            if not self_closing:
                stack.append(element)
        elif match.group("end") is not None:
            if not stack or stack[-1].name != match.group("end_name"):
                raise ConfigEditError(f"unbalanced XML near </{match.group('end_name')}>")
            stack.pop().end_tag_start = match.start()
    if stack:
        raise ConfigEditError(f"unclosed XML element <{stack[-1].name}>")
    return elements


def _element_value_span(element: _Element, text: str) -> _Span:
    """The span holding a leaf element's text, as ElementTree's ``element.text`` reads it."""
    if element.self_closing:
        return _Span(element.self_close_start, element.start_tag_end, "selfclose", tag_name=element.name)
    pieces = element.content or []
    if any(kind == "comment" for kind, _, _ in pieces):
        raise ConfigEditError(f"<{element.name}> mixes its value with comments; refusing to guess")
    if len(pieces) == 1 and pieces[0][0] == "cdata":
        _, start, end = pieces[0]
        return _Span(start, end, "cdata", old=text[start:end])
    start, end = element.start_tag_end, element.end_tag_start
    old = "".join(text[s:e] if kind == "cdata" else _xml_unescape(text[s:e]) for kind, s, e in pieces)
    return _Span(start, end, "text", old=old)


def _attr_span(attr: _Attr) -> _Span:
    return _Span(attr.start, attr.end, "attr", quote=attr.quote, old=_xml_unescape(attr.raw))


def _xml_spans(text: str, setting: str) -> list[_Span]:
    wanted = setting.lower()
    spans: dict[int, _Span] = {}
    for element in _parse_xml(text):
        value_attr = element.attr("value")
        leaf = not element.children
        if leaf and element.local.lower() == wanted:
            has_text = any(e > s for _, s, e in element.content or [])
            if not has_text and value_attr is not None:
                span = _attr_span(value_attr)
            else:
                span = _element_value_span(element, text)
            spans.setdefault(span.start, span)
        for pair_key in _PAIR_NAME_KEYS:
            named = element.attr(pair_key)
            if named is None or _xml_unescape(named.raw).lower() != wanted:
                continue
            if value_attr is not None:
                span = _attr_span(value_attr)
            else:
                child = next((c for c in element.children or [] if c.local.lower() == "value"), None)
                if child is not None and not child.children:
                    span = _element_value_span(child, text)
                elif leaf:
                    span = _element_value_span(element, text)
                else:
                    raise ConfigEditError(f"cannot tell where the value of {setting} is written")
            spans.setdefault(span.start, span)
            break
        for attr in element.attrs:
            local = _local(attr.name).lower()
            if local == wanted and local not in (*_PAIR_NAME_KEYS, "value"):
                span = _attr_span(attr)
                spans.setdefault(span.start, span)
    return list(spans.values())


# --- JSON --------------------------------------------------------------------------------------------

_JSON_TOKEN = re.compile(
    r"\s*(?:(?P<string>\"(?:[^\"\\]|\\.)*\")|(?P<punct>[{}\[\]:,])"
    r"|(?P<literal>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null))",
    re.DOTALL,
)


@dataclass
class _JsonValue:
    start: int
    end: int
    kind: str  # "string", "literal", "object", "array"
    raw: str
    members: list[tuple[str, _JsonValue]] | None = None
    items: list[_JsonValue] | None = None


class _JsonLexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 0

    def next(self) -> re.Match[str]:
        match = _JSON_TOKEN.match(self.text, self.position)
        if match is None:
            raise ConfigEditError(f"not valid JSON at character {self.position}")
        self.position = match.end()
        return match

    def peek(self) -> re.Match[str]:
        saved = self.position
        try:
            return self.next()
        finally:
            self.position = saved


def _json_value(lexer: _JsonLexer) -> _JsonValue:
    token = lexer.next()
    if token.group("string") is not None:
        return _JsonValue(token.start("string"), token.end("string"), "string", token.group("string"))
    if token.group("literal") is not None:
        return _JsonValue(token.start("literal"), token.end("literal"), "literal", token.group("literal"))
    punct = token.group("punct")
    if punct == "{":
        members: list[tuple[str, _JsonValue]] = []
        if lexer.peek().group("punct") == "}":
            lexer.next()
            return _JsonValue(token.start("punct"), lexer.position, "object", "", members=members)
        while True:
            key = lexer.next()
            if key.group("string") is None:
                raise ConfigEditError("a JSON object key is not a string")
            if lexer.next().group("punct") != ":":
                raise ConfigEditError("':' expected in JSON object")
            members.append((str(json.loads(key.group("string"))), _json_value(lexer)))
            separator = lexer.next().group("punct")
            if separator == "}":
                return _JsonValue(token.start("punct"), lexer.position, "object", "", members=members)
            if separator != ",":
                raise ConfigEditError("',' or '}' expected in JSON object")
    if punct == "[":
        items: list[_JsonValue] = []
        if lexer.peek().group("punct") == "]":
            lexer.next()
            return _JsonValue(token.start("punct"), lexer.position, "array", "", items=items)
        while True:
            items.append(_json_value(lexer))
            separator = lexer.next().group("punct")
            if separator == "]":
                return _JsonValue(token.start("punct"), lexer.position, "array", "", items=items)
            if separator != ",":
                raise ConfigEditError("',' or ']' expected in JSON array")
    raise ConfigEditError(f"unexpected {punct!r} in JSON")


def _json_old(value: _JsonValue) -> str:
    loaded = json.loads(value.raw)
    if isinstance(loaded, str):
        return loaded
    return "" if loaded is None else json.dumps(loaded)


def _json_spans(text: str, setting: str) -> list[_Span]:
    lexer = _JsonLexer(text)
    root = _json_value(lexer)
    if text[lexer.position :].strip():
        raise ConfigEditError("trailing data after the JSON document")
    wanted = setting.lower()
    spans: dict[int, _Span] = {}

    def visit(node: _JsonValue) -> None:
        if node.members is not None:
            lowered = {k.lower(): v for k, v in node.members}
            for pair_key in _PAIR_NAME_KEYS:
                named = lowered.get(pair_key)
                target = lowered.get("value")
                if named is not None and named.kind == "string" and target is not None:
                    if str(json.loads(named.raw)).lower() == wanted and target.kind in ("string", "literal"):
                        spans.setdefault(target.start, _Span(target.start, target.end, "json", old=_json_old(target)))
                    break
            for key, child in node.members:
                if key.lower() == wanted and child.kind in ("string", "literal"):
                    spans.setdefault(child.start, _Span(child.start, child.end, "json", old=_json_old(child)))
                visit(child)
        for item in node.items or []:
            visit(item)

    visit(root)
    return list(spans.values())
