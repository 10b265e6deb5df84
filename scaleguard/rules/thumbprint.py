"""Certificate thumbprints as people really paste them, and as SSIS really needs them.

Two different questions, kept apart on purpose. :func:`normalize_thumbprint` answers "which certificate
does this mean?" and forgives what copy and paste adds (spaces from the certificate dialog, the invisible
U+200E it puts in front, lower case, colons from openssl). :func:`is_clean` answers "will SSIS accept the
value as written?" (SO-M01/SO-W01): exactly 40 hex digits and nothing else. A value can therefore name a
certificate and still be a finding.
"""

from __future__ import annotations

import re
import unicodedata

_HEX40 = re.compile(r"[0-9A-Fa-f]{40}")
_SEPARATORS = frozenset(" :\t\r\n\u00a0")
_CATEGORIES_TO_DROP = frozenset({"Cf", "Cc", "Zs", "Zl", "Zp"})


def normalize_thumbprint(raw: str | None) -> str | None:
    """40 upper-case hex digits, or ``None`` when ``raw`` does not name a thumbprint at all."""
    if raw is None:
        return None
    if _HEX40.fullmatch(raw):
        return raw.upper()
    kept = "".join(ch for ch in raw if not _is_noise(ch))
    return kept.upper() if _HEX40.fullmatch(kept) else None


def is_clean(raw: str | None) -> bool:
    """True only for exactly 40 ASCII hex digits: no spaces, no invisible characters, nothing else."""
    return raw is not None and _HEX40.fullmatch(raw) is not None


def thumbprint_problems(raw: str | None) -> list[str]:
    """Why a configured thumbprint is not clean, in words a policy message can quote."""
    if raw is None:
        return ["missing"]
    if is_clean(raw):
        return []
    problems: list[str] = []
    if raw == "":
        return ["empty"]
    if any(ch.isspace() for ch in raw):
        problems.append("contains whitespace")
    invisible = sorted(
        {f"U+{ord(ch):04X}" for ch in raw if unicodedata.category(ch) in ("Cf", "Cc") and not ch.isspace()}
    )
    if invisible:
        problems.append("contains invisible characters " + ", ".join(invisible))
    if ":" in raw:
        problems.append("contains ':' separators")
    normalized = normalize_thumbprint(raw)
    if normalized is None:
        hex_digits = sum(ch in "0123456789abcdefABCDEF" for ch in raw)
        problems.append(f"is not 40 hex digits ({hex_digits} hex digits found)")
    return problems


def _is_noise(ch: str) -> bool:
    return ch in _SEPARATORS or unicodedata.category(ch) in _CATEGORIES_TO_DROP


def comparable(raw: str | None) -> str:
    """What two values are compared by: the thumbprint a value names, else its own trimmed text.

    Two malformed values therefore stay different unless they are the same text (turning both into ""
    would make them equal), and ``None`` compares as "".
    """
    return normalize_thumbprint(raw) or (raw or "").strip()
