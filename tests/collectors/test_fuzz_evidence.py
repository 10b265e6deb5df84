"""Fuzzing the evidence reader: mutated real evidence files through each parser and through ``read_node``.

The seeds are the files the lab writes for a healthy cluster (settings files in XML and JSON, netsh
output in UTF-16, PowerShell JSON, a DER and a PEM certificate). Hypothesis mutates them (flipped and
inserted bytes, truncation, repeated slices, and splices of the tokens the parsers key on: colons,
PEM markers, comment openers, surrogate escapes, deep brackets) and checks the reader's promises: a
parser raises only its own documented error, ``read_node`` never raises and gives a node that
serialises to JSON, and no example takes longer than its deadline. The run is bounded for CI
(``max_examples`` and a per-example ``deadline``; about 20 s in all).

Corpus: kept in two places. The interesting inputs are explicit ``@example`` cases below: the shapes
that hung, crashed or blanked the audit before this reader was hardened (the netsh and PEM backtracking
bait, lone-surrogate JSON, 5,000-deep brackets, 5,000-digit numbers, a date past ``timedelta``'s range, a
900 KB unterminated PEM body); they run first, every time. Hypothesis' example database points into
``tests/collectors/fuzz-corpus/``, so any failure a later run finds is saved there and replayed first
(the runs so far found none beyond the explicit examples).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from scaleguard.collectors.evidence import read_node
from scaleguard.collectors.parsers.certs import CertificateParseError, load_certificates_with_notes
from scaleguard.collectors.parsers.config import parse_config_with_notes
from scaleguard.collectors.parsers.host import host_from_json
from scaleguard.collectors.parsers.keys import key_facts_from_json
from scaleguard.collectors.parsers.netsh import NetshParseError, parse_sslcert_with_notes
from scaleguard.collectors.parsers.psjson import PowerShellJsonError, loads_powershell_json
from scaleguard.collectors.parsers.services import services_from_json
from scaleguard.lab.evidence import encode_text, netsh_sslcert_text, powershell_json, settings_json, settings_xml
from scaleguard.lab.scenario import demo_scenario

CORPUS = Path(__file__).parent / "fuzz-corpus"
FUZZ = settings(
    max_examples=120,
    deadline=timedelta(seconds=3),
    database=DirectoryBasedExampleDatabase(str(CORPUS)),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
PER_EXAMPLE_BOUND_S = 3.0
TOKENS = [
    b":", b": ", "\uff1a".encode(), b" " * 64, b"\r\n", b"\x00", b"\xff\xfe", b"\xef\xbb\xbf",
    b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----", b"-----BEGIN A-----", b"<!--", b"<?xml ",
    b"<![CDATA[", b"&#xD800;", b'"\\ud800"', b"[" * 64, b"{" * 64, b"9" * 400, b"IP:port : 0.0.0.0:8391\n",
    b"\x30\x82\xff\xff", b"\\/Date(99999999999999999)\\/",
]


def _seeds() -> dict[str, bytes]:
    """Real evidence files of a healthy worker and master, as the lab writes them."""
    scenario = demo_scenario(1, seed=5, defects=False)
    master = next(n for n in scenario.nodes if n.name == "MASTER01")
    seeds: dict[str, bytes] = {}
    assert master.master_settings is not None and master.bindings is not None
    seeds["MasterSettings.config"] = encode_text(settings_xml("MasterSettings", master.master_settings), "utf-8-sig")
    seeds["settings.json"] = encode_text(settings_json(master.master_settings), "utf-16-le")
    seeds["sslcert.txt"] = encode_text(netsh_sslcert_text(master.bindings), "utf-16-le")
    seeds["services.json"] = encode_text(powershell_json(master.services or []), "utf-8-sig")
    seeds["keys.json"] = encode_text(powershell_json(master.keys or []), "utf-8-sig")
    seeds["host.json"] = encode_text(powershell_json(master.host or {}), "utf-8-sig")
    seeds["cert.cer"] = master.root[0].der
    seeds["cert.pem"] = master.root[0].pem()
    return seeds


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn, seed_names: tuple[str, ...]) -> tuple[str, bytes]:
    name = draw(st.sampled_from(seed_names))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 6))):
        where = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "token", "cut", "repeat", "delete"]))
        if kind == "flip" and data:
            data[min(where, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "token":
            token = draw(st.sampled_from(TOKENS))
            data[where:where] = token * draw(st.integers(1, 200))
        elif kind == "cut":
            del data[where:]
        elif kind == "repeat" and data:
            size = draw(st.integers(1, 256))
            data[where:where] = bytes(data[where : where + size]) * draw(st.integers(2, 50))
        elif kind == "delete":
            del data[where : where + draw(st.integers(1, 64))]
    return name, bytes(data)


def _bounded(parse: Callable[[], object]) -> None:
    started = time.perf_counter()
    parse()
    assert time.perf_counter() - started < PER_EXAMPLE_BOUND_S


def _parse(name: str, data: bytes) -> None:
    if name == "sslcert.txt":
        with contextlib.suppress(NetshParseError):
            parse_sslcert_with_notes(data)
    elif name.endswith((".cer", ".pem")):
        with contextlib.suppress(CertificateParseError):
            load_certificates_with_notes(data, source=name)
    elif name in ("MasterSettings.config", "settings.json"):
        config, _notes = parse_config_with_notes(data, name, kind="master")
        json.dumps(config.model_dump(mode="json"))
    else:
        try:
            value = loads_powershell_json(data)
        except PowerShellJsonError:
            return
        services_from_json(value)
        key_facts_from_json(value)
        host_from_json(value, "MASTER01")


@FUZZ
@given(mutated(tuple(SEEDS)))
@example(("sslcert.txt", b"a" + b" " * 40_000 + b"x"))
@example(("cert.pem", b"-----BEGIN A-----" * 8_000))
@example(("services.json", b'{"Name": "x\\ud800", "\\udfff": 1}'))
@example(("host.json", b"[" * 5_000))
@example(("settings.json", b"9" * 5_000))
@example(("settings.json", b'{"a":' * 900 + b"1" + b"}" * 900))
@example(("keys.json", b'"\\/Date(99999999999999999999)\\/"'))
def test_each_parser_survives_mutated_evidence(case: tuple[str, bytes]) -> None:
    name, data = case
    _bounded(lambda: _parse(name, data))


@pytest.fixture(scope="module")
def node_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cluster = tmp_path_factory.mktemp("fuzz") / "CONTOSO"
    demo_scenario(1, seed=5, defects=False).write(cluster)
    return cluster / "MASTER01"


_NODE_FILES = {
    "MasterSettings.config": "MasterSettings.config",
    "settings.json": "MasterSettings.config",
    "sslcert.txt": "sslcert.txt",
    "services.json": "services.json",
    "keys.json": "keys.json",
    "host.json": "host.json",
    "cert.cer": "certs/Root/fuzzed.cer",
    "cert.pem": "certs/My/fuzzed.pem",
}


@FUZZ
@given(mutated(tuple(SEEDS)))
@example(("cert.pem", b"-----BEGIN CERTIFICATE-----\n" + b"A" * 900_000))
@example(("host.json", b'{"ComputerName": "MASTER01\\ud800"}'))
def test_read_node_survives_mutated_evidence(node_template: Path, tmp_path_factory: pytest.TempPathFactory,
                                             case: tuple[str, bytes]) -> None:
    name, data = case
    node_dir = tmp_path_factory.mktemp("node") / "MASTER01"
    shutil.copytree(node_template, node_dir)
    (node_dir / _NODE_FILES[name]).write_bytes(data)
    started = time.perf_counter()
    node = read_node(node_dir)
    assert time.perf_counter() - started < PER_EXAMPLE_BOUND_S
    assert node.name == "MASTER01"
    node.model_dump_json().encode("utf-8")  # every string is valid Unicode
    shutil.rmtree(node_dir.parent)
