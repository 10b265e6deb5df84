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

from scaleguard.findings.model import Finding
from scaleguard.rules.thumbprint import comparable


def fingerprint_parts(policy: str, cluster: str, node: str, subject: str | None) -> str:
    """The text that is hashed; unit separators keep ``("a|b", "c")`` apart from ``("a", "b|c")``."""
    return "\x1f".join(
        (
            policy.strip().upper(),
            cluster.strip().casefold(),
            node.strip().casefold(),
            comparable(subject),
        )
    )


def fingerprint(finding: Finding) -> str:
    """sha256 of (policy, cluster, node, subject); stable across message rewording and evidence changes."""
    text = fingerprint_parts(finding.policy, finding.cluster, finding.node, finding.subject)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
