"""Evaluate policies against a snapshot: pure (no I/O), one finding per policy and subject, passes included.

Per cluster the facts are built once; the nodes of one set of roles share one CEL context, in which per
node only the per-node variables (``node``, ``master``, ``worker`` and their certificates) are replaced,
because converting Python values into CEL is the expensive part of an evaluation.

Order of judgement for one policy and one subject, each step able to end it:

1. ``modes`` — a live-only policy in an offline audit: ``not_assessed``, ``applicable=False``.
2. ``applies_if`` — false: ``not_assessed``, ``applicable=False`` (what it is about does not exist here,
   e.g. no binding to compare, and another policy already fails for that); null or true: go on.
3. ``requires`` — a required fact is null: ``not_assessed`` naming the facts and the evidence they need.
4. ``check`` — true ``pass``; false ``fail`` (or ``fail_status``), severity from the first matching
   grade; null ``not_assessed`` (the check could not decide).
A CEL runtime error anywhere is ``error`` with the message: a policy that could not look is not a pass.

Which nodes: ``master`` policies run once per master node (several in an HA pair), ``worker`` policies once
per worker, and only on nodes that were collected (``collection.state == ok``). A node that was not is
reported once, by SO-C01 (``for_each`` over ``cluster.nodes``), instead of one ``not_assessed`` per
policy; a node without any settings file has no role, so no role policy runs on it either (SO-C01 again).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import cel

from scaleguard.findings.model import Finding, Severity, Status
from scaleguard.policies import fact_schema, trim
from scaleguard.policies.facts import build_cluster_facts
from scaleguard.policies.functions import FUNCTIONS
from scaleguard.policies.model import Mode, Policy, Programs, Scope, Thresholds
from scaleguard.snapshot.model import ClusterSnapshot, CollectionState, Snapshot

_STORE_FACTS = re.compile(r"\.(?:root|my)\b")
_SUBJECT = ("node", "master", "worker", "master_cert", "worker_cert", "item")
"""The variables of one subject (see :class:`_Judge`); the others are the whole cluster's."""
_PLAIN = frozenset({str, int, float, bool, type(None)})


def evaluate(
    snapshot: Snapshot,
    policies: list[Policy],
    *,
    now: datetime,
    thresholds: Thresholds | None = None,
) -> list[Finding]:
    """Every policy against every subject it applies to, in snapshot order."""
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    limits = thresholds or Thresholds()
    include_stores = any(_mentions(p, _STORE_FACTS) for p in policies)
    findings: list[Finding] = []
    for cluster in snapshot.clusters:
        findings.extend(_evaluate_cluster(cluster, policies, now, limits, include_stores))
    return findings


def _evaluate_cluster(
    cluster: ClusterSnapshot,
    policies: list[Policy],
    now: datetime,
    limits: Thresholds,
    include_stores: bool,
) -> list[Finding]:
    facts = build_cluster_facts(cluster, now=now, include_stores=include_stores)
    variables: dict[str, Any] = {
        "now": now,
        "thresholds": limits.facts(),
        "cluster": facts.cluster,
        "masters": facts.masters,
        **dict.fromkeys(_SUBJECT),
    }
    compiled = [(p, _Plan(p, cluster.cluster)) for p in policies]
    found = [
        finding
        for policy, plan in compiled
        if policy.scope is Scope.CLUSTER
        for finding in _Judge(cluster, variables, _spec_of([policy])).cluster_policy(policy, plan)
    ]
    # per set of roles (a handful per cluster): the policies that apply, judged in one CEL context
    by_roles: dict[tuple[str, ...], tuple[list[tuple[Policy, _Plan]], _Judge]] = {}
    for node in cluster.nodes:
        roles = tuple(node.roles())
        if roles not in by_roles:
            applying = [(p, plan) for p, plan in compiled if p.scope.value in roles]
            by_roles[roles] = applying, _Judge(cluster, variables, _spec_of([p for p, _ in applying]))
        todo, judge = by_roles[roles]
        if node.collection.state is not CollectionState.OK or not todo:
            continue
        mine = facts.nodes[node.name]
        judge.use(
            {
                "node": mine.node,
                "master": mine.master,
                "worker": mine.worker,
                "master_cert": mine.master_cert,
                "worker_cert": mine.worker_cert,
            }
        )
        found.extend(judge.one(policy, plan, node.name) for policy, plan in todo)
    return found


def _spec_of(policies: list[Policy]) -> trim.AccessSpec:
    return trim.merge(trim.access_spec(_cel_sources(p)) for p in policies)


class _Judge:
    """Runs the steps of the module docstring for the subjects of one cluster that share an access spec.

    ``variables`` holds the full facts (``requires`` is looked up there); the CEL context holds only what
    the policies at hand can read (see :mod:`scaleguard.policies.trim`). The variables every subject
    shares (``now``, ``thresholds``, ``cluster``, ``masters``) are converted into CEL once; from one
    subject to the next only its own variables (``_SUBJECT``) are converted again.
    """

    def __init__(self, cluster: ClusterSnapshot, variables: dict[str, Any], spec: trim.AccessSpec) -> None:
        self.cluster = cluster
        self.mode = Mode(cluster.mode)
        self.variables = variables
        self.own_spec = {name: keys for name, keys in spec.items() if name in _SUBJECT}
        self.ctx = cel.Context(variables=trim.trim(variables, spec), functions=dict(FUNCTIONS))

    def use(self, own: dict[str, Any]) -> None:
        """Make ``own`` (values of ``_SUBJECT`` variables) the next subject's."""
        self.variables = {**self.variables, **own}
        self.ctx.update(trim.trim(own, self.own_spec))

    def cluster_policy(self, policy: Policy, plan: _Plan) -> list[Finding]:
        programs = plan.programs
        if programs.for_each is None:
            return [self.one(policy, plan, self.cluster.cluster)]
        try:
            items = programs.for_each.execute(self.ctx)
            if not isinstance(items, list) or not all(isinstance(i, dict) and "name" in i for i in items):
                raise TypeError("for_each must give a list of maps that each have a `name`")
        except Exception as exc:  # noqa: BLE001 - any CEL failure is the policy's error finding
            return [_error(plan, self.cluster.cluster, "for_each", exc)]
        # Per item, the context holds what the policy reads besides the list it iterates: binding
        # `item` next to a whole `cluster.nodes` would reconvert every node for every item.
        item_sources = [s for s in _cel_sources(policy) if s is not policy.for_each]
        spec = trim.access_spec(item_sources)
        per_item = _Judge(self.cluster, self.variables, spec)
        findings = []
        for item in items:
            per_item.use({"item": item})
            findings.append(per_item.one(policy, plan, str(item["name"])))
        return findings

    def one(self, policy: Policy, plan: _Plan, target: str) -> Finding:
        programs = plan.programs
        if self.mode not in policy.modes:
            wanted = " or ".join(m.value for m in policy.modes)
            return plan.finding(
                target,
                Status.NOT_ASSESSED,
                policy.severity,
                f"Not assessed: this check needs a {wanted} audit; this audit is {self.mode.value}.",
                applicable=False,
            )
        stage = "applies_if"
        try:
            if programs.applies_if is not None:
                applies = _tri_state(programs.applies_if.execute(self.ctx), "applies_if")
                if applies is False:
                    reason = policy.not_applicable or "what this policy checks does not exist on this subject"
                    return plan.finding(
                        target, Status.NOT_ASSESSED, policy.severity, f"Not applicable: {reason}", applicable=False
                    )
            missing = [path for path in policy.requires if _lookup(self.variables, path) is None]
            if missing:
                return plan.finding(
                    target,
                    Status.NOT_ASSESSED,
                    policy.severity,
                    _missing_message(missing),
                    evidence={"missing": missing},
                )
            stage = "check"
            verdict = _tri_state(programs.check.execute(self.ctx), "check")
            stage = "let"
            lets = {name: program.execute(self.ctx) for name, program in programs.let.items()}
            stage = "subject"
            subject = programs.subject.execute(self.ctx) if programs.subject is not None else None
            stage = "grades"
            severity = policy.severity
            if verdict is False:
                severity = next(
                    (grade for when, grade in programs.grades if _tri_state(when.execute(self.ctx), "when")),
                    policy.severity,
                )
        except Exception as exc:  # noqa: BLE001 - any CEL failure is the policy's error finding
            return _error(plan, target, stage, exc)
        if verdict is True:
            status, text = Status.PASS, render(policy.pass_message, lets) if policy.pass_message else policy.title
        elif verdict is None:
            status = Status.NOT_ASSESSED
            text = "Could not decide from the collected facts: " + render(policy.message, lets)
        else:
            status = Status.ERROR if policy.fail_status == "error" else Status.FAIL
            text = render(policy.message, lets)
        evidence = {k: v if type(v) in _PLAIN else _jsonable(v) for k, v in lets.items()}
        return plan.finding(
            target, status, severity, text, evidence=evidence, subject=None if subject is None else str(subject)
        )


def _error(plan: _Plan, target: str, stage: str, exc: Exception) -> Finding:
    policy = plan.policy
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return plan.finding(
        target,
        Status.ERROR,
        policy.severity,
        f"Policy {policy.id} could not be evaluated ({stage}): {type(exc).__name__}: {detail}",
        evidence={"stage": stage, "error": detail},
    )


class _Plan:
    """One policy made ready for many subjects: what every finding of it shares."""

    def __init__(self, policy: Policy, cluster: str) -> None:
        self.policy = policy
        self.programs: Programs = policy.programs
        self.shared = {
            "policy": policy.id,
            "name": policy.name,
            "title": policy.title,
            "cluster": cluster,
            "scope": policy.scope.value,
            "remediation": policy.remediation,
            "references": policy.references,
            "waiver": None,
        }

    def finding(
        self,
        target: str,
        status: Status,
        severity: Severity,
        message: str,
        *,
        evidence: dict[str, Any] | None = None,
        subject: str | None = None,
        applicable: bool = True,
    ) -> Finding:
        return Finding.model_validate(
            {
                **self.shared,
                "node": target,
                "status": status,
                "severity": severity,
                "message": message,
                "evidence": evidence or {},
                "subject": subject,
                "applicable": applicable,
            }
        )


def _tri_state(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise TypeError(f"{what} must give true, false or null, not {type(value).__name__} {value!r}")


def _lookup(variables: dict[str, Any], path: str) -> Any:
    current: Any = variables
    for part in path.split("."):
        if type(current) is not dict:
            return None
        current = current.get(part)
    return current


def _missing_message(missing: list[str]) -> str:
    parts = []
    for path in missing:
        source = fact_schema.source_of(path)
        parts.append(f"{path} (from {source})" if source else path)
    return "Not assessed: unknown " + "; ".join(parts) + "."


def _sources(policy: Policy) -> list[str]:
    """Every CEL expression of ``policy`` and its required fact paths."""
    return [*policy.requires, *_cel_sources(policy)]


def _cel_sources(policy: Policy) -> list[str]:
    """The expressions CEL runs for ``policy``. ``requires`` paths are not among them: they are looked up
    in the full Python facts, so keeping them out means a required whole value (``requires:
    [worker_cert]``) is not converted into every node's CEL context for nothing."""
    sources = [policy.check, policy.for_each, policy.applies_if, policy.subject, *policy.let.values()]
    return [s for s in [*sources, *(g.when for g in policy.grades)] if s]


def _mentions(policy: Policy, pattern: re.Pattern[str]) -> bool:
    """Whether any expression (or required fact) of ``policy`` may read what ``pattern`` names."""
    return any(pattern.search(trim.code_of(s)) for s in _sources(policy))


def render(template: str, values: Mapping[str, Any]) -> str:
    """``template`` with ``{name}`` replaced by let values, written for people (null → "unknown")."""
    return template.format_map({k: v if type(v) is str else _text(v) for k, v in values.items()})


def _text(value: Any) -> str:
    if type(value) in (str, int):
        return str(value)
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    return str(value)


def _jsonable(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
