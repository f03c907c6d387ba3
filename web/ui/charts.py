"""Line charts as inline SVG, drawn on the server: no chart library, no script needed.

The overview draws them in the page, and `/dashboard/overview.json` carries the same
markup so the page's script can swap them in as they change. Every label is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 600, 150, 44, 20, 8
#: (field in a point, legend label, CSS class): the counts chart and the wait chart.
COUNTS = (("done", "processed", "s-done"), ("retried", "retried", "s-retried"),
          ("rate_limited", "rate-limited", "s-limited"), ("dead", "dead", "s-dead"))
WAITS = (("wait_p50_ms", "wait p50", "s-p50"), ("wait_p95_ms", "wait p95", "s-p95"))
#: The Metrics page's: an actor's runs and failures, and its run time percentiles.
RUNS = (("runs", "runs", "s-done"), ("failed", "failed", "s-dead"))
RUN_TIMES = (("run_p50_ms", "run p50", "s-p50"), ("run_p95_ms", "run p95", "s-p95"),
             ("run_p99_ms", "run p99", "s-p99"))


def _clock(ms: int, resolution: str) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%H:%M" if resolution == "minute" else "%a %H:00")


def _number(value: float, unit: str) -> str:
    if unit == "ms" and value >= 1000:
        return f"{value / 1000:g} s"
    return f"{value:g}{' ms' if unit == 'ms' else ''}"


def _path(values: Sequence[float | None], top: float) -> str:
    """A polyline's points; a missing value (no waits in that bucket) breaks nothing: it
    is drawn at zero."""
    step = (WIDTH - PAD_LEFT) / max(1, len(values) - 1)
    plot = HEIGHT - PAD_BOTTOM - PAD_TOP
    return " ".join(f"{PAD_LEFT + i * step:.1f},{PAD_TOP + plot - (v or 0) / top * plot:.1f}"
                    for i, v in enumerate(values))


def line_chart(points: list[dict[str, Any]], series: Sequence[tuple[str, str, str]], *,
               resolution: str, unit: str = "", chart_id: str = "") -> str:
    """An SVG of `series` over `points` (oldest first), with its axis and a legend that
    gives each series' total (counts) or highest value (waits)."""
    columns = {key: [p.get(key) for p in points] for key, _, _ in series}
    top = max([v for values in columns.values() for v in values if v] or [1])
    lines = "".join(f'<polyline class="{css}" points="{_path(columns[key], top)}"/>'
                    for key, _, css in series)
    first, last = (_clock(points[0]["start"], resolution),
                   _clock(points[-1]["start"], resolution)) if points else ("", "")
    axis = (f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 8}" class="axis" text-anchor="end">'
            f'{html.escape(_number(top, unit))}</text>'
            f'<text x="{PAD_LEFT - 4}" y="{HEIGHT - PAD_BOTTOM}" class="axis" '
            f'text-anchor="end">0</text>'
            f'<text x="{PAD_LEFT}" y="{HEIGHT - 4}" class="axis">{first}</text>'
            f'<text x="{WIDTH}" y="{HEIGHT - 4}" class="axis" text-anchor="end">{last} UTC</text>'
            f'<line x1="{PAD_LEFT}" y1="{HEIGHT - PAD_BOTTOM}" x2="{WIDTH}" '
            f'y2="{HEIGHT - PAD_BOTTOM}" class="grid"/>')
    legend = "".join(
        f'<span class="key {css}" data-series="{key}">{html.escape(label)} '
        f'<b>{html.escape(_summary(columns[key], unit))}</b></span>'
        for key, label, css in series)
    return (f'<figure class="chart" id="{html.escape(chart_id)}"><svg viewBox="0 0 {WIDTH} '
            f'{HEIGHT}" role="img" preserveAspectRatio="none">{axis}{lines}</svg>'
            f'<figcaption>{legend}</figcaption></figure>')


def _summary(values: list[Any], unit: str) -> str:
    if unit == "ms":
        found = [v for v in values if v is not None]
        return f"max {_number(max(found), unit)}" if found else "none"
    return str(int(sum(v or 0 for v in values)))


def charts(series: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The overview's four charts, by element id, from `Timeline.series` per resolution."""
    drawn = {}
    for resolution, data in series.items():
        points = data["points"]
        drawn[f"chart-{resolution}-counts"] = line_chart(
            points, COUNTS, resolution=resolution, chart_id=f"chart-{resolution}-counts")
        drawn[f"chart-{resolution}-waits"] = line_chart(
            points, WAITS, resolution=resolution, unit="ms",
            chart_id=f"chart-{resolution}-waits")
    return drawn


def actor_charts(actor: str, series: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The Metrics page's four charts of one actor, by element id, from
    `Timeline.actor_series` per resolution."""
    drawn = {}
    for resolution, data in series.items():
        found = data["actors"].get(actor)
        points = found["points"] if found else []
        drawn[f"chart-{resolution}-runs"] = line_chart(
            points, RUNS, resolution=resolution, chart_id=f"chart-{resolution}-runs")
        drawn[f"chart-{resolution}-run-times"] = line_chart(
            points, RUN_TIMES, resolution=resolution, unit="ms",
            chart_id=f"chart-{resolution}-run-times")
    return drawn
