"""Every parser that reads node data, fed adversarial input at the reader's size cap and at half of it.

The inputs are the shapes that make a backtracking pattern quadratic (or worse): long runs of what a
lazy or nested quantifier could match, repeated openers without closers, deep nesting. A linear parser
takes about twice as long for twice the input; a quadratic one four times as long, and at these sizes
minutes. The check is ``time(n) < 3 × time(n/2) + slack`` plus an absolute bound, each time the best of
two runs; a failed comparison is measured again (up to three times), so that a burst of load from other
processes does not fail the suite. These are bounded-time checks on hostile input, not speed goals
(those are measured by ``bench/bench_hostile_inputs.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from scaleguard.collectors.evidence import CERT_LIMIT, TEXT_LIMIT
from scaleguard.collectors.parsers.certs import CertificateParseError, load_certificates_with_notes
from scaleguard.collectors.parsers.config import parse_config_with_notes
from scaleguard.collectors.parsers.keys import key_facts_from_json
from scaleguard.collectors.parsers.netsh import NetshParseError, parse_sslcert_with_notes
from scaleguard.collectors.parsers.psjson import PowerShellJsonError, loads_powershell_json
from scaleguard.collectors.parsers.text import declared_xml_encoding, decode_text
from scaleguard.remediators.configedit import ConfigEditError, edit_setting
from scaleguard.remoting.channel import describe_stderr
from scaleguard.rules.thumbprint import normalize_thumbprint, thumbprint_problems

SLACK_S = 0.3
"""Fixed costs (allocation, a GC pass) that do not scale; well below what quadratic growth adds."""
ATTEMPTS = 3
BOUND_S = 20.0
"""No single parse of a capped input may take longer than this, even on a loaded 2-CPU machine."""


def _repeat(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def _netsh(data: bytes) -> object:
    try:
        return parse_sslcert_with_notes(data)
    except NetshParseError as exc:
        return exc


def _certs(data: bytes) -> object:
    try:
        return load_certificates_with_notes(data, source="x.pem")
    except CertificateParseError as exc:
        return exc


def _psjson(data: bytes) -> object:
    try:
        return loads_powershell_json(data)
    except PowerShellJsonError as exc:
        return exc


def _keys(data: bytes) -> object:
    return key_facts_from_json(loads_powershell_json(data))


def _config(data: bytes) -> object:
    return parse_config_with_notes(data, "MasterSettings.config", kind="master")


def _configedit(data: bytes) -> object:
    try:
        return edit_setting(data, "SSLCertThumbprint", "A" * 40)
    except ConfigEditError as exc:
        return exc


def _text(data: bytes) -> object:
    decoded = decode_text(data)
    return declared_xml_encoding(decoded.text)


def _thumbprint(data: bytes) -> object:
    text = data.decode("utf-8", "replace")
    return normalize_thumbprint(text), thumbprint_problems(text)


def _stderr(data: bytes) -> object:
    return describe_stderr(data)


# (id, parser, input of a given size in bytes, cap)
CASES: list[tuple[str, Callable[[bytes], object], Callable[[int], bytes], int]] = [
    ("netsh-spaces-line", _netsh, lambda n: ("a" + " " * (n - 2) + "x").encode(), TEXT_LIMIT),
    ("netsh-spaces-utf16", _netsh,
     lambda n: b"\xff\xfe" + ("a" + " " * (n // 2 - 3) + "x").encode("utf-16-le"), TEXT_LIMIT),
    ("netsh-colons", _netsh, lambda n: _repeat("a:", n).encode(), TEXT_LIMIT),
    ("netsh-fullwidth-colons", _netsh, lambda n: _repeat("a\uff1a", n // 4).encode(), TEXT_LIMIT),
    ("netsh-colon-formfeed", _netsh, lambda n: ("x" + _repeat(":\x0c", n - 2) + "y").encode(), TEXT_LIMIT),
    ("netsh-long-endpoint", _netsh, lambda n: ("IP:port : " + "a" * (n - 9)).encode(), TEXT_LIMIT),
    ("netsh-endpoint-dots", _netsh, lambda n: ("IP:port : a" + "." * (n - 12) + ":").encode(), TEXT_LIMIT),
    ("netsh-many-blocks", _netsh,
     lambda n: _repeat("IP:port : 10.0.0.1:443\nCertificate Hash : " + "ab" * 20 + "\n", n).encode(),
     TEXT_LIMIT),
    ("netsh-dashes", _netsh, lambda n: _repeat("x:\n-----\n", n).encode(), TEXT_LIMIT),
    ("pem-begin-repeated", _certs, lambda n: _repeat("-----BEGIN A-----", n).encode(), CERT_LIMIT),
    ("pem-begin-distinct", _certs,
     lambda n: "".join(f"-----BEGIN A{i}-----" for i in range(n // 20)).encode()[:n], CERT_LIMIT),
    ("pem-begin-certificate-no-end", _certs,
     lambda n: ("-----BEGIN CERTIFICATE-----" + "A" * n)[:n].encode(), CERT_LIMIT),
    ("pem-end-repeated", _certs, lambda n: ("-----BEGIN X-----" + _repeat("-----END ", n)).encode()[:n],
     CERT_LIMIT),
    ("pem-ignored-blocks", _certs, lambda n: _repeat("-----BEGIN K-----x-----END K-----", n).encode(),
     CERT_LIMIT),
    ("cert-base64-text", _certs, lambda n: _repeat("QUFB ", n).encode(), CERT_LIMIT),
    ("psjson-deep-array", _psjson, lambda n: b"[" * n, TEXT_LIMIT),
    ("psjson-long-number", _psjson, lambda n: b"1" * n, TEXT_LIMIT),
    ("psjson-many-rows", _keys,
     lambda n: ("[" + ",".join(['{"Thumbprint":"' + "A" * 40 + '"}'] * (n // 60)) + "]").encode(),
     TEXT_LIMIT),
    ("config-xml-declaration", _config, lambda n: ("<?xml" + " " * (n - 5)).encode(), TEXT_LIMIT),
    ("config-encoding-attributes", _config, lambda n: ("<?xml " + _repeat("encoding= ", n - 6)).encode(),
     TEXT_LIMIT),
    ("config-comments-unclosed", _config, lambda n: _repeat("<!--", n).encode(), TEXT_LIMIT),
    ("config-deep-json", _config, lambda n: b"[" * n, TEXT_LIMIT),
    ("config-nested-json", _config,
     lambda n: ('{"a":' * 900 + "[" + ",".join(["1"] * ((n - 5402) // 2)) + "]" + "}" * 900).encode(),
     TEXT_LIMIT),
    ("config-duplicates", _config,
     lambda n: ("<M>" + "".join(f"<PortNumber>{i}</PortNumber>" for i in range(n // 32)) + "</M>").encode(),
     TEXT_LIMIT),
    ("configedit-unclosed-tags", _configedit, lambda n: _repeat("<a", n).encode(), TEXT_LIMIT),
    ("configedit-wellformed", _configedit,
     lambda n: ("<M><SSLCertThumbprint>x</SSLCertThumbprint>"
                + "".join(f'<P a="{i}" b=">">t</P><!-- c -->' for i in range(n // 40)) + "</M>").encode(),
     TEXT_LIMIT),
    ("xml-encoding-declaration", _text, lambda n: ("<?xml encoding='" + "a" * n)[:n].encode(), TEXT_LIMIT),
    ("thumbprint-noise", _thumbprint, lambda n: _repeat("a \u200e", n // 3).encode(), TEXT_LIMIT),
    ("clixml-repeated-blocks", _stderr, lambda n: _repeat('#< CLIXML<Objs><S S="Error">x</S></Objs>', n).encode(),
     TEXT_LIMIT),
    ("clixml-repeated-headers", _stderr, lambda n: _repeat("#< CLIXML", n).encode(), TEXT_LIMIT),
    ("clixml-unclosed-errors", _stderr, lambda n: ("#< CLIXML" + _repeat('<S S="Error">', n - 9)).encode(),
     TEXT_LIMIT),
]


def _best_of_two(parse: Callable[[bytes], object], data: bytes) -> float:
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        parse(data)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize(("parse", "make", "cap"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parser_time_grows_linearly_up_to_the_cap(
    parse: Callable[[bytes], object], make: Callable[[int], bytes], cap: int
) -> None:
    half, full = make(cap // 2), make(cap)
    assert len(full) <= cap + 8
    measured = []
    for _attempt in range(ATTEMPTS):  # a burst of load from other processes can skew one measurement
        time_half = _best_of_two(parse, half)
        time_full = _best_of_two(parse, full)
        assert time_full < BOUND_S
        measured.append((time_half, time_full))
        if time_full < 3 * time_half + SLACK_S:
            return
    pytest.fail(f"time grows faster than linearly (half, full in s): {measured}")
