"""A log-log line chart as a standalone SVG, for the benchmarks' pictures (no plotting library in the venv).

Each panel plots series of (x, y) points on log axes with decade grid lines; a series with fewer than one point is
left out, a missing point (a size that failed) breaks nothing: the line joins the points there are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT = 480, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 175, 36, 48


@dataclass
class Panel:
    title: str
    y_label: str
    x_label: str
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _decades(lo: float, hi: float) -> list[float]:
    return [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]


def _label(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _panel(panel: Panel, ox: int) -> list[str]:
    points = [p for pts in panel.series.values() for p in pts if p[0] > 0 and p[1] > 0]
    if not points:
        return [f'<text x="{ox + LEFT}" y="{TOP + 20}">{escape(panel.title)}: no data</text>']
    xs, ys = (
        _decades(min(p[0] for p in points), max(p[0] for p in points)),
        _decades(min(p[1] for p in points), max(p[1] for p in points)),
    )
    if len(ys) < 2:
        ys = [ys[0], ys[0] * 10]
    if len(xs) < 2:
        xs = [xs[0], xs[0] * 10]
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return ox + LEFT + w * (math.log10(x) - math.log10(xs[0])) / (math.log10(xs[-1]) - math.log10(xs[0]))

    def sy(y: float) -> float:
        return TOP + h - h * (math.log10(y) - math.log10(ys[0])) / (math.log10(ys[-1]) - math.log10(ys[0]))

    out = [f'<text x="{ox + LEFT}" y="{TOP - 14}" font-weight="bold">{escape(panel.title)}</text>']
    for x in xs:
        out.append(f'<line x1="{sx(x):.1f}" y1="{TOP}" x2="{sx(x):.1f}" y2="{TOP + h}" stroke="#ddd"/>')
        out.append(f'<text x="{sx(x):.1f}" y="{TOP + h + 16}" text-anchor="middle">{_label(x)}</text>')
    for y in ys:
        out.append(f'<line x1="{ox + LEFT}" y1="{sy(y):.1f}" x2="{ox + LEFT + w}" y2="{sy(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{ox + LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_label(y)}</text>')
    out.append(f'<rect x="{ox + LEFT}" y="{TOP}" width="{w}" height="{h}" fill="none" stroke="#444"/>')
    out.append(
        f'<text x="{ox + LEFT + w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{escape(panel.x_label)}</text>'
    )
    out.append(
        f'<text transform="translate({ox + 14},{TOP + h / 2:.1f}) rotate(-90)" text-anchor="middle">'
        f"{escape(panel.y_label)}</text>"
    )
    legend_y = TOP + 4
    for n, (name, pts) in enumerate(panel.series.items()):
        good = sorted(p for p in pts if p[0] > 0 and p[1] > 0)
        if not good:
            continue
        colour = COLOURS[n % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>' for x, y in good]
        lx = ox + LEFT + w + 10
        out.append(
            f'<line x1="{lx}" y1="{legend_y}" x2="{lx + 16}" y2="{legend_y}" stroke="{colour}" stroke-width="2"/>'
        )
        out.append(f'<text x="{lx + 20}" y="{legend_y + 4}">{escape(name)}</text>')
        legend_y += 16
    return out


def render(panels: list[Panel], title: str) -> str:
    """Panels side by side under one title, as an SVG document."""
    width = WIDTH * len(panels)
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT + 24}" '
        f'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="8" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        '<g transform="translate(0,24)">',
    ]
    for n, panel in enumerate(panels):
        body += _panel(panel, n * WIDTH)
    body += ["</g>", "</svg>"]
    return "\n".join(body) + "\n"
