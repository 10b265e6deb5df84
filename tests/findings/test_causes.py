"""Root causes: a rotated master with stale worker pins is one cause, not 2N unrelated lines."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from scaleguard.findings.causes import find_causes
from scaleguard.findings.model import Finding, Severity, Status
from scaleguard.snapshot.model import (
    Certificate,
    CertificateStore,
    ClusterSnapshot,
    Collection,
    CollectionState,
    ConfigFile,
    HostIdentity,
    NodeSnapshot,
    Snapshot,
)

NOW = datetime(2026, 5, 1, tzinfo=UTC)
NEW, OLD = "A1" * 20, "0D" * 20
WORKER_TPS = {f"WRK0{i}": f"{i:X}" * 40 for i in range(1, 7)}


def cert(tp: str) -> Certificate:
    return Certificate(
        thumbprint=tp,
        subject=f"CN={tp[:6]}",
        issuer=f"CN={tp[:6]}",
        common_names=[tp[:6]],
        serial="1",
        not_before=NOW - timedelta(days=10),
        not_after=NOW + timedelta(days=100),
        key_algorithm="RSA",
        key_bits=2048,
        self_signed=True,
        source="x.cer",
    )


def snapshot() -> Snapshot:
    master = NodeSnapshot(
        name="MASTER01",
        identity=HostIdentity(computer_name="MASTER01"),
        master_config=ConfigFile(path="MasterSettings.config", settings={"SSLCertThumbprint": NEW}),
        root=CertificateStore(
            name="Root",
            certificates=[cert(NEW), cert(OLD), cert(WORKER_TPS["WRK01"]), cert(WORKER_TPS["WRK04"])],
        ),
    )
    workers = []
    for name, tp in WORKER_TPS.items():
        pin = OLD if name in ("WRK01", "WRK02", "WRK03") else NEW
        workers.append(
            NodeSnapshot(
                name=name,
                identity=HostIdentity(computer_name=name),
                collection=Collection(
                    state=CollectionState.UNREACHABLE if name in ("WRK05", "WRK06") else CollectionState.OK
                ),
                worker_config=ConfigFile(
                    path="WorkerSettings.config",
                    settings={"masterhttpscertthumbprint": pin, "WorkerHttpsCertThumbprint": tp},
                ),
                root=CertificateStore(name="Root", certificates=[cert(OLD)]),
            )
        )
    return Snapshot(
        clusters=[
            ClusterSnapshot(cluster="prod", collected_at=NOW, source="ev/prod", nodes=[master, *workers])
        ]
    )


def f(
    policy: str,
    node: str,
    severity: Severity = Severity.CRITICAL,
    status: Status = Status.FAIL,
    remediation: str = "manual",
) -> Finding:
    return Finding(
        policy=policy,
        cluster="prod",
        node=node,
        status=status,
        severity=severity,
        message=f"{policy} {node}",
        remediation=remediation,
        title=f"{policy} holds",
    )


def findings() -> list[Finding]:
    out = []
    for w in ("WRK01", "WRK02", "WRK03"):
        out += [
            f("SO-W02", w, remediation="repin-worker-master-thumbprint"),
            f("SO-W03", w, remediation="import-root-certificate"),
        ]
    out += [
        f("SO-W03", "WRK04", remediation="import-root-certificate"),
        f("SO-M05", "MASTER01", remediation="repair-master-binding"),
        f("SO-M07", "MASTER01", remediation="rotate-master-certificate"),
        f("SO-M10", "MASTER01", Severity.MEDIUM, remediation="rotate-master-certificate"),
        f("SO-W08", "WRK02", remediation="import-root-certificate"),
        f("SO-W08", "WRK03", remediation="import-root-certificate"),
        f("SO-C01", "WRK05", status=Status.ERROR),
        f("SO-C01", "WRK06", status=Status.ERROR),
        f("SO-W11", "WRK01", Severity.HIGH, remediation="start-service"),
        f("SO-W11", "WRK04", Severity.HIGH, remediation="start-service"),
        f("SO-W02", "WRK04", status=Status.PASS),
        f("SO-W13", "WRK04", Severity.LOW, status=Status.WAIVED),
        f("SO-W09", "WRK04", status=Status.NOT_ASSESSED),
    ]
    return out


def by_kind(causes: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(c["kind"]): c for c in causes}


def test_rotation_with_stale_pins_is_one_cause_with_two_symptoms_per_worker() -> None:
    causes = [c.as_json() for c in find_causes(findings(), snapshot())]
    rotation = by_kind(causes)["stale-master-pin"]
    assert rotation["nodes"] == ["WRK01", "WRK02", "WRK03"]
    assert rotation["count"] == 6
    assert Counter(s["policy"] for s in rotation["symptoms"]) == {"SO-W02": 3, "SO-W03": 3}  # type: ignore[attr-defined]
    assert rotation["fix"] == "repin-worker-master-thumbprint"
    assert (
        rotation["title"]
        == f"Master certificate replaced ({OLD[:8]}… → {NEW[:8]}…), old one still pinned (3 workers)"
    )
    assert causes[0] is rotation  # most impactful: critical, most nodes, most symptoms


def test_each_failing_finding_belongs_to_exactly_one_cause() -> None:
    all_findings = findings()
    causes = find_causes(all_findings, snapshot())
    claimed = [id(s) for c in causes for s in c.symptoms]
    failing = [id(x) for x in all_findings if x.status in (Status.FAIL, Status.ERROR)]
    assert sorted(claimed) == sorted(failing)


def test_other_rules_group_as_documented() -> None:
    causes = by_kind([c.as_json() for c in find_causes(findings(), snapshot())])
    assert causes["master-untrusted"]["nodes"] == ["WRK04"]
    assert causes["master-untrusted"]["fix"] == "import-root-certificate"
    assert causes["master-binding"]["fix"] == "repair-master-binding"
    assert (
        causes["master-certificate"]["count"] == 2 and causes["master-certificate"]["severity"] == "critical"
    )
    untrusted = causes["workers-untrusted-by-master"]
    assert untrusted["nodes"] == ["MASTER01", "WRK02", "WRK03"]  # the master is where the fix happens
    assert untrusted["title"] == "Worker certificates missing from LocalMachine\\Root on MASTER01 (2 workers)"
    assert causes["not-collected"]["title"] == "Not collected: unreachable (2 nodes)"
    assert causes["policy"]["nodes"] == ["WRK01", "WRK04"] and causes["policy"]["fix"] == "start-service"


def test_without_a_snapshot_grouping_still_holds() -> None:
    causes = by_kind([c.as_json() for c in find_causes(findings())])
    assert causes["stale-master-pin"]["count"] == 6
    assert causes["stale-master-pin"]["title"] == "Master certificate not pinned (3 workers)"


def test_thumbprint_written_with_invisible_characters_is_a_format_cause() -> None:
    snap = snapshot()
    worker = snap.clusters[0].node("WRK04")
    assert worker is not None and worker.worker_config is not None
    worker.worker_config.settings["masterhttpscertthumbprint"] = "\u200e" + NEW.lower()
    causes = find_causes([f("SO-W02", "WRK04")], snap)
    assert [(c.kind, c.fix) for c in causes] == [("stale-master-pin", "normalize-config-thumbprint")]


def test_nothing_failing_means_no_causes() -> None:
    assert find_causes([f("SO-W02", "WRK01", status=Status.PASS)], snapshot()) == []


def test_cause_ids_are_stable_across_runs() -> None:
    first = [c.id for c in find_causes(findings(), snapshot())]
    second = [c.id for c in find_causes(list(reversed(findings())), snapshot())]
    assert sorted(first) == sorted(second) and len(set(first)) == len(first)


def test_old_pin_still_in_worker_roots_with_the_master_subject_is_a_rotation() -> None:
    snap = snapshot()
    master = snap.clusters[0].node("MASTER01")
    assert master is not None and master.root is not None
    master.root.certificates = [
        c for c in master.root.certificates if c.thumbprint != OLD
    ]  # master dropped it
    causes = find_causes(findings(), snap)
    assert causes[0].title.startswith("Pinned thumbprint 0D0D")  # unknown provenance: no rotation claimed
    for node in snap.clusters[0].nodes:
        for store in (node.root, node.my):
            for c in store.certificates if store else []:
                if c.thumbprint == OLD:  # the old certificate names the master host
                    c.subject, c.common_names = "CN=master01", ["master01"]
    causes = find_causes(findings(), snap)
    assert causes[0].title.startswith("Master certificate replaced")


def test_clusters_with_the_same_node_names_keep_their_own_pins() -> None:
    """Node lookups, masters and the SO-W02 set are per cluster: WRK04 pins correctly in "prod" and a
    twin cluster where every worker pins the old certificate must not change that."""
    twin = snapshot().clusters[0].model_copy(update={"cluster": "twin"})
    twin.nodes = [
        n.model_copy(update={"worker_config": ConfigFile(
            path="WorkerSettings.config", settings={"MasterHttpsCertThumbprint": OLD},
        )}) if n.worker_config else n
        for n in twin.nodes
    ]
    both = Snapshot(clusters=[snapshot().clusters[0], twin])
    twin_findings = [f.model_copy(update={"cluster": "twin"}) for f in (f("SO-W02", "WRK04"), f("SO-W03", "WRK04"))]
    causes = [c.as_json() for c in find_causes([*findings(), *twin_findings], both)]
    stale = {(c["cluster"], tuple(c["nodes"])) for c in causes if c["kind"] == "stale-master-pin"}  # type: ignore[arg-type]
    assert stale == {("prod", ("WRK01", "WRK02", "WRK03")), ("twin", ("WRK04",))}
    untrusted = [c for c in causes if c["kind"] == "master-untrusted"]
    assert [(c["cluster"], c["nodes"]) for c in untrusted] == [("prod", ["WRK04"])]
