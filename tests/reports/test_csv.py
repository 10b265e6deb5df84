"""findings.csv: one row per finding, and no cell a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import io
import json

import pandas as pd
import pytest
from report_samples import HOSTILE

from scaleguard.reports.base import ReportContext
from scaleguard.reports.csv_report import COLUMNS, CsvReporter, field, neutralise


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1", "'\t=1"),
        ("\rx", "'\rx"),
        ("   =HYPERLINK(\"http://x\")", "'   =HYPERLINK(\"http://x\")"),
        ("-", "'-"),
        # plain numbers are numbers, not formulas: left alone so they still sort as numbers
        ("-12", "-12"),
        ("+3.5", "+3.5"),
        ("-0.25", "-0.25"),
        # ordinary text, including an = that is not leading
        ("CN=WORKER01", "CN=WORKER01"),
        ("", ""),
        ("worker certificate expires in 20 days", "worker certificate expires in 20 days"),
    ],
)
def test_neutralise(cell: str, expected: str) -> None:
    assert neutralise(cell) == expected


def read(ctx: ReportContext) -> pd.DataFrame:
    data = CsvReporter().render(ctx)
    assert data.startswith(b"\xef\xbb\xbf"), "UTF-8 with BOM, so Excel does not guess ANSI"
    assert b"\r\n" in data
    return pd.read_csv(io.BytesIO(data), encoding="utf-8-sig", dtype=str, keep_default_na=False)


def test_one_row_per_finding_with_the_contract_columns(context: ReportContext) -> None:
    frame = read(context)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == len(context.findings.findings)
    assert sorted(zip(frame["policy"], frame["node"], strict=True)) == sorted(
        (f.policy, f.node) for f in context.findings.findings
    )
    assert list(frame["status"][:4]) == ["error", "fail", "fail", "not_assessed"]


def test_evidence_is_json_and_hostile_cells_are_neutralised(context: ReportContext) -> None:
    frame = read(context)
    row = frame[frame["policy"] == "SO-W10"].iloc[0]
    assert json.loads(row["evidence"]) == {"display_name": HOSTILE, "not_after": "2025-03-21"}
    formula = frame[frame["policy"] == "SO-M07"].iloc[0]["message"]
    assert formula == "'=HYPERLINK(\"http://evil\")"
    for column in COLUMNS:
        for cell in frame[column]:
            assert not cell.lstrip(" ").startswith(("=", "+", "@", "\t", "\r")), (column, cell)


@pytest.mark.parametrize(
    "row",
    [
        ["plain", "CN=WORKER01", ""],
        ["a,b", 'say "hi"', '"', ",", '""'],
        ["line\nbreak", "cr\ronly", "\r\n", "\n"],
        [" lead", "tab\there", "'quoted'", "semi;colon", "nul\x00byte", "\u2028sep", "\x85next"],
        [HOSTILE, "é 😀", '{"a":"b,c"}', "{}"],
    ],
)
def test_fields_are_quoted_as_the_csv_module_quotes_them(row: list[str]) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(row)
    line = ",".join(map(field, row)) + "\r\n"
    assert line == out.getvalue()
    assert next(csv.reader(io.StringIO(line, newline=""))) == row
