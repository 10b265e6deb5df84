"""Thumbprints: forgiving when matching, strict when judging what SSIS will read."""

from __future__ import annotations

import pytest

from scaleguard.rules.thumbprint import comparable, is_clean, normalize_thumbprint, thumbprint_problems

THUMB = "01D207B300CA662F479BEB884EFE6CE328F77D53"
SPACED = "01 d2 07 b3 00 ca 66 2f 47 9b eb 88 4e fe 6c e3 28 f7 7d 53"


@pytest.mark.parametrize(
    "raw",
    [
        THUMB,
        THUMB.lower(),
        SPACED,
        "\u200e" + SPACED,  # what the certificate dialog's Details tab gives when copied
        "\u200f" + THUMB,
        "\u202a" + THUMB + "\u202c",
        "\u202b\u202d" + THUMB + "\u202e",
        "\ufeff" + THUMB,
        THUMB[:20] + "\u200b" + THUMB[20:],
        "\u00a0" + THUMB + "\t\r\n",
        ":".join(THUMB[i : i + 2] for i in range(0, 40, 2)),
    ],
)
def test_normalize_forgives_copy_and_paste(raw: str) -> None:
    assert normalize_thumbprint(raw) == THUMB


@pytest.mark.parametrize("raw", [None, "", THUMB[:-1], THUMB + "0", "G" + THUMB[1:], "not a thumbprint", "０" * 40])
def test_normalize_rejects_what_is_not_a_thumbprint(raw: str | None) -> None:
    assert normalize_thumbprint(raw) is None


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (THUMB, True),
        (THUMB.lower(), True),
        (SPACED, False),
        ("\u200e" + THUMB, False),
        (THUMB + "\n", False),
        (" " + THUMB, False),
        (THUMB + "0", False),
        ("０" * 40, False),  # full-width digits are not hex digits for SSIS
        (None, False),
    ],
)
def test_is_clean_means_exactly_40_hex_digits(raw: str | None, clean: bool) -> None:
    assert is_clean(raw) is clean


def test_problems_are_explained() -> None:
    assert thumbprint_problems(THUMB) == []
    assert thumbprint_problems(None) == ["missing"]
    assert thumbprint_problems("") == ["empty"]
    assert thumbprint_problems("\u200e" + SPACED) == [
        "contains whitespace",
        "contains invisible characters U+200E",
    ]
    assert thumbprint_problems("ABC") == ["is not 40 hex digits (3 hex digits found)"]
    assert thumbprint_problems(":".join(THUMB[i : i + 2] for i in range(0, 40, 2))) == ["contains ':' separators"]


def test_comparable_names_the_thumbprint_or_keeps_the_text() -> None:
    assert comparable("\u200e" + SPACED) == THUMB
    assert comparable(" not-a-thumbprint ") == "not-a-thumbprint"
    assert comparable(None) == ""
    assert comparable("12 34") != comparable("56 78")  # two malformed values do not both become ""
