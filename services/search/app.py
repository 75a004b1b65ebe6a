"""The search service's HTTP app: `create_app(settings)`; the lifespan creates the clients and the config watcher.

Request path: route -> parse body into SearchRequest -> `SearchService.search` -> pipeline.run_scene (qp, match,
rank, summary) -> reference-shaped response + which experiment served each layer + one exposure log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Path, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from mmsearch.settings import Settings
from services.search.adapters import GrpcQueryModels, MilvusVectorStore, MongoDocumentStore
from services.search.api_models import DebugInfo, ErrorBody, SearchItemModel, SearchRequest, SearchResponse
from services.search.bucketing import bucket_of
from services.search.config_manager import ConfigManager
from services.search.config_sources import ConfigSource, make_source
from services.search.errors import (
    ConfigError,
    DependencyUnavailableError,
    InvalidQueryError,
    SceneDisabledError,
    SceneNotFoundError,
    SearchError,
)
from services.search.metrics import SearchMetrics
from services.search.pipeline import SearchResult, run_scene
from services.search.ports import Deps
from services.search.state import Item, Query

log = logging.getLogger(__name__)
exposure_log = logging.getLogger("mmsearch.exposure")

SCENE_QA = "questionAnswer"
SCENE_T2I = "textToImage"
SCENE_I2I = "imageToImage"
IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp"}
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"RIFF", b"BM")
UserId = Annotated[str, Path(min_length=1, max_length=128, description="Caller's user id (bucketing is sticky on it).")]


def _service(request: Request) -> SearchService:
    svc: SearchService = request.app.state.service
    return svc


class SearchService:
    """Everything a request needs, created once per app in the lifespan."""

    def __init__(self, settings: Settings, deps: Deps, metrics: SearchMetrics, source: ConfigSource) -> None:
        self.settings = settings
        self.deps = deps
        self.metrics = metrics
        self.manager = ConfigManager(settings, deps.vectors, metrics)
        self.source = source

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

    async def search(self, scene: str, user_id: str, req: SearchRequest, image: bytes | None = None) -> SearchResponse:
        t0 = time.perf_counter()
        status = "error"
        result: SearchResult | None = None
        config = self.manager.current
        try:
            text = self.check_query(req.query) if image is None else None
            if config is None:
                raise DependencyUnavailableError("config", self.manager.source_state)
            top_k = min(req.top_k or self.settings.search.max_top_k, self.settings.search.max_top_k)
            query = Query(
                scene=scene,
                user_id=user_id,
                text=text,
                image=image,
                top_k=top_k,
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
                    "user_id": user_id,
                    "scene": scene,
                    "experiments": result.experiments if result else {},
                    "latency_ms": round(elapsed * 1000, 3),
                    "status": status,
                    "hits": len(result.state.items) if result else 0,
                    "config": config.digest if config else None,
                },
            )
        assert config is not None
        items = [_item_model(it) for it in result.state.items]
        debug = None
        if req.use_debug:
            scene_cfg = config.scenes[scene]
            debug = DebugInfo(
                stageMs=result.stage_ms,
                totalMs=round((time.perf_counter() - t0) * 1000, 3),
                buckets={la.name: bucket_of(user_id, la.salt) for la in scene_cfg.layers if la.bucketizer == "sha256"},
                configDigest=config.digest,
                configOrigin=config.origin,
            )
        query_model: dict[str, Any] = {"query": req.query} if image is None else {"query": req.query, "image": True}
        return SearchResponse(
            queryModel=query_model, searchItemModels=[items], experiments=result.experiments, debug=debug
        )

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
                "scenes": {n: (s.disabled_reason or "enabled") for n, s in cfg.scenes.items()} if cfg else {},
            },
        }
        return not not_ready, body


Svc = Annotated[SearchService, Depends(_service)]


def _item_model(it: Item) -> SearchItemModel:
    final_rank = it.final_ranking_score if it.final_ranking_score is not None else it.final_retrieval_score
    return SearchItemModel(
        id=it.id,
        originalRetrievalScoreMap=dict(it.retrieval_scores),
        finalRetrievalScore=it.final_retrieval_score,
        originalRankingScoreMap=dict(it.ranking_scores),
        finalRankingScore=final_rank,
        score=it.score if it.score is not None else final_rank,
        summary=dict(it.summary) if it.summary is not None else {},
    )


def _error(status: int, kind: str, message: str, dependency: str | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=kind, message=message, dependency=dependency).model_dump(), status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SearchError)
    async def _search_error(request: Request, exc: SearchError) -> JSONResponse:
        if isinstance(exc, DependencyUnavailableError):
            return _error(503, "dependency_unavailable", exc.message, exc.dependency)
        kinds = {
            InvalidQueryError: "invalid_query",
            SceneNotFoundError: "unknown_scene",
            SceneDisabledError: "scene_disabled",
        }
        return _error(exc.status_code, kinds.get(type(exc), "search_error"), exc.message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug of ours: logged with its traceback, answered in the one error shape (never a bare text 500).
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal", f"internal error ({type(exc).__name__}); see the search service log")


def _default_deps(settings: Settings, metrics: SearchMetrics) -> Deps:
    return Deps(
        models=GrpcQueryModels(settings, metrics),
        vectors=MilvusVectorStore(settings, metrics),
        documents=MongoDocumentStore(settings, metrics),
    )


async def _close_deps(deps: Deps) -> None:
    for part in (deps.models, deps.vectors, deps.documents):
        close = getattr(part, "close", None)
        if close is not None:
            res = close()
            if asyncio.iscoroutine(res):
                await res


def create_app(settings: Settings, *, source: ConfigSource | None = None) -> FastAPI:
    metrics = SearchMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deps = _default_deps(settings, metrics)
        src = source or make_source(settings.search)
        service = SearchService(settings, deps, metrics, src)
        app.state.service = service
        try:
            await src.load_initial(service.manager)
        except ConfigError:
            # Refuse to start on a config that fails validation (e.g. a collection built with another model).
            await _close_deps(deps)
            src.close()
            raise
        except DependencyUnavailableError as exc:
            service.manager.source_state = f"waiting for {exc.dependency} to validate the config: {exc.reason}"
            log.warning(service.manager.source_state)
        watcher = asyncio.create_task(_watch(service), name="config-watcher")
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            src.close()
            await _close_deps(deps)

    app = FastAPI(
        title="mmsearch search service",
        version="1.0",
        description="Scenes, layers and A/B experiments over recall (Milvus), ranking and summary (MongoDB). "
        "Request and response shapes follow MetaSpore's multimodal demo.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics

    _install_error_handlers(app)

    @app.post("/qa/user/{user_id}", response_model=SearchResponse, responses=_ERRORS, tags=["search"])
    async def qa(user_id: UserId, body: SearchRequest, svc: Svc) -> SearchResponse:
        """Question answering (scene questionAnswer)."""
        return await svc.search(SCENE_QA, user_id, body)

    @app.post("/t2i/user/{user_id}", response_model=SearchResponse, responses=_ERRORS, tags=["search"])
    async def t2i(user_id: UserId, body: SearchRequest, svc: Svc) -> SearchResponse:
        """Text to image (scene textToImage)."""
        return await svc.search(SCENE_T2I, user_id, body)

    @app.post("/scene/{scene}/user/{user_id}", response_model=SearchResponse, responses=_ERRORS, tags=["search"])
    async def any_scene(
        scene: Annotated[str, Path(max_length=128)], user_id: UserId, body: SearchRequest, svc: Svc
    ) -> SearchResponse:
        """Any text scene of the A/B config by name (404 when the config has no such scene)."""
        return await svc.search(scene, user_id, body)

    @app.post("/i2i/user/{user_id}", response_model=SearchResponse, responses=_ERRORS, tags=["search"])
    async def i2i(  # noqa: PLR0917 - form fields are parameters
        user_id: UserId,
        svc: Svc,
        image: Annotated[UploadFile, File(description="JPEG, PNG, GIF, WebP or BMP; no URLs are fetched.")],
        useDebug: Annotated[bool, Form()] = False,  # noqa: N803 - the reference's field names
        topK: Annotated[int | None, Form(gt=0)] = None,  # noqa: N803
        specifiedLayerAndExperiment: Annotated[str, Form(description="JSON {layer: experiment}")] = "{}",  # noqa: N803
        filters: Annotated[str, Form(description="JSON {field: value}")] = "{}",
    ) -> SearchResponse:
        """Image to image (scene imageToImage): multipart upload in the form field `image`."""
        data = await _read_image(image, svc.settings.search.max_upload_mb)
        try:
            req = SearchRequest.model_validate(
                {
                    "query": image.filename or "image",
                    "useDebug": useDebug,
                    "topK": topK,
                    "specifiedLayerAndExperiment": json.loads(specifiedLayerAndExperiment),
                    "filters": json.loads(filters),
                }
            )
        except (json.JSONDecodeError, ValidationError) as exc:
            raise InvalidQueryError(f"bad form field: {exc}") from exc
        return await svc.search(SCENE_I2I, user_id, req, image=data)

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """Alive (the process answers); see /ready for dependencies."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"])
    async def ready(svc: Svc) -> JSONResponse:
        """Config loaded and tokenizer, model server, Milvus and MongoDB reachable; 503 names what is not."""
        ok, body = await svc.readiness()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"])
    async def prom() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown scene"},
    413: {"model": ErrorBody, "description": "Upload too large"},
    415: {"model": ErrorBody, "description": "Not an image"},
    422: {"model": ErrorBody, "description": "Invalid query (the message says why)"},
    503: {"model": ErrorBody, "description": "A dependency is down (named), or the scene is disabled"},
}


class UploadError(SearchError):
    pass


async def _read_image(upload: UploadFile, max_mb: int) -> bytes:
    limit = max_mb * 1024 * 1024
    data = await upload.read(limit + 1)
    if len(data) > limit:
        err = UploadError(f"image larger than {max_mb} MB")
        err.status_code = 413
        raise err
    if not data:
        raise InvalidQueryError("the uploaded image is empty")
    ctype = (upload.content_type or "").split(";")[0].strip().lower()
    if (ctype and ctype != "application/octet-stream" and ctype not in IMAGE_TYPES) or not data.startswith(_MAGIC):
        err = UploadError(f"not a supported image (content type {ctype or 'none'}): send JPEG, PNG, GIF, WebP or BMP")
        err.status_code = 415
        raise err
    return data


async def _watch(service: SearchService) -> None:
    """Finish the initial load if a dependency was down at start, then follow the config source."""
    while not service.source.settled:
        try:
            await service.source.load_initial(service.manager)
        except (DependencyUnavailableError, ConfigError) as exc:
            service.manager.source_state = f"no config yet: {exc}"
        if not service.source.settled:
            await asyncio.sleep(1.0)
    await service.source.watch(service.manager)
