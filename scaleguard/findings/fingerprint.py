"""A finding's identity across runs, so tonight's audit can say what is new and what was fixed.

The identity is what the finding is *about* — policy, cluster, node and subject (e.g. a thumbprint) —
never its message or evidence, which may be reworded or carry run-specific values. Each part is
normalised the way Windows compares it (computer names case-insensitively, thumbprints as bare
upper-case hex), so ``wrk01`` vs ``WRK01`` or a thumbprint pasted with spaces does not turn one
persisting problem into a "resolved" plus a "new" one (checkov #7647 is the cautionary tale of an
identity that is too loose; this one is also not too strict).
"""

from __future__ import annotations

import hashlib
import re

from scaleguard.findings.model import Finding

_SEPARATORS = re.compile("[\\s:\u200e\u200f\ufeff\u202a\u202c]+")
_HEX_RUN = re.compile("[0-9A-Fa-f]+")


def normalize_thumbprint(value: str | None) -> str:
    """A thumbprint as Windows stores it: upper-case hex, separators and U+200E dropped.

    Only for *comparing*; whether the config text itself is well-formed is a policy's business (SO-M01).
    Text that is not hex once separators are gone is returned without them but otherwise untouched.
    """
    if not value:
        return ""
    cleaned = _SEPARATORS.sub("", value)
    return cleaned.upper() if _HEX_RUN.fullmatch(cleaned) else cleaned


def normalize_subject(subject: str | None) -> str:
    """Thumbprint-looking subjects compare as hex; anything else keeps its case (it may be a path)."""
    if not subject:
        return ""
    thumb = normalize_thumbprint(subject)
    if len(thumb) == 40 and _HEX_RUN.fullmatch(thumb):
        return thumb
    return subject.strip()


def fingerprint_parts(policy: str, cluster: str, node: str, subject: str | None) -> str:
    """The text that is hashed; unit separators keep ``("a|b", "c")`` apart from ``("a", "b|c")``."""
    return "\x1f".join(
        (
            policy.strip().upper(),
            cluster.strip().casefold(),
            node.strip().casefold(),
            normalize_subject(subject),
        )
    )


def fingerprint(finding: Finding) -> str:
    """sha256 of (policy, cluster, node, subject); stable across message rewording and evidence changes."""
    text = fingerprint_parts(finding.policy, finding.cluster, finding.node, finding.subject)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
