"""Root causes: many failing findings that one mistake explains, shown as one thing to fix.

When a master certificate is replaced and 40 workers keep pinning the old one, the audit has 80
failing findings (SO-W02 + SO-W03 on every worker) but one cause and one fix. An operator who reads the
80 lines first has to rediscover that; this module does it for them. Every failing finding (``fail`` or
``error``) belongs to exactly one cause, so "12 causes" is the honest count of things to do; a finding
no rule explains becomes its own cause (grouped with the same policy failing elsewhere in its cluster).

Rules, first match claims the finding:

1. ``stale-master-pin`` — workers whose ``MasterHttpsCertThumbprint`` is not the master's certificate,
   grouped by the thumbprint they pin (SO-W02, plus SO-W03 on the same workers: the re-pin installs the
   master certificate too). Named a rotation when the pinned certificate is still on the master, or a
   copy of it names the master.
2. ``master-untrusted`` — the master certificate missing from Root on workers that pin it right (SO-W03).
3. ``master-binding`` — the HTTP.sys binding on a master is missing, on another hash or store
   (SO-M04/M05/M06): one cause per master node, whatever the workers do.
4. ``master-certificate`` — the master certificate itself must be replaced (expired, names, weak key:
   everything whose remediation is ``rotate-master-certificate``), one cause per certificate so both
   nodes of an HA pair sharing it count once.
5. ``workers-untrusted-by-master`` — worker certificates missing from a master's Root (SO-W08) on
   several workers: one import on the master side.
6. ``not-collected`` — nodes that could not be collected (SO-C01), grouped by what went wrong.
7. everything else: one cause per (cluster, policy).

The snapshot, when given, supplies thumbprints (what a worker pins, what the master uses); without it
the rules fall back to what findings carry, and titles get less specific but grouping stays correct.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from scaleguard.findings.model import Finding, Remediation, Severity, Status
from scaleguard.rules.thumbprint import comparable
from scaleguard.snapshot.model import Certificate, ClusterSnapshot, ConfigFile, NodeSnapshot, Snapshot

FAILING = (Status.FAIL, Status.ERROR)


@dataclass
class Cause:
    kind: str
    key: tuple[str, ...]
    template: str
    """The title; ``{workers}`` / ``{nodes}`` become "12 workers" / "1 node" once the group is complete."""
    fix: str
    cluster: str
    symptoms: list[Finding] = field(default_factory=list)
    extra_nodes: list[str] = field(default_factory=list)
    """Nodes the fix touches that carry no symptom themselves (e.g. the master that lacks worker certs)."""

    @property
    def id(self) -> str:
        digest = hashlib.sha256("\x1f".join((self.kind, self.cluster, *self.key)).encode()).hexdigest()
        return f"{self.kind}-{digest[:8]}"

    @property
    def nodes(self) -> list[str]:
        seen: dict[str, str] = {}
        for name in [*(f.node for f in self.symptoms), *self.extra_nodes]:
            seen.setdefault(name.casefold(), name)
        return sorted(seen.values(), key=str.casefold)

    @property
    def title(self) -> str:
        affected = len({f.node.casefold() for f in self.symptoms})
        return self.template.replace("{workers}", _plural(affected, "worker")).replace(
            "{nodes}", _plural(affected, "node")
        )

    @property
    def severity(self) -> Severity:
        return max((f.severity for f in self.symptoms), key=lambda s: s.rank, default=Severity.INFO)

    def impact(self) -> tuple[int, int, int]:
        """Worst severity first, then how many nodes, then how many findings one fix clears."""
        return (self.severity.rank, len(self.nodes), len(self.symptoms))

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "fix": self.fix,
            "cluster": self.cluster,
            "severity": self.severity.value,
            "nodes": self.nodes,
            "symptoms": [
                {"policy": f.policy, "node": f.node, "status": f.status.value, "severity": f.severity.value}
                for f in sorted(self.symptoms, key=lambda f: (f.policy, f.node.casefold()))
            ],
            "count": len(self.symptoms),
        }


def find_causes(findings: Iterable[Finding], snapshot: Snapshot | None = None) -> list[Cause]:
    """Partition the failing findings into causes, most impactful first."""
    facts = _Facts(snapshot)
    open_findings = [f for f in findings if f.status in FAILING]
    causes: dict[tuple[str, str, tuple[str, ...]], Cause] = {}
    claimed: set[int] = set()
    for rule in _RULES:
        for f in open_findings:
            if id(f) in claimed:
                continue
            made = rule(f, facts, open_findings)
            if made is None:
                continue
            cause = causes.setdefault((made.kind, made.cluster, made.key), made)
            cause.symptoms.append(f)
            for extra in made.extra_nodes:
                if extra not in cause.extra_nodes:
                    cause.extra_nodes.append(extra)
            claimed.add(id(f))
    return sorted(causes.values(), key=lambda c: (tuple(-v for v in c.impact()), c.title, c.id))


# ------------------------------------------------------------------------------------------------ facts


class _Facts:
    """Thumbprints per cluster and node, read once from the snapshot (empty without one).

    Every rule asks about every failing finding, and a rotated master leaves one failing pin per worker:
    so nodes by name and the masters are indexed once per cluster, and the answers that depend only on
    (cluster, thumbprints) are remembered, so grouping stays linear in the failing findings."""

    def __init__(self, snapshot: Snapshot | None) -> None:
        self.clusters: dict[str, ClusterSnapshot] = {
            c.cluster: c for c in (snapshot.clusters if snapshot else [])
        }
        self._by_name: dict[str, dict[str, NodeSnapshot]] = {}
        self._masters: dict[str, list[NodeSnapshot]] = {}
        self._master_thumbprints: dict[str, list[str]] = {}
        self._replaced: dict[tuple[str, str, str], bool] = {}
        self._wrong_pins: set[tuple[str, str]] | None = None

    def node(self, cluster: str, name: str) -> NodeSnapshot | None:
        c = self.clusters.get(cluster)
        if c is None:
            return None
        by_name = self._by_name.get(cluster)
        if by_name is None:
            by_name = self._by_name[cluster] = {}
            for n in c.nodes:  # the first of two names differing in case wins, as ClusterSnapshot.node
                by_name.setdefault(n.name.lower(), n)
        return by_name.get(name.lower())

    def masters(self, c: ClusterSnapshot) -> list[NodeSnapshot]:
        found = self._masters.get(c.cluster)
        if found is None:
            found = self._masters[c.cluster] = c.masters
        return found

    def master_thumbprints(self, cluster: str) -> list[str]:
        c = self.clusters.get(cluster)
        if c is None:
            return []
        known = self._master_thumbprints.get(cluster)
        if known is None:
            found = [comparable(setting(m.master_config, "SSLCertThumbprint")) for m in self.masters(c)]
            known = self._master_thumbprints[cluster] = sorted({t for t in found if t})
        return list(known)

    def worker_pin(self, f: Finding) -> str:
        node = self.node(f.cluster, f.node)
        pin = comparable(setting(node.worker_config, "MasterHttpsCertThumbprint")) if node else ""
        return pin or comparable(_evidence_value(f, "MasterHttpsCertThumbprint", "pinned", "pin"))

    def worker_cert(self, f: Finding) -> str:
        node = self.node(f.cluster, f.node)
        thumb = comparable(setting(node.worker_config, "WorkerHttpsCertThumbprint")) if node else ""
        return thumb or comparable(f.subject)

    def replaced_master_cert(self, cluster: str, pin: str, current: str) -> bool:
        """Whether ``pin`` names an earlier master certificate: the master still holds it, or a copy
        somewhere in the cluster names the master (a name of its current certificate, its computer name
        or FQDN) — the old one usually stays in the workers' Root after a rotation."""
        c = self.clusters.get(cluster)
        if c is None or not pin:
            return False
        key = (cluster, pin, current)
        known = self._replaced.get(key)
        if known is None:
            known = self._replaced[key] = self._replaced_master_cert(c, pin, current)
        return known

    def _replaced_master_cert(self, c: ClusterSnapshot, pin: str, current: str) -> bool:
        masters = self.masters(c)
        if any(self._find(m, pin) for m in masters):
            return True
        old = next((cert for n in c.nodes if (cert := self._find(n, pin))), None)
        if old is None:
            return False
        new = next((cert for m in masters if (cert := self._find(m, current))), None)
        master_names = {name.casefold() for name in new.names()} if new else set()
        for m in masters:
            master_names |= {x.casefold() for x in (m.name, m.identity.computer_name, m.identity.fqdn) if x}
        return bool({name.casefold() for name in old.names()} & master_names)

    @staticmethod
    def _find(node: NodeSnapshot, thumbprint: str) -> Certificate | None:
        for store in (node.root, node.my):
            found = store.find(thumbprint) if store is not None and thumbprint else None
            if found is not None:
                return found
        return None

    def wrong_pins(self, all_open: list[Finding]) -> set[tuple[str, str]]:
        """(cluster, case-folded node) of every open SO-W02 finding: built on the first question (one
        ``find_causes`` call asks about one list of open findings), not rescanned per SO-W03 finding."""
        if self._wrong_pins is None:
            self._wrong_pins = {(o.cluster, o.node.casefold()) for o in all_open if o.policy == "SO-W02"}
        return self._wrong_pins

    def masters_missing(self, cluster: str, thumbprint: str) -> list[str]:
        c = self.clusters.get(cluster)
        if c is None or not thumbprint:
            return []
        return [m.name for m in self.masters(c) if m.root is not None and m.root.find(thumbprint) is None]

    def collection_state(self, f: Finding) -> str:
        node = self.node(f.cluster, f.node)
        if node is not None:
            return node.collection.state.value
        return str(f.evidence.get("state") or f.evidence.get("collection") or "failed")


def setting(config: ConfigFile | None, name: str) -> str | None:
    """A setting by name, case-insensitively (hand-edited files do not keep Microsoft's casing)."""
    if config is None:
        return None
    value = config.get(name)
    if value is not None:
        return value
    wanted = name.casefold()
    return next((v for k, v in config.settings.items() if k.casefold() == wanted), None)


def _evidence_value(f: Finding, *names: str) -> str | None:
    wanted = {n.casefold() for n in names}
    for key, value in f.evidence.items():
        if key.casefold() in wanted and isinstance(value, str):
            return value
    return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _short(thumbprint: str) -> str:
    return f"{thumbprint[:8]}…" if len(thumbprint) > 8 else thumbprint or "?"


# ------------------------------------------------------------------------------------------------ rules

_Rule = Callable[[Finding, _Facts, list[Finding]], Cause | None]


def _stale_master_pin(f: Finding, facts: _Facts, all_open: list[Finding]) -> Cause | None:
    if f.policy == "SO-W03":
        # Part of a stale pin only when the same worker also pins the wrong certificate.
        if (f.cluster, f.node.casefold()) not in facts.wrong_pins(all_open):
            return None
    elif f.policy != "SO-W02":
        return None
    pin = facts.worker_pin(f)
    masters = facts.master_thumbprints(f.cluster)
    current = masters[0] if masters else ""
    if pin and pin in masters:  # the right certificate, written with extra characters the service rejects
        return Cause(
            "stale-master-pin",
            ("format", pin),
            f"Master thumbprint {_short(pin)} written with extra characters ({{workers}})",
            Remediation.NORMALIZE_CONFIG_THUMBPRINT,
            f.cluster,
        )
    if pin and facts.replaced_master_cert(f.cluster, pin, current):
        title = (
            f"Master certificate replaced ({_short(pin)} → {_short(current)}), old one still pinned "
            "({workers})"
        )
    elif pin:
        title = (
            f"Pinned thumbprint {_short(pin)} is not the master certificate {_short(current)} ({{workers}})"
        )
    else:
        title = "Master certificate not pinned ({workers})"
    return Cause("stale-master-pin", (pin,), title, Remediation.REPIN_WORKER_MASTER_THUMBPRINT, f.cluster)


def _master_untrusted(f: Finding, facts: _Facts, _all: list[Finding]) -> Cause | None:
    if f.policy != "SO-W03":
        return None
    masters = facts.master_thumbprints(f.cluster)
    thumb = masters[0] if masters else comparable(f.subject)
    return Cause(
        "master-untrusted",
        (thumb,),
        f"Master certificate {_short(thumb)} missing from LocalMachine\\Root ({{workers}})",
        Remediation.IMPORT_ROOT_CERTIFICATE,
        f.cluster,
    )


def _master_binding(f: Finding, _facts: _Facts, _all: list[Finding]) -> Cause | None:
    if f.policy not in ("SO-M04", "SO-M05", "SO-M06"):
        return None
    return Cause(
        "master-binding",
        (f.node.casefold(),),
        f"HTTP.sys SSL binding on {f.node} does not serve the configured master certificate",
        Remediation.REPAIR_MASTER_BINDING,
        f.cluster,
    )


def _master_certificate(f: Finding, facts: _Facts, _all: list[Finding]) -> Cause | None:
    if f.remediation != Remediation.ROTATE_MASTER_CERTIFICATE:
        return None
    node = facts.node(f.cluster, f.node)
    thumb = comparable(setting(node.master_config, "SSLCertThumbprint")) if node else ""
    thumb = thumb or comparable(f.subject) or f.node.casefold()
    return Cause(
        "master-certificate",
        (thumb,),
        f"Master certificate {_short(thumb)} must be replaced",
        Remediation.ROTATE_MASTER_CERTIFICATE,
        f.cluster,
    )


def _workers_untrusted_by_master(f: Finding, facts: _Facts, _all: list[Finding]) -> Cause | None:
    if f.policy != "SO-W08":
        return None
    missing = facts.masters_missing(f.cluster, facts.worker_cert(f))
    where = ", ".join(missing) if missing else "the master"
    return Cause(
        "workers-untrusted-by-master",
        (where.casefold(),),
        f"Worker certificates missing from LocalMachine\\Root on {where} ({{workers}})",
        Remediation.IMPORT_ROOT_CERTIFICATE,
        f.cluster,
        extra_nodes=missing,
    )


def _not_collected(f: Finding, facts: _Facts, _all: list[Finding]) -> Cause | None:
    if f.policy != "SO-C01":
        return None
    state = facts.collection_state(f)
    return Cause(
        "not-collected",
        (state,),
        f"Not collected: {state.replace('_', ' ')} ({{nodes}})",
        f.remediation or "manual",
        f.cluster,
    )


def _same_policy(f: Finding, _facts: _Facts, _all: list[Finding]) -> Cause | None:
    title = f.title or f.policy
    return Cause(
        "policy",
        (f.policy,),
        f"{f.policy} fails on {{nodes}} — expected: {title}",
        f.remediation or "manual",
        f.cluster,
    )


_RULES: tuple[_Rule, ...] = (
    _stale_master_pin,
    _master_untrusted,
    _master_binding,
    _master_certificate,
    _workers_untrusted_by_master,
    _not_collected,
    _same_policy,
)
