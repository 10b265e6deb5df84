"""The facts are what the reference says they are: every key present, every documented path real."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from policy_cases import Materialiser

from scaleguard.policies.fact_schema import ROOT, Branch, Fact, Tree, lookup, source_of
from scaleguard.policies.facts import build_cluster_facts
from scaleguard.policies.functions import covers, join, lower

NOW = datetime.now(UTC).replace(microsecond=0)


def _assert_shape(value: Any, tree: Tree, path: str) -> None:
    assert isinstance(value, dict), path
    assert set(value) == set(tree), f"{path}: extra {set(value) - set(tree)}, missing {set(tree) - set(value)}"
    for key, entry in tree.items():
        child = value[key]
        if isinstance(entry, Branch):
            if child is None:
                assert entry.nullable, f"{path}.{key} is null but not nullable"
            else:
                _assert_shape(child, entry.children, f"{path}.{key}")
        elif child is None:
            assert entry.type.endswith("?") or entry.type == "dyn", f"{path}.{key} is null but typed {entry.type}"


@pytest.fixture(scope="module")
def ha_facts(tmp_path_factory: pytest.TempPathFactory) -> Any:
    spec = {
        "masters": ["MASTER01", "MASTER02"],
        "workers": ["WORKER01"],
        "nodes": {
            "MASTER02": {"host": "unknown", "schannel": {"ClientAuthTrustMode": 2}},
            "ORPHAN01": {},
        },
    }
    snapshot = Materialiser(spec, NOW).snapshot(tmp_path_factory.mktemp("facts"))
    return build_cluster_facts(snapshot.clusters[0], now=NOW, include_stores=True)


def _branch(name: str) -> Branch:
    entry = ROOT[name]
    assert isinstance(entry, Branch)
    return entry


def test_every_variable_has_exactly_the_documented_keys(ha_facts: Any) -> None:
    _assert_shape(ha_facts.cluster, _branch("cluster").children, "cluster")
    for name, variables in ha_facts.nodes.items():
        for var in ("node", "master", "worker", "master_cert", "worker_cert"):
            value = getattr(variables, var)
            if value is not None:
                _assert_shape(value, _branch(var).children, f"{name}.{var}")
    assert ha_facts.nodes["MASTER01"].worker is None and ha_facts.nodes["WORKER01"].master is None
    for cert in ha_facts.nodes["MASTER01"].node["root"]:
        _assert_shape(cert, _branch("master_cert").children, "MASTER01.root[]")
    masters_doc = ROOT["masters"]
    assert isinstance(masters_doc, Fact)
    for summary in ha_facts.masters:
        assert set(summary) == {
            "name",
            "thumbprint",
            "port",
            "endpoint_names",
            "identity_complete",
            "service_running",
        }
        for key in summary:
            assert key in masters_doc.doc


def test_facts_resolve_and_keep_unknown_apart_from_absent(ha_facts: Any) -> None:
    m1, m2 = ha_facts.nodes["MASTER01"].master, ha_facts.nodes["MASTER02"].master
    assert ha_facts.nodes["MASTER01"].master_cert["found_in"] == "MASTER01\\Root"
    assert m1["identity_complete"] is True and m2["identity_complete"] is False  # MASTER02 lacks host.json
    assert "ssis-master.contoso.test" in m1["endpoint_names"]
    assert ha_facts.nodes["MASTER02"].node["schannel"] == {
        "client_auth_trust_mode": 2,
        "send_trusted_issuer_list": None,
    }
    assert ha_facts.nodes["MASTER01"].node["schannel"] is None
    worker = ha_facts.nodes["WORKER01"].worker
    assert worker["endpoint"]["normalized"] == "https://ssis-master.contoso.test:8391"
    assert worker["key_readers"] == [
        "nt authority\\system",
        "builtin\\administrators",
        "nt service\\ssisscaleoutworker150",
    ]
    assert "ssisscaleoutworker150" in worker["service_account_aliases"]
    assert worker["stale"] == []
    assert worker["in_master_roots"] == [
        {"name": "MASTER01", "in_root": True},
        {"name": "MASTER02", "in_root": True},
    ]
    assert ha_facts.cluster["master_thumbprints"] == [m1["thumbprint"]]
    assert ha_facts.cluster["master_endpoints"][0]["workers"] == ["WORKER01"]
    both = ha_facts.nodes["ORPHAN01"]
    assert both.node["state"] == "no_config" and both.master is None and both.node["root_thumbprints"] == []
    summary = next(n for n in ha_facts.cluster["nodes"] if n["name"] == "ORPHAN01")
    assert summary["usable"] is False and summary["reason"]


def test_fact_paths_and_their_sources() -> None:
    assert isinstance(lookup("master_cert.not_after"), Fact)
    assert isinstance(lookup("master.binding"), Branch)
    assert lookup("master_cert.nope") is None
    assert lookup("node.master") is None
    assert lookup("node.root_thumbprints.x") is None
    assert source_of("master.binding.cert_hash") == "sslcert.txt"
    assert source_of("worker.key_readers") == "keys.json (KeyReaders)"
    assert source_of("master_cert.has_private_key") == "keys.json"
    assert source_of("thresholds.min_rsa_bits") is None


@pytest.mark.parametrize(
    ("names", "host", "expected"),
    [
        (["master01.contoso.test"], "MASTER01.Contoso.Test", True),
        (["*.contoso.test"], "master01.contoso.test", True),
        (["*.contoso.test"], "a.b.contoso.test", False),
        (["*.contoso.test"], "contoso.test", False),
        (["10.0.1.1"], "10.0.1.1", True),
        (["*.0.1.1"], "10.0.1.1", False),
        (["2001:db8::1"], "[2001:DB8:0::1]", True),
        (["master01"], "master01.contoso.test", False),
        ([None, ""], "x", False),
    ],
)
def test_covers_matches_like_tls(names: list[Any], host: str, expected: bool) -> None:
    assert covers(names, host) is expected


def test_small_helpers() -> None:
    assert lower("AbC") == "abc" and lower(None) is None
    assert join(["a", None, 3], "; ") == "a; unknown; 3"
    assert join(None, ", ") == ""


def test_cert_facts_of_a_missing_thumbprint_are_null(tmp_path: Path) -> None:
    spec = {"nodes": {"MASTER01": {"master_settings": {"SSLCertThumbprint": None}}}}
    snapshot = Materialiser(spec, NOW).snapshot(tmp_path)
    variables = build_cluster_facts(snapshot.clusters[0], now=NOW).nodes["MASTER01"]
    master = variables.master
    assert master is not None
    assert master["thumbprint"] is None and master["thumbprint_issue"] == "missing"
    assert variables.master_cert is None and master["cert_found"] is None and master["in_root"] is None
