"""`mmsearch eval`: compare the experiments of one A/B layer on judged queries, through the real search service."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
import httpx
from tqdm import tqdm

from mmsearch.experiments_api import (
    ExperimentsUnavailableError,
    api_key_file_option,
    api_key_headers,
    get_experiments,
)
from mmsearch.settings import LOOPBACK, SEARCH_PORT, load_settings
from offline.errors import OfflineError, reported
from offline.eval.corpus_check import ids_not_in_corpus
from offline.eval.qrels import Judgement, read_jsonl, read_trec
from offline.eval.report import build_report, write_html, write_json
from offline.eval.runner import ExperimentRun, run_experiment


class EvalError(OfflineError):
    pass


def _ints(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: give whole numbers, e.g. 1,5,10") from exc
    if not values or values[0] < 1:
        raise click.BadParameter(f"{text!r}: give whole numbers >= 1, e.g. 1,5,10")
    return values


def _layers(url: str, headers: dict[str, str]) -> dict[str, Any]:
    try:
        scenes: dict[str, Any] = get_experiments(url, headers=headers)["scenes"]
    except ExperimentsUnavailableError as exc:
        raise EvalError(f"{exc}" + ("" if exc.reachable else ": start it, or pass --search-url")) from exc
    return scenes


def _choose(
    scenes: dict[str, Any], scene: str, layer: str | None, experiments: str | None, pins: tuple[str, ...]
) -> tuple[str, list[str], dict[str, str]]:
    if scene not in scenes:
        raise EvalError(f"unknown scene {scene!r}; the service has {', '.join(sorted(scenes))}")
    if scenes[scene]["disabled"]:
        raise EvalError(f"scene {scene!r} is disabled: {scenes[scene]['disabled']}")
    layers: dict[str, dict[str, float]] = scenes[scene]["layers"]
    if layer is None:
        layer = next((name for name in layers if name.startswith("match.")), None)
        if layer is None:
            raise EvalError(f"scene {scene!r} has no match layer; pick one with --layer ({', '.join(layers)})")
    if layer not in layers:
        raise EvalError(f"unknown layer {layer!r} in scene {scene!r}; it has {', '.join(layers)}")
    names = [e.strip() for e in experiments.split(",") if e.strip()] if experiments else list(layers[layer])
    unknown = [n for n in names if n not in layers[layer]]
    if unknown:
        raise EvalError(
            f"unknown experiment(s) {', '.join(unknown)} in layer {layer!r}; it has {', '.join(layers[layer])}"
        )
    fixed: dict[str, str] = {}
    for pin in pins:
        other, sep, exp = pin.partition("=")
        if not sep or other not in layers or exp not in layers[other]:
            raise EvalError(f"--pin {pin!r}: give LAYER=EXPERIMENT of scene {scene!r} (layers: {', '.join(layers)})")
        fixed[other] = exp
    return layer, names, fixed


@click.command("eval")
@click.option("--search-url", default=f"http://{LOOPBACK}:{SEARCH_PORT}", show_default=True)
@click.option("--scene", default="questionAnswer", show_default=True, help="Scene of the A/B config to evaluate.")
@click.option(
    "--qrels",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help='Judged queries: jsonl {"query", "relevant": {"<id>": grade}}, or TREC or BEIR qrels with --topics.',
)
@click.option(
    "--topics",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With TREC or BEIR qrels: a '<qid><TAB><query>' file, or a BEIR queries.jsonl (its unjudged queries are "
    "left out).",
)
@click.option(
    "--layer", default=None, help="The layer whose experiments are compared (default: the scene's match layer)."
)
@click.option(
    "--experiments", default=None, help="Comma-separated; the first is the baseline (default: all, in config order)."
)
@click.option("--pin", "pins", multiple=True, help="Fix another layer: LAYER=EXPERIMENT (repeatable).")
@click.option("--k", "ks", default="1,5,10", show_default=True, help="Cut-offs of Recall@k.")
@click.option("--concurrency", default=4, show_default=True, help="Requests in flight.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap and randomisation test.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="report.json to write.")
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also an HTML page.")
@click.option(
    "--mongo-uri",
    default=None,
    help="MongoDB of the scene's documents, to count judged ids the corpus lacks (default: settings mongo.uri).",
)
@api_key_file_option()
def evaluate(  # noqa: PLR0917 - one parameter per flag
    search_url: str,
    scene: str,
    qrels: Path,
    topics: Path | None,
    layer: str | None,
    experiments: str | None,
    pins: tuple[str, ...],
    ks: str,
    concurrency: int,
    seed: int,
    out: Path,
    html: Path | None,
    mongo_uri: str | None,
    api_key_file: Path | None,
) -> None:
    """Send every judged query once per experiment of one layer (pinned with useDebug), score the answers
    (Recall@k, MRR@10, nDCG@10, latency, failures) and compare each experiment with the first: the mean difference,
    a 95% paired-bootstrap interval and a paired randomisation p-value. Reports are written only when complete."""
    cutoffs = _ints(ks)
    with reported():
        judged: list[Judgement] = read_trec(qrels, topics) if topics else read_jsonl(qrels)
        headers = api_key_headers(api_key_file)
        scenes = _layers(search_url, headers)
        chosen, names, fixed = _choose(scenes, scene, layer, experiments, pins)
        mongo = load_settings().mongo
        if mongo_uri:
            mongo = mongo.model_copy(update={"uri": mongo_uri})
        missing = ids_not_in_corpus(mongo, scenes[scene].get("documents", []), judged)
        runs = asyncio.run(
            _run_all(search_url, scene, judged, chosen, names, fixed, max(10, *cutoffs), concurrency, headers)
        )
        report = build_report(scene=scene, layer=chosen, judged=judged, runs=runs, ks=cutoffs, seed=seed)
        report["corpus"] = _corpus_summary(judged, missing)
        write_json(report, out)
        if html is not None:
            write_html(report, html)
    for name, data in report["experiments"].items():
        recall = ", ".join(f"R@{k} {v:.3f}" for k, v in data["recall"].items())
        click.echo(
            f"{name}: {recall}, MRR@10 {data['mrr@10']:.3f}, nDCG@10 {data['ndcg@10']:.3f}, "
            f"p50 {data['latency_ms']['p50']} ms, failed {data['failed']}"
        )
    corpus = report["corpus"]
    if corpus["judged_ids_not_in_corpus"] is None:
        click.echo(
            f"judged ids not checked against the corpus (MongoDB at {mongo.uri}): see the warning above", err=True
        )
    elif corpus["judged_ids_not_in_corpus"]:
        click.echo(
            f"warning: {corpus['judged_ids_not_in_corpus']} of {corpus['judged_ids']} judged ids are not in the "
            f"corpus (e.g. {', '.join(corpus['examples'])}); {corpus['queries_unfindable']} queries cannot be "
            "answered at all and score as misses",
            err=True,
        )
    click.echo(f"report: {out}" + (f" and {html}" if html else ""))


def _corpus_summary(judged: list[Judgement], missing: set[str] | None) -> dict[str, Any]:
    total = len({d for j in judged for d in j.relevant})
    if missing is None:
        return {"judged_ids": total, "judged_ids_not_in_corpus": None, "queries_unfindable": None, "examples": []}
    unfindable = sum(1 for j in judged if all(d in missing for d in j.relevant))
    return {
        "judged_ids": total,
        "judged_ids_not_in_corpus": len(missing),
        "queries_unfindable": unfindable,
        "examples": sorted(missing)[:5],
    }


async def _run_all(  # noqa: PLR0917 - the run's whole setting
    url: str,
    scene: str,
    judged: list[Judgement],
    layer: str,
    names: list[str],
    fixed: dict[str, str],
    top_k: int,
    concurrency: int,
    headers: dict[str, str],
) -> list[ExperimentRun]:
    runs = []
    limits = httpx.Limits(max_connections=concurrency)
    with tqdm(total=len(judged) * len(names), desc="eval", unit="query") as bar:
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits, headers=headers) as http:
            for name in names:
                runs.append(
                    await run_experiment(
                        http,
                        scene,
                        judged,
                        {**fixed, layer: name},
                        experiment=name,
                        top_k=top_k,
                        concurrency=concurrency,
                        on_done=lambda: bar.update(1),
                    )
                )
    return runs
