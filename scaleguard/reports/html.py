"""``report.html``: one self-contained file a person can open from a mail attachment or a USB stick.

Layout choices, for a 1,000-node cluster (≈14,000 findings, ≈15,000 certificate entries):

- The small parts (run metadata, summary, worst problems, per-policy table) are rendered on the server
  with Jinja2 autoescaping, so they read even with JavaScript off.
- The big tables (findings, nodes, certificate inventory) travel as one compact JSON document inside
  ``<script type="application/json">`` and are drawn by a little inline vanilla JS, a page at a time,
  with ``textContent`` only. Policy texts and certificates shared by many nodes are stored once and
  referenced by index, which keeps the file a few megabytes instead of tens.
- No external asset of any kind: inline CSS and JS, no fonts, no CDN; it works offline.

Escaping: values come from nodes and from users' policy packs, i.e. from people we do not trust. Jinja2
autoescape covers HTML text and attributes; the JSON island additionally escapes ``<``, ``>``, ``&`` and
the two JavaScript line separators, so no value can close the ``<script>`` element or open a comment.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import jinja2
import orjson
from markupsafe import Markup

from scaleguard.findings.model import Finding, Status
from scaleguard.reports.base import ReportContext
from scaleguard.reports.fixsteps import fix_step
from scaleguard.reports.nightly import nightly_view
from scaleguard.reports.view import (
    ENUM_TEXT,
    SEVERITY_ORDER,
    STATUS_ORDER,
    NodeRow,
    PolicyRow,
    expiry_class,
    node_rows,
    policy_rows,
    severity_status_matrix,
    sorted_findings,
)
from scaleguard.snapshot.model import days_left

TOP_PROBLEMS = 25
"""How many problems the static summary lists before pointing at the full, filterable table."""

_JSON_ESCAPES = (
    ("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"),
)


def script_json(payload: Any) -> Markup:
    """JSON that is safe verbatim inside a ``<script>`` element (no ``</script>``, no ``<!--``).

    Inside JSON strings these characters only ever appear as themselves, so replacing them with their
    ``\\uXXXX`` escapes keeps the document equal while no markup can be formed.
    """
    # orjson: the same compact, non-ASCII-preserving text as json.dumps(ensure_ascii=False,
    # separators=(",", ":")), and much faster on a large fleet's island
    text = orjson.dumps(payload, default=str).decode("utf-8")
    for raw, escaped in _JSON_ESCAPES:  # str.replace scans in C; a per-character translation does not
        text = text.replace(raw, escaped)
    return Markup(text)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("scaleguard.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["is_web_link"] = lambda ref: str(ref).startswith(("https://", "http://"))
    return env


class HtmlReporter:
    filename = "report.html"

    def __init__(self) -> None:
        self._template = _environment().get_template("report.html.j2")

    def render(self, ctx: ReportContext) -> bytes:
        findings = sorted_findings(ctx.findings.findings)
        policies = policy_rows(ctx.findings)
        nodes = node_rows(ctx.snapshot, findings, ctx.now)
        # one count for the header and the tab: the rows that are nodes (the cluster's own row, where
        # cluster-wide policies report, is listed in the table but is not a node)
        node_total = sum(1 for n in nodes if n.state != "cluster")
        matrix = severity_status_matrix(findings)
        counts = {s: sum(matrix[sev][s] for sev in SEVERITY_ORDER) for s in STATUS_ORDER}
        problems = counts[Status.ERROR] + counts[Status.FAIL]  # sorted problems first: the list's head
        # encoded part by part: the template's own text is not ASCII, and a whole page of wide text
        # (the JSON island is megabytes of ASCII) costs several times as much to join and encode
        parts = self._template.generate(
            meta=_metadata(ctx, len(policies), node_total),
            insecure=ctx.findings.insecure,
            unencrypted=ctx.findings.unencrypted_nodes,
            statuses=STATUS_ORDER,
            severities=SEVERITY_ORDER,
            counts=counts,
            not_applicable=sum(p.not_applicable for p in policies),
            matrix=matrix,
            total=len(findings),
            top_problems=findings[:min(problems, TOP_PROBLEMS)],
            more_problems=max(0, problems - TOP_PROBLEMS),
            policies=policies,
            node_total=node_total,
            data=script_json(_payload(ctx, findings, policies, nodes)),
            nightly=nightly_view(ctx),
            limits=ctx.thresholds,
        )
        return b"".join(part.encode("utf-8") for part in parts)


def _metadata(ctx: ReportContext, policies: int, nodes: int) -> dict[str, str]:
    ff = ctx.findings
    return {
        "source": ff.source,
        "mode": ff.mode,
        "generated_at": ff.generated_at.isoformat(timespec="seconds"),
        "clusters": ", ".join(c.cluster for c in ctx.snapshot.clusters),
        "nodes": str(nodes),
        "policies": str(policies),
        "schema": ff.schema_version,
        "scaleguard": _version(),
    }


def _version() -> str:
    try:
        return version("scaleguard")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _payload(
    ctx: ReportContext, findings: list[Finding], policies: list[PolicyRow], nodes: list[NodeRow]
) -> dict[str, Any]:
    """The JSON island: shared texts once, rows as short arrays pointing at them by index."""
    policy_index = {p.id: i for i, p in enumerate(policies)}
    node_index = {(n.cluster, n.name.lower()): i for i, n in enumerate(nodes)}
    diagnostics = {
        (c.cluster, n.name.lower()): [[d.level.value, d.source, d.message] for d in n.diagnostics]
        for c in ctx.snapshot.clusters
        for n in c.nodes
    }
    cert_index: dict[str, int] = {}
    certs: list[list[Any]] = []
    holdings: list[list[Any]] = []
    now = ctx.now
    for cluster in ctx.snapshot.clusters:  # every store entry, each distinct certificate once
        for node in cluster.nodes:
            where = node_index[(cluster.cluster, node.name.lower())]
            for store in (node.root, node.my):
                if store is None:
                    continue
                for c in store.certificates:
                    idx = cert_index.get(c.thumbprint)
                    if idx is None:
                        idx = cert_index[c.thumbprint] = len(certs)
                        left = days_left(c.not_after, now)
                        key = f"{c.key_algorithm} {c.key_bits}" if c.key_bits else c.key_algorithm
                        certs.append([
                            c.subject, c.issuer, c.thumbprint, c.not_after.isoformat(timespec="seconds"), left,
                            expiry_class(left, ctx.thresholds), key, c.signature_hash or "", c.self_signed,
                        ])
                    holdings.append([where, store.name, idx, c.has_private_key])
    rows, fixes = _finding_rows(findings, policy_index, node_index, policies)
    return {
        "statuses": [s.value for s in STATUS_ORDER],
        "severities": [s.value for s in SEVERITY_ORDER],
        "multiCluster": len(ctx.snapshot.clusters) > 1,
        "policies": [
            {
                "id": p.id, "title": p.title, "description": p.description, "references": p.references,
                "remediation": p.remediation, "fix": p.fix_step,
            }
            for p in policies
        ],
        "nodes": [
            {
                "cluster": n.cluster, "name": n.name, "roles": ", ".join(n.roles), "state": n.state,
                "reason": n.reason, "fqdn": n.fqdn, "counts": [n.counts[s] for s in STATUS_ORDER],
                "worst": n.worst, "certs": n.certificates, "soonest": n.soonest_days,
                "soonestClass": expiry_class(n.soonest_days, ctx.thresholds) if n.soonest_days is not None else "",
                "diagnostics": diagnostics.get((n.cluster, n.name.lower()), []),
            }
            for n in nodes
        ],
        "findings": rows,
        "fixSteps": {name: fix_step(name) for name in sorted(fixes)},
        "certs": certs,
        "holdings": holdings,
    }


def _finding_rows(
    findings: list[Finding], policy_index: dict[str, int], node_index: dict[tuple[str, str], int],
    policies: list[PolicyRow],
) -> tuple[list[list[Any]], set[str]]:
    """Per finding: [policy, node, status, severity, message, evidence, subject, waiver, own remediation or
    null, applicable (0 for a check that cannot apply in this mode, e.g. a live-only check offline)]; and
    every remediation the findings name (the page shows each one's manual step).

    One loop with its lookups held locally: this runs once per finding (14,000 per 1,000-node audit)."""
    shared_fix = [p.remediation for p in policies]
    value = ENUM_TEXT
    rows = []
    fixes: set[str] = set()
    for f in findings:
        p = policy_index[f.policy]
        own = f.remediation or None
        if own is not None:
            fixes.add(own)
            if own == shared_fix[p]:
                own = None
        rows.append([
            p, node_index[(f.cluster, f.node.lower())], value[f.status], value[f.severity], f.message, f.evidence,
            f.subject or "", f.waiver, own, 1 if f.applicable else 0,
        ])
    return rows, fixes
