"""A scene's request path: pick an experiment per layer, run the layers in order, time each stage."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass

from services.search.bucketing import assign
from services.search.config.model import Experiment, RuntimeConfig, StageKind
from services.search.errors import SceneDisabledError, SceneNotFoundError
from services.search.metrics import SearchMetrics
from services.search.ports import Deps
from services.search.stages.registry import STAGES
from services.search.state import Query, State


@dataclass(frozen=True)
class SearchResult:
    state: State
    experiments: dict[str, str]  # layer -> experiment
    stage_ms: dict[str, float]  # layer -> milliseconds


async def run_scene(
    config: RuntimeConfig,
    query: Query,
    deps: Deps,
    metrics: SearchMetrics,
    *,
    pinned: Mapping[str, str] | None = None,
) -> SearchResult:
    scene = config.scenes.get(query.scene)
    if scene is None:
        raise SceneNotFoundError(f"scene {query.scene!r} is not in the A/B config (have: {', '.join(config.scenes)})")
    if scene.disabled_reason:
        raise SceneDisabledError(f"scene {scene.name!r} is disabled: {scene.disabled_reason}")
    chosen = assign(scene, query.user_id, pinned=pinned if query.debug else None)
    by_stage: dict[StageKind, Experiment] = {scene.layer(name).stage: e for name, e in chosen.items()}  # type: ignore[union-attr]
    state = State(query=query, experiments=by_stage)
    stage_ms: dict[str, float] = {}
    current: Experiment | None = None
    try:
        for layer in scene.layers:
            current = chosen[layer.name]
            if layer.stage == "summary":
                state = _page(state)  # documents are fetched for the page only
            t0 = time.perf_counter()
            state = await STAGES[layer.stage].run(state, current.args, deps)
            elapsed = time.perf_counter() - t0
            stage_ms[layer.name] = round(elapsed * 1000, 3)
            metrics.stage_seconds.labels(scene.name, layer.stage, current.name).observe(elapsed)
        state = _page(state)
    except Exception:
        if current is not None:
            metrics.experiment_errors.labels(scene.name, current.layer, current.name).inc()
        raise
    for layer_name, exp in chosen.items():
        metrics.experiment_requests.labels(scene.name, layer_name, exp.name).inc()
    for layer_name in state.fallbacks:
        metrics.rank_fallbacks.labels(scene.name, layer_name, chosen[layer_name].name).inc()
    if state.missing_summaries:
        metrics.missing_summaries.labels(scene.name).inc(state.missing_summaries)
    return SearchResult(state, {k: v.name for k, v in chosen.items()}, stage_ms)


def _page(state: State) -> State:
    """The requested page of the whole ranked list: rankers (MMR too) rank the full depth, then it is sliced, so
    consecutive pages of one query are consecutive slices of one list (while the depth stays the same)."""
    if state.paged:
        return state
    q = state.query
    end = q.offset + (q.top_k if q.top_k is not None else q.max_top_k)
    # Searching one deeper to find out would change the depth, and so the order, between pages: a list that ends
    # exactly at the page's end has more when a matcher came back full.
    more = len(state.items) > end or (len(state.items) == end and state.matchers_full)
    return dataclasses.replace(state, items=state.items[q.offset : end], paged=True, has_more=more)
