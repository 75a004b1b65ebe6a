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
from mmsearch.html_report import bar_chart, page
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
    charts = "".join(bar_chart(m, [(n, value(n, m)) for n in exps]) for m in metrics)
    body = f"""<h1>{e(report["scene"])}: layer {e(report["layer"])}</h1>
<p>{report["queries"]} judged queries; baseline <b>{e(report["baseline"])}</b>. Differences to the baseline with a
95% paired-bootstrap interval and a paired randomisation p-value (seed {report["seed"]}).</p>
<table><tr><th>experiment</th>{head}<th>p50 ms</th><th>p95 ms</th><th>failed</th></tr>{"".join(rows)}</table>
{charts}"""
    title = f"mmsearch eval: {report['scene']} / {report['layer']}"
    write_text_atomic(path, page(title, body))


def _delta(report: dict[str, Any], name: str, metric: str) -> str:
    c = report["comparisons"].get(name, {}).get(metric)
    if c is None:
        return ""
    lo, hi = c["ci"]
    return f'<div class="d">{c["diff"]:+.3f} [{lo:+.3f}, {hi:+.3f}] p={c["p"]:.3f}</div>'
