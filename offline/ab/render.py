"""`mmsearch ab report` as a terminal table or a self-contained HTML page (the JSON is report.py's dict)."""

from __future__ import annotations

import html
from typing import Any

from mmsearch.html_report import bar_chart, page

_COLUMNS = ("experiment", "users", "exposures", "clicks", "CTR [95% CI]", "diff [95% CI]", "MRR 1st click")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def _cells(name: str, row: dict[str, Any]) -> list[str]:
    ci = row["ctr_ci"]
    ctr = "-" if row["ctr"] is None else f"{_pct(row['ctr'])} [{_pct(ci[0])}, {_pct(ci[1])}]"
    diff = row["diff"]
    d = "(baseline)"
    if diff is not None:
        lo, hi = diff["ci"]
        d = f"{diff['ctr'] * 100:+.2f} pp [{lo * 100:+.2f}, {hi * 100:+.2f}]"
    mrr = "-" if row["mrr_first_click"] is None else f"{row['mrr_first_click']:.3f}"
    return [name, str(row["users"]), str(row["exposures"]), str(row["clicks"]), ctr, d, mrr]


def _srm_line(srm: dict[str, Any]) -> str:
    if srm["p"] is None:
        return f"SRM: {srm.get('note', 'not computed')}"
    verdict = "MISMATCH: the split is broken, do not trust differences" if srm["flag"] else "ok"
    return f"SRM ({srm['unit']} against the configured ratios): p = {srm['p']:.3g} {verdict}"


def table(report: dict[str, Any]) -> str:
    out = [
        f"scene {report['scene']}: {report['since']} .. {report['until']}",
        f"{report['requests']} searches; {report['pinned_requests']} pinned with useDebug left out",
    ]
    for layer, rows in report["layers"].items():
        grid = [list(_COLUMNS)] + [_cells(name, row) for name, row in rows.items()]
        widths = [max(len(r[i]) for r in grid) for i in range(len(_COLUMNS))]
        out.append("")
        out.append(f"layer {layer}")
        for r in grid:
            cells = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            out.append("  " + "  ".join(cells))
        out.append("  " + _srm_line(report["srm"][layer]))
    return "\n".join(out)


def html_page(report: dict[str, Any]) -> str:
    e = html.escape
    parts = [
        f"<h1>A/B outcomes: {e(report['scene'])}</h1>",
        f"<p>{e(report['since'])} to {e(report['until'])}: {report['requests']} searches; "
        f"{report['pinned_requests']} pinned with useDebug left out. CTR = searches with a click / searches, "
        "with a 95% Wilson interval; differences to the layer's first experiment with Newcombe's interval.</p>",
    ]
    for layer, rows in report["layers"].items():
        head = "".join(f"<th>{e(c)}</th>" for c in _COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in _cells(n, r)) + "</tr>" for n, r in rows.items())
        srm = report["srm"][layer]
        cls = ' class="flag"' if srm["flag"] else ""
        parts.append(f"<h2>layer {e(layer)}</h2><table><tr>{head}</tr>{body}</table><p{cls}>{e(_srm_line(srm))}</p>")
        parts.append(bar_chart(f"{layer}: CTR", [(n, r["ctr"] or 0.0) for n, r in rows.items()]))
    return page(f"mmsearch ab report: {report['scene']}", "\n".join(parts))
