"""Expiry forecast: the certificates the configs name, every copy of them, grouped by days left."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import defusedxml.ElementTree as SafeET

from scaleguard.findings.model import FindingsFile
from scaleguard.policies.model import Thresholds
from scaleguard.reports.base import ReportContext
from scaleguard.reports.expiry import (
    ExpiryCsvReporter,
    bucket_of,
    expiry_forecast,
    expiry_section,
    timeline_svg,
)
from scaleguard.snapshot.model import (
    Certificate,
    CertificateStore,
    ClusterSnapshot,
    ConfigFile,
    HostIdentity,
    NodeSnapshot,
    Snapshot,
    SslBinding,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
MASTER, BOUND, W1, W2, PIN, PUBLIC = "A1" * 20, "B0" * 20, "C1" * 20, "C2" * 20, "D0" * 20, "E0" * 20
SVG_NS = "{http://www.w3.org/2000/svg}"


def cert(tp: str, days: float, subject: str | None = None) -> Certificate:
    name = subject or f"CN=cert-{tp[:4]}"
    return Certificate(
        thumbprint=tp,
        subject=name,
        issuer=name,
        common_names=[name[3:]],
        serial="1",
        not_before=NOW - timedelta(days=400),
        not_after=NOW + timedelta(days=days),
        key_algorithm="RSA",
        key_bits=2048,
        self_signed=True,
        source=f"{tp}.cer",
    )


def snapshot() -> Snapshot:
    master = NodeSnapshot(
        name="MASTER01",
        identity=HostIdentity(computer_name="MASTER01"),
        master_config=ConfigFile(path="m", settings={"SSLCertThumbprint": MASTER.lower()}),
        root=CertificateStore(
            name="Root",
            certificates=[
                cert(MASTER, 20.5),
                cert(W1, -3),
                cert(W2, 75),
                cert(PUBLIC, 3000, "CN=Public Root CA"),
            ],
        ),
        my=CertificateStore(name="My", certificates=[cert(BOUND, -5)]),
        bindings=[SslBinding(ip_port="0.0.0.0:8391", cert_hash=BOUND, cert_store="Root")],
    )
    w1 = NodeSnapshot(
        name="WRK01",
        identity=HostIdentity(computer_name="WRK01"),
        worker_config=ConfigFile(
            path="w", settings={"MasterHttpsCertThumbprint": MASTER, "WorkerHttpsCertThumbprint": W1}
        ),
        root=CertificateStore(name="Root", certificates=[cert(MASTER, 20.5), cert(W1, -3)]),
        my=CertificateStore(name="My", certificates=[cert(W1, -3)]),
    )
    w2 = NodeSnapshot(
        name="WRK02",
        identity=HostIdentity(computer_name="WRK02"),
        worker_config=ConfigFile(
            path="w", settings={"MasterHttpsCertThumbprint": PIN, "WorkerHttpsCertThumbprint": W2}
        ),
        root=CertificateStore(name="Root", certificates=[cert(PIN, 200, "=cmd|' /C calc'!A0")]),
        my=CertificateStore(name="My", certificates=[cert(W2, 75, "CN=<b>wrk02</b>")]),
    )
    return Snapshot(
        clusters=[ClusterSnapshot(cluster="prod", collected_at=NOW, source="ev", nodes=[master, w1, w2])]
    )


def test_every_relevant_copy_is_listed_with_its_role_and_days_left() -> None:
    forecast = expiry_forecast(snapshot(), NOW, Thresholds())
    got = [(r.node, r.store, r.role, r.cert.thumbprint[:4], r.days_left, forecast.bucket(r)) for r in forecast.rows]
    assert got == [
        ("MASTER01", "My", "bound", "B0B0", -5, "expired"),
        ("MASTER01", "Root", "worker-trust", "C1C1", -3, "expired"),
        ("WRK01", "My", "worker", "C1C1", -3, "expired"),
        ("WRK01", "Root", "worker", "C1C1", -3, "expired"),
        ("MASTER01", "Root", "master", "A1A1", 20, "high"),
        ("WRK01", "Root", "master-trust", "A1A1", 20, "high"),
        ("MASTER01", "Root", "worker-trust", "C2C2", 75, "later"),
        ("WRK02", "My", "worker", "C2C2", 75, "later"),
        ("WRK02", "Root", "pinned", "D0D0", 200, "later"),
    ]  # the public root CA is not a Scale Out certificate and is left out


def test_bucket_counts_distinct_certificates_and_copies() -> None:
    section = expiry_section(snapshot(), NOW, Thresholds())
    buckets = {b["bucket"]: (b["certificates"], b["copies"]) for b in section["buckets"]}
    assert buckets == {"expired": (2, 4), "high": (1, 2), "medium": (0, 0), "later": (2, 3)}
    assert [b["label"] for b in section["buckets"]] == ["expired", "≤ 30 days", "≤ 60 days", "> 60 days"]
    assert [s["thumbprint"][:4] for s in section["soonest"]] == ["B0B0", "C1C1", "A1A1", "C2C2", "D0D0"]
    assert section["soonest"][1]["copies"] == 3 and section["soonest"][1]["role"] == "worker certificate"


def test_bucket_edges_are_the_policies_thresholds() -> None:
    default = Thresholds()
    assert [bucket_of(d, default) for d in (-1, 0, 30, 31, 60, 61)] == [
        "expired", "high", "high", "medium", "medium", "later",
    ]
    tight = Thresholds(expiry_high_days=7, expiry_medium_days=14)
    assert [bucket_of(d, tight) for d in (-1, 0, 7, 8, 14, 15)] == [
        "expired", "high", "high", "medium", "medium", "later",
    ]
    section = expiry_section(snapshot(), NOW, tight)
    assert [b["label"] for b in section["buckets"]] == ["expired", "≤ 7 days", "≤ 14 days", "> 14 days"]


def test_csv_rows_are_sorted_and_injection_safe() -> None:
    ff = FindingsFile(generated_at=NOW, source="ev", findings=[])
    data = ExpiryCsvReporter().render(ReportContext(snapshot=snapshot(), findings=ff, now=NOW))
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert len(rows) == 9
    assert [int(r["days_left"]) for r in rows] == sorted(int(r["days_left"]) for r in rows)
    assert rows[0]["days_left"] == "-5"  # a plain negative number stays a number
    pinned = rows[-1]
    assert pinned["subject"] == "'=cmd|' /C calc'!A0" and pinned["role"] == "master certificate a worker pins"
    assert rows[4]["certificate_owner"] == "MASTER01" and rows[5]["node"] == "WRK01"


def test_svg_is_self_contained_escaped_and_aggregated() -> None:
    svg = str(timeline_svg(expiry_forecast(snapshot(), NOW, Thresholds())))
    root = SafeET.fromstring(svg)  # well-formed XML, hostile subjects included
    assert root.tag == f"{SVG_NS}svg" and root.get("id") == "expiry-timeline"
    assert "href" not in svg and "<script" not in svg and "url(" not in svg
    assert svg.count("http") == 1  # only the SVG namespace
    assert "<b>" not in svg
    markers = root.findall(f".//{SVG_NS}g[@class='expiry-marker']")
    got = sorted((m.get("data-days"), m.get("data-count"), m.get("data-bucket")) for m in markers)
    assert got == sorted(
        [
            ("-5", "1", "expired"),
            ("-3", "1", "expired"),
            ("20", "1", "high"),
            ("75", "1", "later"),
            ("200", "1", "later"),
        ]
    )
    tips = [m.findtext(f"{SVG_NS}title") or "" for m in markers]
    assert any(t.startswith("1 worker certificate expired 3 days ago") and "WRK01" in t for t in tips)
    assert any(
        "+200 d" in "".join(m.itertext()) for m in markers
    )  # beyond the axis: drawn at the edge, labelled


def test_a_fleet_expiring_the_same_day_is_one_marker() -> None:
    snap = snapshot()
    cluster = snap.clusters[0]
    for i in range(300):
        tp = f"{i:040X}"
        cluster.nodes.append(
            NodeSnapshot(
                name=f"FLEET{i:03d}",
                identity=HostIdentity(computer_name=f"FLEET{i:03d}"),
                worker_config=ConfigFile(path="w", settings={"WorkerHttpsCertThumbprint": tp}),
                my=CertificateStore(name="My", certificates=[cert(tp, 45)]),
            )
        )
    root = SafeET.fromstring(str(timeline_svg(expiry_forecast(snap, NOW, Thresholds()))))
    batch = [m for m in root.iter(f"{SVG_NS}g") if m.get("data-days") == "45"]
    assert len(batch) == 1 and batch[0].get("data-count") == "300"
    assert "(+292 more)" in (batch[0].findtext(f"{SVG_NS}title") or "")


def test_empty_snapshot_says_so() -> None:
    svg = str(timeline_svg(expiry_forecast(Snapshot(clusters=[]), NOW, Thresholds())))
    assert "No certificate named by a Scale Out config was found." in svg
