"""The search service's HTTP app: `create_app(settings)` with its routes, error handlers and lifespan.

Request path: route's access check (auth/route.py: the key, its scope, corpora and rate limit) -> body parsed into
SearchRequest -> `SearchService.search` (service.py) -> response. Every route declares the scope it needs
(`openapi_extra=needs(...)`); the app does not start with a route that declares none. The lifespan creates the
clients of the four dependencies and the config watcher; every error, whoever raises it, leaves as the one
documented shape `{error, message, dependency}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Path, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmsearch.model_repo import ModelRepository
from mmsearch.settings import Settings
from services.search import request_errors
from services.search.adapters import GrpcQueryModels, MilvusVectorStore, MongoDocumentStore
from services.search.api_models import ErrorBody, SearchRequest, SearchResponse
from services.search.auth.guard import Guard, Principal, bootstrap_record
from services.search.auth.key_store import MongoKeyStore
from services.search.auth.key_store import now as store_now
from services.search.auth.route import GuardedRoute, needs, with_security_schemes
from services.search.auth.startup import bootstrap_key
from services.search.body_limit import BodyLimit
from services.search.config.sources import ConfigSource, make_source
from services.search.documents import routes as document_routes
from services.search.documents.applier import Applier
from services.search.documents.encode import DocumentEncoder
from services.search.documents.journal import Journal
from services.search.documents.milvus_writes import MilvusWrites
from services.search.documents.writes import DocumentsService
from services.search.errors import ConfigError, DependencyUnavailableError, InvalidQueryError, SearchError
from services.search.metrics import SearchMetrics
from services.search.outcomes.feedback import FeedbackRequest, FeedbackResponse, FeedbackService
from services.search.outcomes.recorder import ExposureRecorder
from services.search.outcomes.store import MongoOutcomeStore
from services.search.ports import Deps
from services.search.query_cache import QueryEmbeddingCache
from services.search.service import SearchService
from services.search.uploads import read_image

log = logging.getLogger(__name__)

SCENE_QA = "questionAnswer"
SCENE_T2I = "textToImage"
SCENE_I2I = "imageToImage"
UserId = Annotated[str, Path(min_length=1, max_length=128, description="Caller's user id (bucketing is sticky on it).")]


# The dependencies are `async def`: FastAPI runs a plain `def` dependency on a worker thread, two thread hops per
# search for reading app state (a profile of the service at c=32 found them; bench/RESULTS.md).
async def _service(request: Request) -> SearchService:
    svc: SearchService = request.app.state.service
    return svc


async def _feedback(request: Request) -> FeedbackService:
    fb: FeedbackService = request.app.state.feedback
    return fb


async def _principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


Svc = Annotated[SearchService, Depends(_service)]
Feedback = Annotated[FeedbackService, Depends(_feedback)]
Caller = Annotated[Principal, Depends(_principal)]


def _error(status: int, kind: str, message: str, dependency: str | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=kind, message=message, dependency=dependency).model_dump(), status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SearchError)
    async def _search_error(request: Request, exc: SearchError) -> JSONResponse:
        response = _error(exc.status_code, exc.kind, exc.message, getattr(exc, "dependency", None))
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", request_errors.describe(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing errors (no such path, wrong method) that never reach a handler of ours.
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"{exc.detail}: {request.method} {request.url.path} (the API is described at /docs)"
        response = _error(exc.status_code, kind, message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug of ours: logged with its traceback, answered in the one error shape (never a bare text 500).
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal", f"internal error ({type(exc).__name__}); see the search service log")


def _default_deps(settings: Settings, metrics: SearchMetrics) -> Deps:
    s = settings.search
    cache = None
    if s.query_cache_size > 0:
        repo = ModelRepository(settings.model_repo)
        cache = QueryEmbeddingCache(s.query_cache_size, s.query_cache_ttl_seconds, repo=repo, metrics=metrics)
    return Deps(
        models=GrpcQueryModels(settings, metrics),
        vectors=MilvusVectorStore(settings, metrics),
        documents=MongoDocumentStore(settings, metrics),
        query_cache=cache,
    )


async def _close_deps(deps: Deps, outcomes: MongoOutcomeStore) -> None:
    """Close every client at once: a pymongo client whose server is already gone (the local stack stops all its
    processes together) waits up to its timeout to end its sessions, and two such waits in a row would add up."""

    async def close(part: object) -> None:
        fn = getattr(part, "aclose", None) or getattr(part, "close", None)
        if fn is None:
            return
        if asyncio.iscoroutinefunction(fn):
            await fn()
        else:
            await asyncio.to_thread(fn)

    await asyncio.gather(*(close(p) for p in (deps.models, deps.vectors, deps.documents, outcomes)))


def _documents(settings: Settings, deps: Deps, metrics: SearchMetrics) -> tuple[DocumentsService, Applier]:
    """The documents API's service and the applier of the journal (their own MongoDB and Milvus clients: a write
    never queues behind searches, nor a search behind a batch)."""
    journal = Journal(settings, metrics)
    milvus = MilvusWrites(settings, metrics)
    encoder = DocumentEncoder(ModelRepository(settings.model_repo), deps.models)
    applier = Applier(journal, milvus, encoder, settings.documents, metrics)
    service = DocumentsService(
        settings.documents, journal, milvus, encoder, applier, upload_mb=settings.search.max_upload_mb
    )
    return service, applier


def _guard(app: FastAPI, settings: Settings, metrics: SearchMetrics) -> tuple[Guard, MongoKeyStore]:
    """The access check of every route, over the `keys` collection (its own MongoDB client and threads: a key
    look-up never waits behind a slow search's document fetch)."""
    store = MongoKeyStore(
        settings, metrics, workers=4, appname="mmsearch-search-keys", collection=settings.auth.collection
    )
    key = bootstrap_key(settings.auth)

    def corpora_of_scene(scene: str) -> set[str]:
        service: SearchService | None = getattr(app.state, "service", None)
        return service.scene_corpora(scene) if service is not None else set()

    guard = Guard(
        settings.auth,
        store.find,
        metrics,
        corpora_of_scene=corpora_of_scene,
        bootstrap=bootstrap_record(key, store_now()) if key is not None else None,
        touch=store.touch,
    )
    return guard, store


def _lifespan(settings: Settings, metrics: SearchMetrics, source: ConfigSource | None) -> Any:
    """The app's lifespan: the dependencies' clients, the outcome writer, the config watcher and the keys'
    last-used writer."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        deps = _default_deps(settings, metrics)
        src = source or make_source(settings.search)
        # Outcomes get their own MongoDB client and threads: their writes never queue behind the summary stage.
        outcome_store = MongoOutcomeStore(settings, metrics, workers=2, appname="mmsearch-search-outcomes")
        recorder = ExposureRecorder(
            outcome_store,
            metrics,
            queue_size=settings.search.exposure_queue_size,
            ttl_days=settings.search.outcomes_ttl_days,
            enabled=settings.search.record_outcomes,
        )
        service = SearchService(settings, deps, metrics, src, exposures=recorder)
        app.state.service = service
        documents, applier = _documents(settings, deps, metrics)
        app.state.documents = documents
        app.state.feedback = FeedbackService(outcome_store, recorder, metrics)
        try:
            await src.load_initial(service.manager)
        except ConfigError:
            # Refuse to start on a config that fails validation (e.g. a collection built with another model).
            await _close_deps(deps, outcome_store)
            src.close()
            raise
        except DependencyUnavailableError as exc:
            service.manager.source_state = f"waiting for {exc.dependency} to validate the config: {exc.reason}"
            log.warning(service.manager.source_state)
        watcher = asyncio.create_task(_watch(service), name="config-watcher")
        guard: Guard = app.state.guard
        flusher = asyncio.create_task(guard.run_flusher(), name="keys-last-used") if guard.enabled else None
        applying = asyncio.create_task(applier.run(), name="documents-applier")
        recorder.start()
        try:
            yield
        finally:
            for task in (watcher, flusher, applying):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await applier.release()
            await recorder.stop()
            src.close()
            await _close_deps(deps, outcome_store)
            await asyncio.to_thread(documents.close)
            await asyncio.to_thread(app.state.key_store.close)

    return lifespan


def create_app(settings: Settings, *, source: ConfigSource | None = None) -> FastAPI:
    metrics = SearchMetrics()
    app = FastAPI(
        title="mmsearch search service",
        version="1.0",
        description="Scenes, layers and A/B experiments over recall (Milvus), ranking and summary (MongoDB). "
        "Request and response shapes follow MetaSpore's multimodal demo.",
        lifespan=_lifespan(settings, metrics, source),
    )
    app.state.metrics = metrics
    app.state.guard, app.state.key_store = _guard(app, settings, metrics)
    # Every route below is a GuardedRoute: it declares its scope (needs(...)) and is checked before its body is read.
    app.router.route_class = GuardedRoute
    # JSON bodies are small; an image upload has its own limit (uploads.py), with room for the multipart framing,
    # and a documents request may carry a batch (each document is checked against its own limit).
    app.add_middleware(
        BodyLimit,
        default_bytes=settings.search.max_json_body_kb * 1024,
        by_prefix=(
            ("/i2i/", (settings.search.max_upload_mb * 1024 + settings.search.max_json_body_kb) * 1024),
            ("/corpora/", settings.documents.max_body_mb * 1024 * 1024),
        ),
    )

    _install_error_handlers(app)

    @app.post(
        "/qa/user/{user_id}",
        response_model=SearchResponse,
        responses=_ERRORS,
        tags=["search"],
        openapi_extra=needs("search", scene=SCENE_QA),
    )
    async def qa(user_id: UserId, body: SearchRequest, svc: Svc, caller: Caller) -> SearchResponse:
        """Question answering (scene questionAnswer)."""
        return await svc.search(SCENE_QA, user_id, body, key_id=caller.key_id)

    @app.post(
        "/t2i/user/{user_id}",
        response_model=SearchResponse,
        responses=_ERRORS,
        tags=["search"],
        openapi_extra=needs("search", scene=SCENE_T2I),
    )
    async def t2i(user_id: UserId, body: SearchRequest, svc: Svc, caller: Caller) -> SearchResponse:
        """Text to image (scene textToImage)."""
        return await svc.search(SCENE_T2I, user_id, body, key_id=caller.key_id)

    @app.post(
        "/scene/{scene}/user/{user_id}",
        response_model=SearchResponse,
        responses=_ERRORS,
        tags=["search"],
        openapi_extra=needs("search", scene_param="scene"),
    )
    async def any_scene(
        scene: Annotated[str, Path(max_length=128)], user_id: UserId, body: SearchRequest, svc: Svc, caller: Caller
    ) -> SearchResponse:
        """Any text scene of the A/B config by name (404 when the config has no such scene)."""
        return await svc.search(scene, user_id, body, key_id=caller.key_id)

    @app.post(
        "/i2i/user/{user_id}",
        response_model=SearchResponse,
        responses=_ERRORS,
        tags=["search"],
        openapi_extra=needs("search", scene=SCENE_I2I),
    )
    async def i2i(  # noqa: PLR0917 - form fields are parameters
        user_id: UserId,
        svc: Svc,
        caller: Caller,
        image: Annotated[UploadFile, File(description="JPEG, PNG, GIF, WebP or BMP; no URLs are fetched.")],
        useDebug: Annotated[bool, Form()] = False,  # noqa: N803 - the reference's field names
        topK: Annotated[int | None, Form(gt=0)] = None,  # noqa: N803
        offset: Annotated[int, Form(ge=0)] = 0,
        specifiedLayerAndExperiment: Annotated[str, Form(description="JSON {layer: experiment}")] = "{}",  # noqa: N803
        filters: Annotated[str, Form(description="JSON {field: value}")] = "{}",
    ) -> SearchResponse:
        """Image to image (scene imageToImage): multipart upload in the form field `image`."""
        data = await read_image(image, svc.settings.search.max_upload_mb)
        try:
            req = SearchRequest.model_validate(
                {
                    "query": image.filename or "image",
                    "useDebug": useDebug,
                    "topK": topK,
                    "offset": offset,
                    "specifiedLayerAndExperiment": json.loads(specifiedLayerAndExperiment),
                    "filters": json.loads(filters),
                }
            )
        except (json.JSONDecodeError, ValidationError) as exc:
            raise InvalidQueryError(f"bad form field: {exc}") from exc
        return await svc.search(SCENE_I2I, user_id, req, image=data, key_id=caller.key_id)

    @app.post(
        "/feedback",
        response_model=FeedbackResponse,
        responses=_FEEDBACK_ERRORS,
        tags=["outcomes"],
        openapi_extra=needs("feedback"),
    )
    async def feedback(body: FeedbackRequest, fb: Feedback) -> FeedbackResponse:
        """What a user did with a result of a search (click, like, dislike), for `mmsearch ab report`. The same
        (requestId, itemId, event) twice is stored once (`recorded: false` the second time)."""
        return await fb.record(body)

    @app.get("/health", tags=["ops"], openapi_extra=needs(None, read_key=False))
    async def health() -> dict[str, str]:
        """Alive (the process answers); see /ready for dependencies. Open: no key is read."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], openapi_extra=needs(None))
    async def ready(svc: Svc, caller: Caller) -> JSONResponse:
        """Config loaded and tokenizer, model server, Milvus and MongoDB reachable: 200 or 503. Open with a bare
        `{"ready": ...}`; an admin key also gets which check failed and why, and the config's state."""
        ok, body = await svc.readiness()
        shown = body if caller.allows("admin") else {"ready": ok}
        return JSONResponse(shown, status_code=200 if ok else 503)

    @app.get("/experiments", tags=["ops"], openapi_extra=needs("search"))
    async def experiments(svc: Svc) -> dict[str, Any]:
        """The A/B config in force: scene -> layer -> its experiments with their ratios (503 before a config is
        loaded). What `useDebug` + `specifiedLayerAndExperiment` may pin, and what `mmsearch eval` compares."""
        return svc.experiments()

    @app.get("/metrics", tags=["ops"], openapi_extra=needs("metrics"))
    async def prom() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    document_routes.install(app)
    app.openapi = with_security_schemes(app.openapi)  # type: ignore[method-assign]

    return app


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown scene"},
    413: {"model": ErrorBody, "description": "Upload too large"},
    415: {"model": ErrorBody, "description": "Not an image"},
    # Declared here, FastAPI leaves out its own {"detail": [...]} schema: every 422 is an ErrorBody.
    422: {
        "model": ErrorBody,
        "description": "Invalid request: not a JSON object, a field of the wrong type or "
        "range, or a blank or too long query (the message says what to send)",
    },
    503: {"model": ErrorBody, "description": "A dependency is down (named), or the scene is disabled"},
}

_FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No search with this requestId for this user (unknown_request)"},
    413: {"model": ErrorBody, "description": "Body too large"},
    422: {
        "model": ErrorBody,
        "description": "The item was not shown by that search (item_not_shown), or a field "
        "is missing, of the wrong type or out of range (invalid_request)",
    },
    503: {
        "model": ErrorBody,
        "description": "MongoDB is down: the event was not stored, send it again (dependency_unavailable); or "
        "this service records no outcomes (outcomes_disabled)",
    },
}


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
