"""snapshot.json: each certificate's DER written once per cluster, restored on reading; 1.0 files still read."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scaleguard.collectors.evidence import read_evidence
from scaleguard.lab.scenario import demo_scenario
from scaleguard.snapshot.model import SCHEMA_VERSION, Snapshot


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    folder = tmp_path_factory.mktemp("lab") / "CONTOSO-SSIS"
    demo_scenario().write(folder)
    return Snapshot(clusters=[read_evidence(folder)])


def _entries(document: dict[str, object]) -> list[dict[str, object]]:
    [cluster] = document["clusters"]  # type: ignore[misc]
    return [
        cert
        for node in cluster["nodes"]
        for store in (node["root"], node["my"])
        if store is not None
        for cert in store["certificates"]
    ]


def _ders(snapshot: Snapshot) -> list[str | None]:
    return [c.der_b64 for n in snapshot.clusters[0].nodes for s in (n.root, n.my) if s for c in s.certificates]


def test_each_der_is_written_once_and_read_back_into_every_entry(snapshot: Snapshot, tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    snapshot.write(path)
    document = json.loads(path.read_text(encoding="utf-8"))

    assert document["schema_version"] == SCHEMA_VERSION == "1.1"
    table = document["clusters"][0]["certificates"]
    entries = _entries(document)
    assert len(entries) > len(table) > 0  # the master's certificate sits in every worker's Root
    assert {e["thumbprint"] for e in entries} == set(table)
    assert all(e["der_b64"] is None for e in entries)
    assert path.read_text(encoding="utf-8").count(next(iter(table.values()))) == 1

    again = Snapshot.read(path)
    assert again == snapshot
    assert again.clusters[0].certificates is None  # the table is a file format detail, not a fact
    originals = _ders(snapshot)
    assert all(originals) and _ders(again) == originals


def test_a_second_der_under_a_taken_thumbprint_stays_inline(snapshot: Snapshot, tmp_path: Path) -> None:
    odd = snapshot.model_copy(deep=True)
    worker = next(n for n in odd.clusters[0].nodes if n.is_worker)
    assert worker.root is not None
    victim = worker.root.certificates[0]
    victim.der_b64 = "AAAA"  # not what the thumbprint's first copy holds (a SHA-1 collision, in effect)
    path = tmp_path / "snapshot.json"
    odd.write(path)

    inline = [e for e in _entries(json.loads(path.read_text(encoding="utf-8"))) if e["der_b64"] is not None]
    assert inline == [{**inline[0], "der_b64": "AAAA", "thumbprint": victim.thumbprint}]
    assert Snapshot.read(path) == odd


def test_a_schema_1_0_file_reads_as_before(snapshot: Snapshot, tmp_path: Path) -> None:
    document = json.loads(snapshot.model_dump_json())  # 1.0 wrote every entry's DER inline, no table
    document["schema_version"] = "1.0"
    for cluster in document["clusters"]:
        cluster["schema_version"] = "1.0"
        del cluster["certificates"]
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(document), encoding="utf-8")

    assert _ders(Snapshot.read(path)) == _ders(snapshot)


def test_an_unknown_major_version_is_refused(snapshot: Snapshot, tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    path.write_bytes(snapshot.to_json().replace(b'"schema_version":"1.1"', b'"schema_version":"2.0"', 1))
    with pytest.raises(ValueError, match="snapshot schema 2.0 is not supported"):
        Snapshot.read(path)


def _thumbprint_a_list(cluster: dict[str, Any]) -> None:
    cluster["nodes"][0]["root"]["certificates"][0]["thumbprint"] = ["A" * 40]


def _table_a_list(cluster: dict[str, Any]) -> None:
    cluster["certificates"] = [*cluster["certificates"]]


def _nodes_a_number(cluster: dict[str, Any]) -> None:
    cluster["nodes"] = 7


def _certificates_a_number(cluster: dict[str, Any]) -> None:
    cluster["nodes"][0]["root"]["certificates"] = 7


@pytest.mark.parametrize(
    "edit", [_thumbprint_a_list, _table_a_list, _nodes_a_number, _certificates_a_number], ids=lambda e: e.__name__
)
def test_a_hostile_file_is_refused_as_invalid_not_crashed_on(
    snapshot: Snapshot, tmp_path: Path, edit: Callable[[dict[str, Any]], None]
) -> None:
    """Found by fuzzing ``fix --findings/--snapshot``: these shapes raised TypeError while the DER table was
    put back, which ``fix`` does not expect from a bad file (it refuses ValueError with exit 2)."""
    path = tmp_path / "snapshot.json"
    snapshot.write(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    edit(document["clusters"][0])
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ValueError):
        Snapshot.read(path)
