"""Charts for the topic pages, as SVG text written by hand: small, deterministic, no plotting library.

A chart is a scatter plot with a logarithmic x axis (multiply-adds or parameters, which span three
orders of magnitude) and a linear y axis (a reported error). Colours follow ``currentColor`` and a
fixed palette, so one file reads in the light and the dark theme; there are no dates, random ids or
floating-point noise (coordinates are rounded to 0.1 px).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

WIDTH, HEIGHT = 720, 440
LEFT, RIGHT, TOP, BOTTOM = 64, 180, 24, 52
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#393b79",
    "#ad494a",
    "#637939",
    "#843c39",
)
# Protocols that compare single models on one view; where a variant reports several numbers the chart
# takes the best under the first of these that it reports.
_GRID = 'stroke="currentColor" stroke-opacity="0.12"'
_INK = 'fill="currentColor"'
_PROTOCOL_ORDER = ("single_crop", "center_crop", "single_scale", None)


@dataclass(frozen=True)
class Point:
    paper: str
    variant: str
    x: float
    y: float


def top1_points(pages: Sequence[Any], dataset: str, axis: str) -> list[Point]:
    """One point per variant with a reported top-1 error on ``dataset`` and a measured ``axis``."""
    points = []
    for page in pages:
        variants = {v.id: v for v in page.variants}
        for variant_id, value in _top1_errors(page.spec, dataset).items():
            variant = variants.get(variant_id)
            if variant is None:
                continue
            x = variant.macs if axis == "macs" else variant.params
            if x > 0:
                points.append(Point(page.spec.name, variant_id, float(x), float(value)))
    return points


def _top1_errors(spec: Any, dataset: str) -> dict[str, float]:
    """Each variant's reported top-1 error (100 − accuracy where a paper reports accuracy)."""
    chosen: dict[str, tuple[int, float]] = {}
    for result in spec.results:
        if result.dataset != dataset or result.metric not in ("top1_error", "top1_accuracy"):
            continue
        if result.split not in (None, "val", "test"):
            continue
        error = result.value if result.metric == "top1_error" else 100.0 - result.value
        rank = _PROTOCOL_ORDER.index(result.protocol) if result.protocol in _PROTOCOL_ORDER else 99
        best = chosen.get(result.variant)
        if best is None or (rank, error) < best:
            chosen[result.variant] = (rank, error)
    return {variant: round(error, 3) for variant, (_, error) in chosen.items()}


def datasets(pages: Sequence[Any]) -> list[str]:
    """Datasets with top-1 results, the one with most results first."""
    counts: dict[str, int] = {}
    for page in pages:
        for result in page.spec.results:
            if result.dataset and result.metric in ("top1_error", "top1_accuracy"):
                counts[result.dataset] = counts.get(result.dataset, 0) + 1
    return sorted(counts, key=lambda name: (-counts[name], name))


def topic_charts(topic: str, pages: Sequence[Any]) -> list[tuple[str, str, str]]:
    """(title, file name, SVG) for a topic; classification plots reported top-1 error against cost."""
    if topic != "classification":
        return []
    charts = []
    for number, dataset in enumerate(datasets(pages)):
        for axis, label in (("macs", "multiply-adds (measured, log scale)"), ("params", "parameters")):
            points = top1_points(pages, dataset, axis)
            if len(points) < 2:
                continue
            title = f"{dataset}: reported top-1 error against {label.split(' (')[0]}"
            name = f"{topic}-{number + 1}-top1-{axis}.svg"
            x_label = label if axis == "macs" else "parameters (measured, log scale)"
            charts.append((title, name, scatter(points, title, x_label, "top-1 error (%, reported)")))
    return charts


def _ticks(low: float, high: float) -> list[float]:
    """Powers of ten and their 2× and 5× between ``low`` and ``high``."""
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for step in (1, 2, 5):
            value = step * 10.0**exponent
            if low <= value <= high:
                ticks.append(value)
    return ticks


def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:g}"


def _n(value: float) -> str:
    return f"{round(value, 1):g}"


def scatter(points: Sequence[Point], title: str, x_label: str, y_label: str) -> str:
    """An SVG scatter plot, log x, linear y, one colour per paper with a legend."""
    xs = [p.x for p in points]
    ys = [p.y for p in points]
    x_low, x_high = math.log10(min(xs)) - 0.08, math.log10(max(xs)) + 0.08
    y_span = max(ys) - min(ys) or 1.0
    y_low, y_high = max(0.0, min(ys) - 0.08 * y_span), max(ys) + 0.08 * y_span
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (math.log10(x) - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return TOP + (y_high - y) / (y_high - y_low) * plot_h

    papers = list(dict.fromkeys(p.paper for p in points))
    colour = {paper: PALETTE[i % len(PALETTE)] for i, paper in enumerate(papers)}
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{e(title)}" class="papers-chart" font-family="sans-serif" font-size="12">',
        f"<title>{e(title)}</title>",
        f'<g stroke="currentColor" stroke-opacity="0.25">'
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none"/></g>',
    ]
    for tick in _ticks(10**x_low, 10**x_high):
        x = _n(px(tick))
        out.append(
            f'<line x1="{x}" x2="{x}" y1="{TOP}" y2="{TOP + plot_h}" {_GRID}/>'
            f'<text x="{x}" y="{TOP + plot_h + 16}" text-anchor="middle" {_INK}>{_si(tick)}</text>'
        )
    step = _nice_step((y_high - y_low) / 6)
    value = math.ceil(y_low / step) * step
    while value <= y_high + 1e-9:
        y = _n(py(value))
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y}" y2="{y}" {_GRID}/>'
            f'<text x="{LEFT - 6}" y="{y}" dy="4" text-anchor="end" {_INK}>{value:g}</text>'
        )
        value = round(value + step, 10)
    out.append(
        f'<text x="{LEFT + plot_w / 2:g}" y="{HEIGHT - 12}" text-anchor="middle" fill="currentColor">'
        f"{e(x_label)}</text>"
        f'<text transform="translate(16 {TOP + plot_h / 2:g}) rotate(-90)" text-anchor="middle" '
        f'fill="currentColor">{e(y_label)}</text>'
    )
    for point in sorted(points, key=lambda p: (p.x, p.y, p.variant)):
        x, y = _n(px(point.x)), _n(py(point.y))
        out.append(
            f'<circle cx="{x}" cy="{y}" r="4.5" fill="{colour[point.paper]}" fill-opacity="0.85">'
            f"<title>{e(point.variant)}: {point.y:g}% at {_si(point.x)}</title></circle>"
        )
    for index, paper in enumerate(papers):
        y = TOP + 8 + index * 18
        out.append(
            f'<circle cx="{WIDTH - RIGHT + 18}" cy="{y}" r="5" fill="{colour[paper]}"/>'
            f'<text x="{WIDTH - RIGHT + 30}" y="{y}" dy="4" fill="currentColor">{e(paper)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _nice_step(raw: float) -> float:
    magnitude = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= raw:
            return step * magnitude
    return 10 * magnitude
