"""Waivers: an accepted risk, written down with who accepted it, why, and until when.

Rules that users of peer tools asked for (peer-tools §3.2, InSpec #5260, PSRule #931):

- a waived finding never disappears: it keeps its place in every output with status ``waived`` and
  the waiver (reason, owner, expiry, file:line) attached, so an auditor sees what was accepted;
- a waiver is valid through its ``expires`` date; from the next day it no longer applies, the finding
  counts again, and the expired waiver is itself reported;
- an active waiver that matches no open problem is *stale* (the problem was fixed, or the pattern has
  a typo) and is reported, so waiver files do not silently rot;
- a waiver must expire, and not too far away (``max_days``, 90 by default): a waiver without an expiry,
  or with an expiry beyond the maximum, makes the whole file invalid — exit 2, with the reason — because
  an audit that quietly ignored half a governance file would be worse than one that refuses to run.

The file is YAML::

    max_days: 90            # optional; a CLI option overrides it
    waivers:
      - policy: SO-W13      # id or glob (SO-W1?), case-insensitive
        node: "WRK-0*"      # glob on the computer name; node and/or cluster is required
        cluster: prod
        reason: old certificates are removed in change CHG-1234
        owner: jane.doe
        expires: 2026-09-30
"""

from __future__ import annotations

import fnmatch
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from scaleguard.findings.model import Finding, Status
from scaleguard.safefile import MIB, read_limited

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's composer when PyYAML was built with it (same nodes and line marks, a tenth of the time)."""
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
DEFAULT_MAX_DAYS = 90
WAIVABLE = frozenset({Status.FAIL, Status.ERROR, Status.NOT_ASSESSED})
"""A pass needs no waiver; a waiver that only meets passes is stale."""

_ENTRY_KEYS = frozenset({"policy", "node", "cluster", "reason", "owner", "expires"})
_TOP_KEYS = frozenset({"max_days", "waivers"})


class WaiverError(ValueError):
    """The waiver file is unusable; the CLI maps this to exit code 2 (usage error) and prints it."""


@dataclass(frozen=True)
class Waiver:
    policy: str
    node: str | None
    cluster: str | None
    reason: str
    owner: str
    expires: date
    source: str
    line: int

    @property
    def location(self) -> str:
        return f"{self.source}:{self.line}"

    def expired(self, today: date) -> bool:
        """Valid through the whole ``expires`` day, expired from the next one."""
        return today > self.expires

    def matches(self, finding: Finding) -> bool:
        return (
            _glob(self.policy, finding.policy)
            and (self.node is None or _glob(self.node, finding.node))
            and (self.cluster is None or _glob(self.cluster, finding.cluster))
        )

    def describe(self, today: date) -> dict[str, Any]:
        """The JSON form used in findings.json, on waived findings and in the expired/stale lists."""
        return {
            "policy": self.policy,
            "node": self.node,
            "cluster": self.cluster,
            "reason": self.reason,
            "owner": self.owner,
            "expires": self.expires.isoformat(),
            "days_left": (self.expires - today).days,
            "source": self.location,
        }


def _glob(pattern: str, value: str) -> bool:
    """Case-insensitive: Windows computer names and our policy ids are both compared that way."""
    return fnmatch.fnmatchcase(value.casefold(), pattern.casefold())


@dataclass(frozen=True)
class WaiverSet:
    path: Path
    max_days: int
    waivers: tuple[Waiver, ...]


@dataclass
class WaiverOutcome:
    """What applying a waiver set did; ``expired`` and ``stale`` are warnings for people."""

    applied: int = 0
    active: list[Waiver] = field(default_factory=list)
    expired: list[tuple[Waiver, int]] = field(default_factory=list)
    stale: list[tuple[Waiver, int]] = field(default_factory=list)

    def summary(self, today: date) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "active": len(self.active),
            "expired": [{**w.describe(today), "would_match": n} for w, n in self.expired],
            "stale": [
                {**w.describe(today), "matched_passes": n, "why": _stale_why(n)}
                for w, n in self.stale
            ],
        }

    def warnings(self, today: date) -> list[str]:
        lines = [
            f"waiver {w.location} ({w.policy} {_where(w)}, owner {w.owner}) expired on "
            f"{w.expires.isoformat()}: {n} finding(s) it covered count again"
            for w, n in self.expired
        ]
        lines += [
            f"waiver {w.location} ({w.policy} {_where(w)}, owner {w.owner}) is stale: {_stale_why(n)}"
            for w, n in self.stale
        ]
        return lines


def _stale_why(matched_passes: int) -> str:
    return "the findings it matches now pass" if matched_passes else "it matches no finding of this audit"


def _where(w: Waiver) -> str:
    parts = [f"node {w.node}" if w.node else "", f"cluster {w.cluster}" if w.cluster else ""]
    return "on " + ", ".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------- loading


def load_waivers(path: Path, *, today: date, max_days: int | None = None) -> WaiverSet:
    """Read and check a waiver file; every problem is reported at once, as ``file:line: reason``.

    ``max_days`` (from the CLI) overrides the file's own ``max_days``, so an organisation's pipeline can
    cap what a waiver author may grant.
    """
    try:
        text = read_limited(path, 64 * MIB, named=True).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise WaiverError(f"{path}: cannot read the waiver file: {exc}") from exc
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise WaiverError(f"{path}:{line}: not valid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise WaiverError(f"{path}: not valid YAML: {exc}") from exc
    return _read_root(path, root, today=today, cli_max_days=max_days)


def _read_root(path: Path, root: yaml.Node | None, *, today: date, cli_max_days: int | None) -> WaiverSet:
    errors: list[str] = []
    entries: list[yaml.Node] = []
    file_max: int | None = None
    if root is None:  # an empty file: no waivers, nothing to reject
        pass
    elif isinstance(root, yaml.SequenceNode):
        entries = list(root.value)
    elif isinstance(root, yaml.MappingNode):
        for key, value in _pairs(path, root, errors):
            if key not in _TOP_KEYS:
                errors.append(
                    f"{path}:{_line(value)}: unknown top-level key {key!r} "
                    f"(expected {', '.join(sorted(_TOP_KEYS))})"
                )
            elif key == "max_days":
                file_max = _positive_int(path, value, errors)
            elif isinstance(value, yaml.SequenceNode):
                entries = list(value.value)
            elif not _is_null(value):
                errors.append(f"{path}:{_line(value)}: 'waivers' must be a list of waivers")
    else:
        errors.append(f"{path}:{_line(root)}: expected a mapping with 'waivers:' or a list of waivers")
    if cli_max_days is not None and cli_max_days <= 0:
        errors.append(f"{path}: the maximum waiver duration must be a positive number of days")
    max_days = cli_max_days if cli_max_days is not None else file_max or DEFAULT_MAX_DAYS
    waivers = [w for node in entries if (w := _read_entry(path, node, today, max_days, errors)) is not None]
    if errors:
        raise WaiverError("invalid waiver file:\n  " + "\n  ".join(errors))
    return WaiverSet(path=path, max_days=max_days, waivers=tuple(waivers))


def _read_entry(path: Path, node: yaml.Node, today: date, max_days: int, errors: list[str]) -> Waiver | None:
    line = _line(node)
    if not isinstance(node, yaml.MappingNode):
        errors.append(
            f"{path}:{line}: a waiver must be a mapping (policy, node/cluster, reason, owner, expires)"
        )
        return None
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    before = len(errors)
    for key, value in _pairs(path, node, errors):
        if key not in _ENTRY_KEYS:
            errors.append(
                f"{path}:{_line(value)}: unknown waiver key {key!r} "
                f"(expected {', '.join(sorted(_ENTRY_KEYS))})"
            )
            continue
        values[key] = _scalar(value)
        lines[key] = _line(value)
    texts: dict[str, str | None] = {}
    for key in ("policy", "node", "cluster", "reason", "owner"):
        raw = values.get(key)
        if raw is not None and not isinstance(raw, str | int):
            errors.append(f"{path}:{lines[key]}: {key} must be text")
            raw = None
        texts[key] = str(raw).strip() if raw is not None and str(raw).strip() else None
    errors.extend(
        f"{path}:{line}: waiver has no {key}" for key in ("policy", "reason", "owner") if not texts[key]
    )
    if texts["node"] is None and texts["cluster"] is None:
        errors.append(
            f"{path}:{line}: waiver needs a node and/or cluster pattern (use '*' to mean every one)"
        )
    expires = _expiry(path, values.get("expires"), lines.get("expires", line), today, max_days, errors)
    if len(errors) > before or expires is None:
        return None
    assert texts["policy"] and texts["reason"] and texts["owner"]
    return Waiver(
        policy=texts["policy"],
        node=texts["node"],
        cluster=texts["cluster"],
        reason=texts["reason"],
        owner=texts["owner"],
        expires=expires,
        source=str(path),
        line=line,
    )


def _expiry(path: Path, raw: Any, line: int, today: date, max_days: int, errors: list[str]) -> date | None:
    if raw is None:
        errors.append(
            f"{path}:{line}: waiver has no expiry: 'expires: YYYY-MM-DD' is required "
            f"(at most {max_days} days ahead)"
        )
        return None
    if isinstance(raw, datetime):
        raw = raw.date()
    elif isinstance(raw, str):
        with suppress(ValueError):
            raw = date.fromisoformat(raw.strip())
    if not isinstance(raw, date):
        shown = {yaml.SequenceNode: "a YAML sequence", yaml.MappingNode: "a YAML mapping"}.get(type(raw), repr(raw))
        errors.append(f"{path}:{line}: expires {shown} is not a date (YYYY-MM-DD)")
        return None
    ahead = (raw - today).days
    if ahead > max_days:
        errors.append(
            f"{path}:{line}: expires {raw.isoformat()} is {ahead} days away; waivers may last at most "
            f"{max_days} days (max_days)"
        )
        return None
    return raw


def _pairs(path: Path, node: yaml.MappingNode, errors: list[str]) -> list[tuple[str, yaml.Node]]:
    seen: set[str] = set()
    out = []
    for key_node, value in node.value:
        key = str(key_node.value)
        if key in seen:
            errors.append(f"{path}:{_line(key_node)}: duplicate key {key!r}")
            continue
        seen.add(key)
        out.append((key, value))
    return out


def _scalar(node: yaml.Node) -> Any:
    """A value as YAML's safe loader types it (dates become ``date``); lists and mappings are refused.

    One constructor serves every scalar (a loader per value cost a reader, scanner and parser each: for a
    20,000-waiver file, most of its 16 s and 600 MiB); its memo of constructed nodes is emptied each time.
    """
    if not isinstance(node, yaml.ScalarNode):
        return node  # reported by the caller as "must be text" / "not a date"
    _CONSTRUCTOR.constructed_objects.clear()
    return _CONSTRUCTOR.construct_object(node, deep=True)


def _positive_int(path: Path, node: yaml.Node, errors: list[str]) -> int | None:
    value = _scalar(node)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        errors.append(f"{path}:{_line(node)}: max_days must be a positive whole number of days")
        return None
    return value


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and _scalar(node) is None


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


# --------------------------------------------------------------------------------------------- applying


def apply_waivers(findings: list[Finding], waivers: WaiverSet, *, today: date) -> WaiverOutcome:
    """Mark the findings active waivers cover as ``waived``; report expired and stale waivers.

    The first matching active waiver (file order) is the one recorded on a finding; every waiver that
    matches an open problem counts as used, so only a waiver with no effect at all is called stale.
    """
    outcome = WaiverOutcome()
    active = [w for w in waivers.waivers if not w.expired(today)]
    outcome.active = active
    hits = dict.fromkeys(active, 0)
    pass_hits = dict.fromkeys(active, 0)
    for finding in findings:
        matching = [w for w in active if w.matches(finding)]
        if not matching:
            continue
        if finding.status in WAIVABLE:
            for w in matching:
                hits[w] += 1
            finding.waiver = {**matching[0].describe(today), "original_status": finding.status.value}
            finding.status = Status.WAIVED
            outcome.applied += 1
        elif finding.status is Status.PASS:
            for w in matching:
                pass_hits[w] += 1
    for w in waivers.waivers:
        if w.expired(today):
            outcome.expired.append((w, sum(1 for f in findings if f.status in WAIVABLE and w.matches(f))))
        elif hits[w] == 0:
            outcome.stale.append((w, pass_hits[w]))
    return outcome
