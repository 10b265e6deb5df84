"""Expiry forecast: every certificate Scale Out depends on, with the days it has left.

"Depends on" is decided by the configs, not by the stores: the master certificate (``SSLCertThumbprint``)
and each worker certificate (``WorkerHttpsCertThumbprint``) wherever a copy sits — the owner's own store
and the trust copies in other nodes' Root — plus what a master's HTTP.sys binding serves and what a
worker pins when those differ from the configured certificate. Public root CAs that happen to live in
Root are left out: they expire on their own schedule and say nothing about the cluster.

Two outputs: ``expiry.csv`` (one row per copy, soonest first; cells neutralised against spreadsheet
formula injection with the findings CSV's rule) and an inline SVG timeline for ``report.html`` that
needs nothing but the SVG itself (no script, no font, no external asset). Certificates of a large fleet
are usually issued in batches, so the timeline aggregates per day and role: 1,000 workers whose
certificates expire on the same day are one marker saying so, not 1,000 overlapping dots.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any, NamedTuple

from markupsafe import Markup

from scaleguard.findings.causes import setting
from scaleguard.policies.model import Thresholds
from scaleguard.reports.base import ReportContext
from scaleguard.reports.csv_report import csv_bytes, field, neutralise
from scaleguard.reports.view import bucket_of
from scaleguard.rules.thumbprint import comparable
from scaleguard.snapshot.model import Certificate, ClusterSnapshot, NodeSnapshot, Snapshot, days_left

ROLES: dict[str, str] = {
    "master": "master certificate",
    "master-trust": "master certificate, trusted copy",
    "bound": "certificate bound in HTTP.sys",
    "worker": "worker certificate",
    "worker-trust": "worker certificate, trusted copy",
    "pinned": "master certificate a worker pins",
}
CSV_COLUMNS = [
    "bucket",
    "days_left",
    "not_after",
    "thumbprint",
    "role",
    "cluster",
    "node",
    "store",
    "subject",
    "issuer",
    "certificate_owner",
]


def buckets(limits: Thresholds) -> tuple[tuple[str, str], ...]:
    """(key, label) of each band, soonest first: the policies' own expiry limits (high, then medium)."""
    return (
        ("expired", "expired"),
        ("high", f"≤ {limits.expiry_high_days} days"),
        ("medium", f"≤ {limits.expiry_medium_days} days"),
        ("later", f"> {limits.expiry_medium_days} days"),
    )


class ExpiryRow(NamedTuple):
    cluster: str
    node: str
    store: str
    role: str
    owner: str
    """The node whose config names the certificate (the master, or the worker that uses it)."""
    cert: Certificate
    days_left: int


@dataclass(frozen=True)
class ExpiryForecast:
    now: datetime
    rows: tuple[ExpiryRow, ...]
    limits: Thresholds

    def bucket(self, row: ExpiryRow) -> str:
        return bucket_of(row.days_left, self.limits)

    def bucket_counts(self) -> dict[str, dict[str, int]]:
        """Per bucket: distinct certificates and the copies of them across nodes."""
        out = {key: {"certificates": 0, "copies": 0} for key, _ in buckets(self.limits)}
        seen: set[str] = set()
        limits = self.limits
        for row in self.rows:
            bucket = bucket_of(row.days_left, limits)
            out[bucket]["copies"] += 1
            if row.cert.thumbprint not in seen:
                seen.add(row.cert.thumbprint)
                out[bucket]["certificates"] += 1
        return out

    def as_json(self, *, limit: int = 50) -> dict[str, Any]:
        """What findings.json / a template needs: counts per bucket and the soonest certificates."""
        soonest: list[dict[str, Any]] = []
        seen: set[str] = set()
        # copies per certificate counted in one pass, not one pass over every row per listed certificate
        copies = Counter(row.cert.thumbprint for row in self.rows)
        for row in self.rows:
            if len(soonest) >= limit:
                break
            if row.cert.thumbprint in seen:
                continue
            seen.add(row.cert.thumbprint)
            soonest.append(
                {
                    "thumbprint": row.cert.thumbprint,
                    "subject": row.cert.subject,
                    "role": ROLES[_own_role(row)],
                    "owner": row.owner,
                    "cluster": row.cluster,
                    "days_left": row.days_left,
                    "bucket": self.bucket(row),
                    "not_after": row.cert.not_after.isoformat(timespec="seconds"),
                    "copies": copies[row.cert.thumbprint],
                }
            )
        counts = self.bucket_counts()
        return {
            "buckets": [{"bucket": key, "label": label, **counts[key]} for key, label in buckets(self.limits)],
            "soonest": soonest,
        }


def _own_role(row: ExpiryRow) -> str:
    return {"master-trust": "master", "worker-trust": "worker"}.get(row.role, row.role)


def expiry_rows(snapshot: Snapshot, now: datetime) -> tuple[ExpiryRow, ...]:
    """Every copy of every certificate Scale Out depends on, soonest first."""
    rows = [row for cluster in snapshot.clusters for row in _cluster_rows(cluster, now)]
    rows.sort(key=lambda r: (r.days_left, r.cert.thumbprint, r.cluster, r.node.casefold(), r.store))
    return tuple(rows)


def expiry_forecast(snapshot: Snapshot, now: datetime, limits: Thresholds) -> ExpiryForecast:
    return ExpiryForecast(now=now, rows=expiry_rows(snapshot, now), limits=limits)


def _cluster_rows(cluster: ClusterSnapshot, now: datetime) -> list[ExpiryRow]:
    master_certs = {
        t: m.name
        for m in cluster.masters
        if (t := comparable(setting(m.master_config, "SSLCertThumbprint")))
    }
    worker_certs = {
        t: w.name
        for w in cluster.workers
        if (t := comparable(setting(w.worker_config, "WorkerHttpsCertThumbprint")))
    }
    rows: list[ExpiryRow] = []
    named = master_certs.keys() | worker_certs.keys()
    days: dict[str, int] = {}  # by thumbprint: a worker certificate has several copies
    for node in cluster.nodes:
        bound = (
            {comparable(b.cert_hash) for b in node.bindings or [] if b.cert_hash}
            if node.is_master
            else set()
        )
        pinned = comparable(setting(node.worker_config, "MasterHttpsCertThumbprint"))
        for store in (node.root, node.my):
            if store is None:
                continue
            for cert in store.certificates:
                thumbprint = cert.thumbprint
                # most of a Root store is public CAs that no config names: skipped before any call
                if thumbprint not in named and thumbprint not in bound and thumbprint != pinned:
                    continue
                role, owner = _role(thumbprint, node, master_certs, worker_certs, bound, pinned)
                if not role:
                    continue
                left = days.get(thumbprint)
                if left is None:
                    left = days[thumbprint] = days_left(cert.not_after, now)
                rows.append(ExpiryRow(cluster.cluster, node.name, store.name, role, owner, cert, left))
    return rows


def _role(
    thumbprint: str,
    node: NodeSnapshot,
    master_certs: dict[str, str],
    worker_certs: dict[str, str],
    bound: set[str],
    pinned: str,
) -> tuple[str, str]:
    if thumbprint in master_certs:
        return ("master" if node.is_master else "master-trust"), master_certs[thumbprint]
    if thumbprint in worker_certs:
        owner = worker_certs[thumbprint]
        return ("worker" if owner.casefold() == node.name.casefold() else "worker-trust"), owner
    if thumbprint in bound:
        return "bound", node.name
    if pinned and thumbprint == pinned:
        return "pinned", node.name
    return "", ""


# -------------------------------------------------------------------------------------------------- CSV


class ExpiryCsvReporter:
    filename = "expiry.csv"

    def render(self, ctx: ReportContext) -> bytes:
        forecast = expiry_forecast(ctx.snapshot, ctx.now, ctx.thresholds)
        rows = [
            ",".join([
                field(neutralise(cell))
                for cell in (
                    forecast.bucket(row), str(row.days_left), row.cert.not_after.isoformat(timespec="seconds"),
                    row.cert.thumbprint, ROLES[row.role], row.cluster, row.node, row.store, row.cert.subject,
                    row.cert.issuer, row.owner,
                )
            ]) + "\r\n"
            for row in forecast.rows
        ]
        return csv_bytes(CSV_COLUMNS, rows)


# -------------------------------------------------------------------------------------------------- SVG

_WIDTH, _LEFT, _RIGHT = 900, 70, 40
_LANES = (("master", "Master"), ("worker", "Workers"), ("other", "Other"))
_LANE_Y = {"master": 52, "worker": 92, "other": 132}
_HEIGHT = 176
_BAND_COLOURS = {"expired": "#f3c5c5", "high": "#f8dcc0", "medium": "#faeec0", "later": "#dcefdc"}
_DOT_COLOURS = {"expired": "#b3261e", "high": "#c25e00", "medium": "#9a7b00", "later": "#2e7d32"}
_LANE_OF = {
    "master": "master",
    "master-trust": "master",
    "worker": "worker",
    "worker-trust": "worker",
    "bound": "other",
    "pinned": "other",
}


def timeline_svg(forecast: ExpiryForecast, *, past_days: int = 30, ahead_days: int = 120) -> Markup:
    """An inline ``<svg>`` of when the certificates expire, from ``past_days`` ago to ``ahead_days`` ahead.

    Certificates beyond either end are drawn at the edge with an arrow-like label (``≤ -30`` / ``≥ 120``),
    so nothing is silently dropped. Each marker carries a ``<title>`` tooltip; every text is escaped.
    """
    lo, hi = -past_days, ahead_days
    plot = _WIDTH - _LEFT - _RIGHT

    def x(days: float) -> float:
        return round(_LEFT + (min(max(days, lo), hi) - lo) / (hi - lo) * plot, 1)

    aria = escape(_aria(forecast))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="expiry-timeline" class="expiry-timeline" role="img" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'aria-label="{aria}" font-family="system-ui, sans-serif" font-size="11">',
        f"<title>{aria}</title>",
    ]
    high, medium = forecast.limits.expiry_high_days, forecast.limits.expiry_medium_days
    edges = [(lo, 0, "expired"), (0, high, "high"), (high, medium, "medium"), (medium, hi, "later")]
    for start, end, key in edges:
        if end <= lo or start >= hi:
            continue
        parts.append(
            f'<rect class="band band-{key}" x="{x(start)}" y="28" width="{round(x(end) - x(start), 1)}" '
            f'height="{_HEIGHT - 56}" fill="{_BAND_COLOURS[key]}"/>'
        )
    for lane, label in _LANES:
        y = _LANE_Y[lane]
        parts.append(f'<text x="{_LEFT - 8}" y="{y + 4}" text-anchor="end" fill="#333">{label}</text>')
        parts.append(f'<line x1="{_LEFT}" y1="{y}" x2="{_WIDTH - _RIGHT}" y2="{y}" stroke="#0002"/>')
    for tick in range(lo - lo % 30 if lo % 30 else lo, hi + 1, 30):
        if tick < lo:
            continue
        label = "today" if tick == 0 else f"{tick:+d} d"
        date_text = (forecast.now + timedelta(days=tick)).date().isoformat()
        parts.append(f'<line x1="{x(tick)}" y1="24" x2="{x(tick)}" y2="{_HEIGHT - 24}" stroke="#0003"/>')
        parts.append(f'<text x="{x(tick)}" y="18" text-anchor="middle" fill="#333">{label}</text>')
        parts.append(
            f'<text x="{x(tick)}" y="{_HEIGHT - 10}" text-anchor="middle" fill="#666">{date_text}</text>'
        )
    parts.append(
        f'<line x1="{x(0)}" y1="24" x2="{x(0)}" y2="{_HEIGHT - 24}" stroke="#b3261e" stroke-width="2"/>'
    )
    for (lane, day), group in sorted(_groups(forecast).items()):
        parts.append(_marker(lane, day, group, x(day), lo, hi, bucket_of(day, forecast.limits)))
    if not forecast.rows:
        parts.append(
            f'<text x="{_WIDTH / 2}" y="{_HEIGHT / 2}" text-anchor="middle" fill="#333">'
            "No certificate named by a Scale Out config was found.</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _groups(forecast: ExpiryForecast) -> dict[tuple[str, int], dict[str, ExpiryRow]]:
    """(lane, day) → distinct certificates (by thumbprint) expiring that day in that lane."""
    groups: dict[tuple[str, int], dict[str, ExpiryRow]] = defaultdict(dict)
    for row in forecast.rows:
        groups[(_LANE_OF[row.role], row.days_left)].setdefault(row.cert.thumbprint, row)
    return groups


def _marker(lane: str, day: int, group: dict[str, ExpiryRow], cx: float, lo: int, hi: int, bucket: str) -> str:
    n = len(group)
    first = next(iter(group.values()))
    radius = min(4 + 2 * (n**0.5), 14)
    owners = sorted({r.owner for r in group.values()}, key=str.casefold)
    shown = ", ".join(owners[:8]) + (f" (+{len(owners) - 8} more)" if len(owners) > 8 else "")
    when = "expired " + f"{-day} days ago" if day < 0 else f"expires in {day} days"
    what = (
        f"{n} {lane} certificate{'s' if n != 1 else ''}"
        if lane != "other"
        else f"{n} certificate{'s' if n != 1 else ''} (bound or pinned)"
    )
    tip = f"{what} {when} ({first.cert.not_after.date().isoformat()}): {shown}"
    colour = _DOT_COLOURS[bucket]
    y = _LANE_Y[lane]
    out = [
        f'<g class="expiry-marker" data-days="{day}" data-count="{n}" data-bucket="{bucket}">',
        f"<title>{escape(tip)}</title>",
        f'<circle cx="{cx}" cy="{y}" r="{radius:.1f}" fill="{colour}" fill-opacity="0.85" stroke="#fff"/>',
    ]
    if n > 1:
        out.append(f'<text x="{cx}" y="{y + 3.5}" text-anchor="middle" fill="#fff" font-size="9">{n}</text>')
    if day < lo or day > hi:
        out.append(
            f'<text x="{cx}" y="{y - radius - 3:.1f}" text-anchor="middle" fill="#333" font-size="9">'
            f"{day:+d} d</text>"
        )
    out.append("</g>")
    return "".join(out)


def _aria(forecast: ExpiryForecast) -> str:
    counts = forecast.bucket_counts()
    parts = [
        f"{counts[key]['certificates']} {label}"
        for key, label in buckets(forecast.limits)
        if counts[key]["certificates"]
    ]
    return "Certificate expiry timeline: " + (", ".join(parts) if parts else "no certificates")


def expiry_section(snapshot: Snapshot, now: datetime, limits: Thresholds) -> dict[str, Any]:
    """Everything report.html needs for the expiry section, in one call: counts, soonest rows, the SVG."""
    forecast = expiry_forecast(snapshot, now, limits)
    return {**forecast.as_json(limit=20), "svg": timeline_svg(forecast), "total": len(forecast.rows)}
