"""The trend chart of report.html: failing findings (fail + error) over the last runs of the same clusters.

Drawn as inline SVG from the history the audit recorded (``since_previous.trend`` in findings.json):
no script, no font file, no network, readable without colour (each point is labelled with its count in a
``<title>``, and the chart has an ``aria-label`` that says the whole series in words).
"""

from __future__ import annotations

from html import escape
from typing import Any

from markupsafe import Markup

WIDTH = 560
HEIGHT = 140
PAD_LEFT = 36
PAD_RIGHT = 12
PAD_TOP = 12
PAD_BOTTOM = 28


def trend_svg(points: list[dict[str, Any]]) -> Markup | None:
    """The chart, or None when fewer than two runs exist (one point is not a trend)."""
    series = [(str(p.get("at", ""))[:10], int(p.get("failing", 0))) for p in points if isinstance(p, dict)]
    if len(series) < 2:
        return None
    top = max(max(v for _, v in series), 1)
    span_x = WIDTH - PAD_LEFT - PAD_RIGHT
    span_y = HEIGHT - PAD_TOP - PAD_BOTTOM

    def x(i: int) -> float:
        return PAD_LEFT + span_x * i / (len(series) - 1)

    def y(value: int) -> float:
        return PAD_TOP + span_y * (1 - value / top)

    coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v) in enumerate(series))
    parts = [
        f'<svg class="trend" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'aria-label="{escape(_words(series))}" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{PAD_LEFT}" y1="{y(0):.1f}" x2="{WIDTH - PAD_RIGHT}" y2="{y(0):.1f}" stroke="#888"/>',
        f'<text x="{PAD_LEFT - 6}" y="{y(top) + 4:.1f}" text-anchor="end" font-size="11">{top}</text>',
        f'<text x="{PAD_LEFT - 6}" y="{y(0) + 4:.1f}" text-anchor="end" font-size="11">0</text>',
        f'<polyline points="{coords}" fill="none" stroke="#b3261e" stroke-width="2"/>',
    ]
    for i, (day, value) in enumerate(series):
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="3" fill="#b3261e">'
            f"<title>{escape(day)}: {value} failing</title></circle>"
        )
    first, last = series[0][0], series[-1][0]
    parts.append(f'<text x="{PAD_LEFT}" y="{HEIGHT - 8}" font-size="11">{escape(first)}</text>')
    parts.append(
        f'<text x="{WIDTH - PAD_RIGHT}" y="{HEIGHT - 8}" text-anchor="end" font-size="11">{escape(last)}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))  # every value above is a number or escaped text


def _words(series: list[tuple[str, int]]) -> str:
    values = [v for _, v in series]
    return (
        f"Failing findings over the last {len(series)} runs, {series[0][0]} to {series[-1][0]}: "
        + ", ".join(str(v) for v in values)
    )
