"""Sends every judged query once per experiment through the real HTTP API, the layer under test pinned with
`useDebug` + `specifiedLayerAndExperiment`, and keeps what came back: the ranked ids and the latency. A request
that fails is counted and scored as a miss (an empty list), never dropped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from offline.eval.qrels import Judgement

SCENE_PATHS = {"questionAnswer": "/qa/user/{user}", "textToImage": "/t2i/user/{user}"}
EVAL_USER = "mmsearch-eval"  # one user for every request: layers that are not pinned get the same experiment


def scene_path(scene: str) -> str:
    return SCENE_PATHS.get(scene, "/scene/" + scene + "/user/{user}").format(user=EVAL_USER)


@dataclass
class ExperimentRun:
    experiment: str
    ranked: list[list[str]]  # per judged query, in the qrels' order; [] when the request failed
    latency_ms: list[float] = field(default_factory=list)  # successful requests only
    failures: list[str] = field(default_factory=list)  # "query: reason", for the report


async def run_experiment(
    http: httpx.AsyncClient,
    scene: str,
    judged: Sequence[Judgement],
    pins: dict[str, str],
    *,
    experiment: str,
    top_k: int,
    concurrency: int,
    on_done: Callable[[], None] = lambda: None,
) -> ExperimentRun:
    run = ExperimentRun(experiment, [[] for _ in judged])
    path = scene_path(scene)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, query: str) -> None:
        body: dict[str, Any] = {
            "query": query,
            "topK": top_k,
            "useDebug": True,
            "specifiedLayerAndExperiment": pins,
        }
        async with gate:
            t0 = time.perf_counter()
            try:
                response = await http.post(path, json=body)
            except httpx.HTTPError as exc:
                run.failures.append(f"{query[:60]}: {type(exc).__name__}: {exc}")
                return
            finally:
                on_done()
            elapsed = (time.perf_counter() - t0) * 1000
        if response.status_code != 200:
            run.failures.append(f"{query[:60]}: HTTP {response.status_code} {response.text[:200]}")
            return
        items = response.json()["searchItemModels"][0]
        run.ranked[i] = [str(item["id"]) for item in items]
        run.latency_ms.append(elapsed)

    await asyncio.gather(*(one(i, j.query) for i, j in enumerate(judged)))
    return run
