"""Self-contained HTML report pages (inline CSS and SVG, no scripts, nothing fetched): the page frame and the
horizontal bar chart that `mmsearch eval` and `mmsearch ab report` both draw."""

from __future__ import annotations

import html

_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2rem;color:#1d2433}table{border-collapse:collapse;margin:.5rem 0}"
    "td,th{border:1px solid #d6d9e4;padding:.35rem .6rem;text-align:right}th:first-child{text-align:left}"
    ".d{color:#667;font-size:12px}.flag{color:#b91c1c;font-weight:600}"
    "figure{display:inline-block;margin:1rem 1.5rem 0 0}"
)


def page(title: str, body: str) -> str:
    """`body` is HTML the caller has escaped; the title is escaped here."""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def bar_chart(title: str, values: list[tuple[str, float]]) -> str:
    """One bar per (name, value), values in [0, 1] (scores, rates)."""
    width, bar, gap = 320, 22, 8
    height = len(values) * (bar + gap) + 24
    parts = [f'<text x="0" y="14" font-weight="600">{html.escape(title)}</text>']
    for i, (name, v) in enumerate(values):
        y = 24 + i * (bar + gap)
        w = max(1.0, (width - 130) * max(0.0, min(1.0, v)))
        parts.append(f'<rect x="120" y="{y}" width="{w:.1f}" height="{bar}" fill="#4f46e5"/>')
        parts.append(f'<text x="0" y="{y + 15}">{html.escape(name[:18])}</text>')
        parts.append(f'<text x="{124 + w:.1f}" y="{y + 15}">{v:.3f}</text>')
    svg = f'<svg width="{width + 60}" height="{height}" role="img" aria-label="{html.escape(title)}">'
    return f"<figure>{svg}{''.join(parts)}</svg></figure>"
