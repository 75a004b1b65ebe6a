"""`SearchService`: one request's path through the search service, and the service's readiness.

The HTTP layer (app.py) parses the request and hands it here: check the query -> build a Query -> run the
scene's layers (pipeline.run_scene: qp, match, rank, summary) -> the reference-shaped response, with its
requestId and which experiment served each layer, plus one exposure log line per request and, for an answered
one, an exposure document queued for MongoDB (outcomes/recorder.py, off the request path).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from mmsearch.settings import Settings
from services.search.api_models import DebugInfo, MatchedChunkModel, SearchItemModel, SearchRequest, SearchResponse
from services.search.bucketing import bucket_of
from services.search.config.manager import ConfigManager, scene_collections
from services.search.config.sources import ConfigSource
from services.search.errors import DependencyUnavailableError, InvalidQueryError, SearchError
from services.search.metrics import SearchMetrics
from services.search.outcomes.exposure import exposure_document
from services.search.outcomes.recorder import ExposureRecorder
from services.search.pipeline import SearchResult, run_scene
from services.search.ports import Deps
from services.search.state import Item, Query

exposure_log = logging.getLogger("mmsearch.exposure")


class SearchService:
    """Everything a request needs, created once per app in the lifespan."""

    def __init__(
        self,
        settings: Settings,
        deps: Deps,
        metrics: SearchMetrics,
        source: ConfigSource,
        exposures: ExposureRecorder,
    ) -> None:
        self.settings = settings
        self.deps = deps
        self.metrics = metrics
        self.manager = ConfigManager(settings, deps.vectors, metrics)
        self.source = source
        self.exposures = exposures

    def check_query(self, text: str) -> str:
        stripped = text.strip()
        if not stripped:
            raise InvalidQueryError("query is empty or whitespace: send some text to search for")
        limit = self.settings.search.max_query_chars
        if len(text) > limit:
            raise InvalidQueryError(f"query is {len(text)} characters long; the limit is {limit}")
        try:
            # JSON allows "\ud800" (a lone surrogate); it is not Unicode text and cannot travel as a protobuf string.
            stripped.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidQueryError(
                f"query holds an unpaired UTF-16 surrogate at character {exc.start}: send valid Unicode text"
            ) from exc
        return stripped

    def scene_corpora(self, scene: str) -> set[str]:
        """The corpora a scene's experiments reach (Milvus collections, MongoDB collections) in the config in
        force; empty for a scene it does not have. A key's corpus patterns are checked against these."""
        cfg = self.manager.current
        return scene_collections(cfg.scenes[scene]) if cfg is not None and scene in cfg.scenes else set()

    async def search(
        self,
        scene: str,
        user_id: str,
        req: SearchRequest,
        image: bytes | None = None,
        *,
        key_id: str | None = None,
    ) -> SearchResponse:
        t0 = time.perf_counter()
        request_id = uuid.uuid4().hex
        status = "error"
        result: SearchResult | None = None
        config = self.manager.current
        try:
            text = self.check_query(req.query) if image is None else None
            if config is None:
                raise DependencyUnavailableError("config", self.manager.source_state)
            cap = self.settings.search.max_top_k
            if req.offset > self.settings.search.max_offset:
                raise InvalidQueryError(
                    f"offset {req.offset} is past the deepest page served (search.max_offset "
                    f"{self.settings.search.max_offset}): refine the query instead"
                )
            query = Query(
                scene=scene,
                user_id=user_id,
                text=text,
                image=image,
                top_k=min(req.top_k, cap) if req.top_k else None,
                offset=req.offset,
                max_top_k=cap,
                filters={k: tuple(v) if isinstance(v, list) else v for k, v in req.filters.items()},
                debug=req.use_debug,
            )
            result = await run_scene(config, query, self.deps, self.metrics, pinned=req.specified_layer_and_experiment)
            status = "ok"
        except SearchError as exc:
            status = type(exc).__name__
            raise
        finally:
            elapsed = time.perf_counter() - t0
            self.metrics.requests.labels(scene, status).inc()
            self.metrics.request_seconds.labels(scene).observe(elapsed)
            exposure_log.info(
                "search",
                extra={
                    "event": "exposure",
                    "request_id": request_id,
                    "user_id": user_id,
                    "scene": scene,
                    "experiments": result.experiments if result else {},
                    "latency_ms": round(elapsed * 1000, 3),
                    "status": status,
                    "hits": len(result.state.items) if result else 0,
                    "config": config.digest if config else None,
                    "key_id": key_id,
                },
            )
        assert config is not None
        items = [item_model(it) for it in result.state.items]
        self.exposures.record(
            exposure_document(
                request_id=request_id,
                user_id=user_id,
                scene=scene,
                experiments=result.experiments,
                pinned_layers=list(req.specified_layer_and_experiment) if req.use_debug else [],
                item_ids=[it.id for it in items],
                offset=req.offset,
                config_digest=config.digest,
                key_id=key_id,
            )
        )
        debug = None
        if req.use_debug:
            scene_cfg = config.scenes[scene]
            debug = DebugInfo(
                stageMs=result.stage_ms,
                totalMs=round((time.perf_counter() - t0) * 1000, 3),
                buckets={la.name: bucket_of(user_id, la.salt) for la in scene_cfg.layers if la.bucketizer == "sha256"},
                configDigest=config.digest,
                configOrigin=config.origin,
                fallbacks=dict(result.state.fallbacks),
            )
        query_model: dict[str, Any] = {"query": req.query} if image is None else {"query": req.query, "image": True}
        return SearchResponse(
            requestId=request_id,
            queryModel=query_model,
            searchItemModels=[items],
            hasMore=result.state.has_more,
            experiments=result.experiments,
            debug=debug,
        )

    def experiments(self) -> dict[str, Any]:
        cfg = self.manager.current
        if cfg is None:
            raise DependencyUnavailableError("config", self.manager.source_state)
        return cfg.overview()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, str] = {}

        async def probe(name: str, coro: Any) -> None:
            try:
                await coro
                checks[name] = "ok"
            except DependencyUnavailableError as exc:
                checks[name] = exc.reason
            except Exception as exc:  # noqa: BLE001 - readiness reports any failure by name
                checks[name] = f"{type(exc).__name__}: {exc}"

        await asyncio.gather(
            probe("tokenizer", self.deps.models.ping_tokenizer()),
            probe("model server", self.deps.models.ping_model_server()),
            probe("milvus", self.deps.vectors.ping()),
            probe("mongodb", self.deps.documents.ping()),
        )
        cfg = self.manager.current
        checks["config"] = "ok" if cfg else f"no config loaded: {self.manager.source_state}"
        not_ready = sorted(k for k, v in checks.items() if v != "ok")
        # Serving a last good config while Consul is away is degraded, not unready: traffic is still answered.
        degraded = [] if self.manager.source_state.startswith("watching") else [self.manager.source_state]
        body: dict[str, Any] = {
            "ready": not not_ready,
            "notReady": not_ready,
            "degraded": degraded,
            "checks": checks,
            "config": {
                "origin": cfg.origin if cfg else None,
                "digest": cfg.digest if cfg else None,
                "source": self.manager.source_state,
                "lastError": self.manager.last_error,
                "warnings": list(cfg.warnings) if cfg else [],
                "scenes": {n: (s.disabled_reason or "enabled") for n, s in cfg.scenes.items()} if cfg else {},
            },
        }
        return not not_ready, body


def item_model(it: Item) -> SearchItemModel:
    final_rank = it.final_ranking_score if it.final_ranking_score is not None else it.final_retrieval_score
    return SearchItemModel(
        id=it.id,
        originalRetrievalScoreMap=dict(it.retrieval_scores),
        finalRetrievalScore=it.final_retrieval_score,
        originalRankingScoreMap=dict(it.ranking_scores),
        finalRankingScore=final_rank,
        score=it.score if it.score is not None else final_rank,
        summary=dict(it.summary) if it.summary is not None else {},
        matchedChunks=[
            MatchedChunkModel(position=c.position, text=c.text, score=c.score, matcher=c.matcher) for c in it.chunks
        ]
        if it.chunks
        else None,
    )
