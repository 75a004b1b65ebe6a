"""The evaluation report: per experiment the mean of every metric over the judged queries, latency and failures,
and each experiment compared with the first one (the baseline), as JSON and as one self-contained HTML page."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmsearch.files import write_text_atomic
from offline.eval.metrics import query_metrics
from offline.eval.qrels import Judgement
from offline.eval.runner import ExperimentRun
from offline.eval.stats import compare


def build_report(
    *, scene: str, layer: str, judged: Sequence[Judgement], runs: Sequence[ExperimentRun], ks: Sequence[int], seed: int
) -> dict[str, Any]:
    per_query = {
        run.experiment: [query_metrics(ranked, j.relevant, ks) for ranked, j in zip(run.ranked, judged, strict=True)]
        for run in runs
    }
    names = list(per_query[runs[0].experiment][0])
    experiments: dict[str, Any] = {}
    for run in runs:
        means = {m: float(np.mean([q[m] for q in per_query[run.experiment]])) for m in names}
        lat = np.asarray(run.latency_ms or [float("nan")])
        experiments[run.experiment] = {
            "recall": {str(k): means[f"recall@{k}"] for k in ks},
            "mrr@10": means["mrr@10"],
            "ndcg@10": means["ndcg@10"],
            "latency_ms": {"p50": _num(np.percentile(lat, 50)), "p95": _num(np.percentile(lat, 95))},
            "failed": len(run.failures),
            "failures": run.failures[:20],
        }
    base = runs[0].experiment
    comparisons = {
        run.experiment: {
            m: compare([q[m] for q in per_query[base]], [q[m] for q in per_query[run.experiment]], seed=seed)
            for m in names
        }
        for run in runs[1:]
    }
    return {
        "scene": scene,
        "layer": layer,
        "queries": len(judged),
        "k": list(ks),
        "baseline": base,
        "seed": seed,
        "experiments": experiments,
        "comparisons": comparisons,
    }


def _num(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 2)


def write_json(report: dict[str, Any], path: Path) -> None:
    write_text_atomic(path, json.dumps(report, indent=2) + "\n")


def write_html(report: dict[str, Any], path: Path) -> None:
    """A table and one bar chart per metric (inline SVG), no scripts or external files."""
    exps: dict[str, Any] = report["experiments"]
    metrics = [f"recall@{k}" for k in report["k"]] + ["mrr@10", "ndcg@10"]

    def value(name: str, metric: str) -> float:
        data = exps[name]
        return float(data["recall"][metric.split("@")[1]] if metric.startswith("recall@") else data[metric])

    e = html.escape
    head = "".join(f"<th>{e(m)}</th>" for m in metrics)
    rows = []
    for name, data in exps.items():
        cells = "".join(f"<td>{value(name, m):.3f}{_delta(report, name, m)}</td>" for m in metrics)
        lat = data["latency_ms"]
        rows.append(
            f"<tr><th>{e(name)}</th>{cells}<td>{lat['p50']}</td><td>{lat['p95']}</td><td>{data['failed']}</td></tr>"
        )
    charts = "".join(_bars(m, [(n, value(n, m)) for n in exps]) for m in metrics)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mmsearch eval: {e(report["scene"])} / {e(report["layer"])}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2rem;color:#1d2433}}table{{border-collapse:collapse}}
td,th{{border:1px solid #d6d9e4;padding:.35rem .6rem;text-align:right}}th:first-child{{text-align:left}}
.d{{color:#667;font-size:12px}}figure{{display:inline-block;margin:1rem 1.5rem 0 0}}</style></head><body>
<h1>{e(report["scene"])}: layer {e(report["layer"])}</h1>
<p>{report["queries"]} judged queries; baseline <b>{e(report["baseline"])}</b>. Differences to the baseline with a
95% paired-bootstrap interval and a paired randomisation p-value (seed {report["seed"]}).</p>
<table><tr><th>experiment</th>{head}<th>p50 ms</th><th>p95 ms</th><th>failed</th></tr>{"".join(rows)}</table>
{charts}</body></html>
"""
    write_text_atomic(path, page)


def _delta(report: dict[str, Any], name: str, metric: str) -> str:
    c = report["comparisons"].get(name, {}).get(metric)
    if c is None:
        return ""
    lo, hi = c["ci"]
    return f'<div class="d">{c["diff"]:+.3f} [{lo:+.3f}, {hi:+.3f}] p={c["p"]:.3f}</div>'


def _bars(metric: str, values: list[tuple[str, float]]) -> str:
    width, bar, gap = 320, 22, 8
    height = len(values) * (bar + gap) + 24
    parts = [f'<text x="0" y="14" font-weight="600">{html.escape(metric)}</text>']
    for i, (name, v) in enumerate(values):
        y = 24 + i * (bar + gap)
        w = max(1.0, (width - 130) * max(0.0, min(1.0, v)))
        parts.append(f'<rect x="120" y="{y}" width="{w:.1f}" height="{bar}" fill="#4f46e5"/>')
        parts.append(f'<text x="0" y="{y + 15}">{html.escape(name[:18])}</text>')
        parts.append(f'<text x="{124 + w:.1f}" y="{y + 15}">{v:.3f}</text>')
    svg = f'<svg width="{width + 60}" height="{height}" role="img" aria-label="{html.escape(metric)}">'
    return f"<figure>{svg}{''.join(parts)}</svg></figure>"
