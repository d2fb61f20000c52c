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

WIDTH, PLOT_HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 24, 52
LEGEND_COLUMNS, LEGEND_ROW = 3, 18
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)
MARKERS = ("circle", "square", "triangle", "diamond")
"""Paired with the palette (colour and marker change together), so 14 papers stay apart."""
_GRID = 'stroke="currentColor" stroke-opacity="0.12"'
_INK = 'fill="currentColor"'


@dataclass(frozen=True)
class Point:
    paper: str
    variant: str
    x: float
    y: float


def single_model(result: Any) -> bool:
    """Whether a result is one model's: no ensemble, no averaged models, not marked inconsistent."""
    conditions = result.conditions or {}
    models = conditions.get("models", 1)
    return (
        models in (1, None) and "ensemble" not in conditions and getattr(result, "inconsistent", None) is None
    )


def top1_points(pages: Sequence[Any], dataset: str, protocol: str | None, axis: str = "macs") -> list[Point]:
    """One point per variant with a single model's reported top-1 error on ``dataset`` under
    ``protocol`` (the lowest where the paper reports several, at other scales) and a measured ``axis``."""
    points = []
    for page in pages:
        variants = {v.id: v for v in page.variants}
        for variant_id, value in _top1_errors(page.spec, dataset, protocol).items():
            variant = variants.get(variant_id)
            if variant is None:
                continue
            x = variant.macs if axis == "macs" else variant.params
            if x > 0:
                points.append(Point(page.spec.name, variant_id, float(x), float(value)))
    return points


def _top1(result: Any, dataset: str) -> bool:
    return (
        result.dataset == dataset
        and result.metric in ("top1_error", "top1_accuracy", "error", "accuracy")
        and result.split in (None, "val", "test")
        and single_model(result)
    )


def _top1_errors(spec: Any, dataset: str, protocol: str | None) -> dict[str, float]:
    """Each variant's lowest reported top-1 error (100 − accuracy where a paper reports accuracy)."""
    chosen: dict[str, float] = {}
    for result in spec.results:
        if not _top1(result, dataset) or result.protocol != protocol:
            continue
        error = result.value if "error" in result.metric else 100.0 - result.value
        chosen[result.variant] = min(error, chosen.get(result.variant, error))
    return {variant: round(error, 3) for variant, error in chosen.items()}


def protocols(pages: Sequence[Any]) -> list[tuple[str, str | None]]:
    """(dataset, protocol) pairs with single-model top-1 results, those with most results first."""
    counts: dict[tuple[str, str | None], int] = {}
    for page in pages:
        for result in page.spec.results:
            if result.dataset and _top1(result, result.dataset):
                key = (result.dataset, result.protocol)
                counts[key] = counts.get(key, 0) + 1
    return sorted(counts, key=lambda key: (-counts[key], key[0], key[1] or ""))


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def topic_charts(topic: str, pages: Sequence[Any]) -> list[tuple[str, str, str]]:
    """(title, file name, SVG) for a topic: classification plots each single model's reported top-1
    error against its measured multiply-adds, one chart per dataset and test protocol."""
    if topic != "classification":
        return []
    charts = []
    for dataset, protocol in protocols(pages):
        points = top1_points(pages, dataset, protocol)
        if len(points) < 3:
            continue
        how = protocol.replace("_", " ") if protocol else "protocol not given"
        title = f"{dataset}, {how}: reported top-1 error against multiply-adds"
        name = f"{topic}-{_slug(dataset)}-{_slug(how)}.svg"
        x_label = "multiply-adds (measured, log scale)"
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


def _marker(kind: str, x: str, y: str, colour: str, size: float = 4.5) -> str:
    """The opening tag of a point's marker (left open for a tooltip), one shape per ``kind``."""
    cx, cy = float(x), float(y)
    if kind == "square":
        side = _n(2 * size)
        return f'<rect x="{_n(cx - size)}" y="{_n(cy - size)}" width="{side}" height="{side}" fill="{colour}"'
    if kind in ("triangle", "diamond"):
        r = size * 1.2
        corners = (
            ((cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8))
            if kind == "triangle"
            else ((cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy))
        )
        points = " ".join(f"{_n(a)},{_n(b)}" for a, b in corners)
        return f'<polygon points="{points}" fill="{colour}"'
    return f'<circle cx="{x}" cy="{y}" r="{_n(size)}" fill="{colour}"'


def scatter(points: Sequence[Point], title: str, x_label: str, y_label: str) -> str:
    """An SVG scatter plot, log x, linear y, each point labelled with its variant, one colour and
    marker per paper with a legend under the plot."""
    xs = [p.x for p in points]
    ys = [p.y for p in points]
    x_low, x_high = math.log10(min(xs)) - 0.08, math.log10(max(xs)) + 0.2
    y_span = max(ys) - min(ys) or 1.0
    y_low, y_high = max(0.0, min(ys) - 0.08 * y_span), max(ys) + 0.08 * y_span
    plot_w, plot_h = WIDTH - LEFT - RIGHT, PLOT_HEIGHT - TOP - BOTTOM
    papers = list(dict.fromkeys(p.paper for p in points))
    rows = math.ceil(len(papers) / LEGEND_COLUMNS)
    height = PLOT_HEIGHT + rows * LEGEND_ROW + 8

    def px(x: float) -> float:
        return LEFT + (math.log10(x) - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return TOP + (y_high - y) / (y_high - y_low) * plot_h

    style = {
        paper: (PALETTE[i % len(PALETTE)], MARKERS[(i // len(PALETTE) + i) % len(MARKERS)])
        for i, paper in enumerate(papers)
    }
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
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
        f'<text x="{LEFT + plot_w / 2:g}" y="{PLOT_HEIGHT - 12}" text-anchor="middle" fill="currentColor">'
        f"{e(x_label)}</text>"
        f'<text transform="translate(16 {TOP + plot_h / 2:g}) rotate(-90)" text-anchor="middle" '
        f'fill="currentColor">{e(y_label)}</text>'
    )
    placed: list[tuple[float, float, float]] = []  # labels drawn so far: left, right, baseline
    for point in sorted(points, key=lambda p: (p.x, p.y, p.variant)):
        x, y = _n(px(point.x)), _n(py(point.y))
        colour, kind = style[point.paper]
        right = float(x) > LEFT + 0.7 * plot_w
        line = _free_line(point.variant, float(x), float(y), right, placed)
        out.append(
            f'{_marker(kind, x, y, colour)} fill-opacity="0.85" class="papers-point">'
            f"<title>{e(point.variant)}: {point.y:g}% at {_si(point.x)}</title></{_tag(kind)}>"
            f"{_label(point.variant, float(x), line, right=right)}"
        )
    column_width = (WIDTH - LEFT) / LEGEND_COLUMNS
    for index, paper in enumerate(papers):
        column, row = index % LEGEND_COLUMNS, index // LEGEND_COLUMNS
        x = LEFT + column * column_width
        y = PLOT_HEIGHT + 4 + row * LEGEND_ROW
        colour, kind = style[paper]
        out.append(
            f"{_marker(kind, _n(x + 6), _n(y), colour, 5)}/>"
            f'<text x="{_n(x + 16)}" y="{y}" dy="4" fill="currentColor">{e(paper)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _free_line(text: str, x: float, y: float, right: bool, placed: list[tuple[float, float, float]]) -> str:
    """A baseline for a point's label that overlaps no label drawn before (nearest first), recorded."""
    width = 5.6 * len(text)  # about, at font-size 10
    left = x - 7 - width if right else x + 7
    for shift in (0, -11, 11, -22, 22, -33, 33):
        line = y + shift
        if all(
            line - other >= 11 or other - line >= 11 or left >= end or left + width <= start
            for start, end, other in placed
        ):
            break
    else:
        line = y
    placed.append((left, left + width, line))
    return _n(line)


def _label(text: str, x: float, y: str, *, right: bool) -> str:
    """A point's label beside it: to its left near the plot's right edge, so it stays inside."""
    anchor = f'x="{_n(x - 7)}" text-anchor="end"' if right else f'x="{_n(x + 7)}"'
    label = html.escape(text)
    return f'<text {anchor} y="{y}" dy="3.5" font-size="10" {_INK} fill-opacity="0.8">{label}</text>'


def _tag(kind: str) -> str:
    return {"square": "rect", "triangle": "polygon", "diamond": "polygon"}.get(kind, "circle")


def _nice_step(raw: float) -> float:
    magnitude = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= raw:
            return step * magnitude
    return 10 * magnitude
