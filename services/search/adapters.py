"""The real dependencies behind the pipeline's ports: tokenizer + model server (B's async gRPC clients), Milvus
(pymilvus) and MongoDB (pymongo). Searches and document fetches use the stores' asyncio clients on the event
loop; the blocking calls (writes, admin) run on a bounded thread pool, never on the event loop. Every call has a
deadline and failures become DependencyUnavailableError naming the dependency. Clients are (re)created lazily
after a failure, so the service recovers by itself when a dependency returns."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import numpy as np

from mmsearch.chunking import CHUNK_FIELDS, DOCUMENT_FIELD, PASSAGE_FIELD, POSITION_FIELD
from mmsearch.collection_meta import PRIMARY_KEY, CollectionMeta, from_properties
from mmsearch.grpc_common.client import ClientTls, ServiceCallError
from mmsearch.settings import Settings
from mmsearch.stores import async_milvus_client, async_mongo_client, milvus_client, mongo_client
from services.model_server.client import Embedding, ModelServerClient
from services.search.config.checks import CollectionStatus
from services.search.errors import Dependency, DependencyUnavailableError, InvalidQueryError
from services.search.metrics import SearchMetrics
from services.search.ports import AnnHit, AnnSearch, Grouping, TextSearch
from services.tokenizer.client import TokenizerClient

log = logging.getLogger(__name__)
T = TypeVar("T")
NOT_LOADED = 101  # pymilvus: collection not loaded
MAX_HITS = 16_384  # Milvus' largest search limit
# A search reads the collection's layout (a document corpus? see stages/chunks.py) from a cache this old at most:
# a corpus re-ingested as documents is searched as documents within seconds, without a describe per request.
LAYOUT_SECONDS = 5.0
# An asyncio client that missed this many deadlines in a row is replaced by a fresh one. pymongo's asyncio client
# wedged for good after a server selection cancelled while MongoDB was down (RuntimeError "Lock is not acquired",
# then no answer to any call after MongoDB was back: the resilience tier, 2026-12-04); a few misses in a row cost a
# reconnect at most.
WEDGED_AFTER_MISSES = 3


async def _bounded(dep: Dependency, make: Awaitable[T], timeout: float, metrics: SearchMetrics | None) -> T:
    try:
        return await asyncio.wait_for(make, timeout)
    except TimeoutError as exc:
        if metrics:
            metrics.dependency_errors.labels(dep).inc()
        raise DependencyUnavailableError(dep, f"no answer within {timeout:g}s") from exc


class GrpcQueryModels:
    def __init__(self, settings: Settings, metrics: SearchMetrics | None = None) -> None:
        s = settings.search
        self.timeout = s.stage_timeout_seconds
        self.metrics = metrics
        tls = ClientTls.from_settings(s.grpc_tls_ca_file, s.grpc_tls_server_name)
        self.tokenizer = TokenizerClient(s.tokenizer_target, timeout=self.timeout, tls=tls)
        self.models = ModelServerClient(s.model_server_target, timeout=self.timeout, tls=tls)

    async def _call(self, dep: Dependency, make: Awaitable[T]) -> T:
        try:
            return await _bounded(dep, make, self.timeout, self.metrics)
        except ServiceCallError as exc:
            if exc.code == grpc.StatusCode.INVALID_ARGUMENT and exc.method == "PreprocessImages":
                raise InvalidQueryError(f"the image could not be used: {exc.details}") from exc
            if self.metrics:
                self.metrics.dependency_errors.labels(dep).inc()
            raise DependencyUnavailableError(dep, f"{exc.code.name}: {exc.details}") from exc

    async def tokenize(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        batch = await self._call("tokenizer", self.tokenizer.tokenize(model, texts))
        return batch.tensors

    async def preprocess_images(self, model: str, images: Sequence[bytes]) -> dict[str, np.ndarray]:
        return await self._call("tokenizer", self.tokenizer.preprocess_images(model, images))

    async def embed(self, model: str, inputs: Mapping[str, np.ndarray], output: str) -> Embedding:
        return await self._call("model server", self.models.embed_versioned(model, inputs, output=output))

    async def embed_texts(self, model: str, texts: Sequence[str], output: str) -> Embedding:
        return await self._call("model server", self.models.embed_texts(model, texts, output=output))

    async def score_pairs(self, model: str, query: str, documents: Sequence[str]) -> np.ndarray:
        if not documents:
            return np.zeros(0, dtype=np.float32)
        # One call: the model server tokenizes the pairs, batches each at its own length (not padded to the
        # longest of the request) and applies the model's score rule, of the version that computed them.
        return await self._call("model server", self.models.score_pairs(model, query, documents))

    async def ping_tokenizer(self) -> None:
        if not await self._call("tokenizer", self.tokenizer.health()):
            raise DependencyUnavailableError("tokenizer", "health check says NOT_SERVING")

    async def ping_model_server(self) -> None:
        if not await self._call("model server", self.models.health()):
            raise DependencyUnavailableError("model server", "health check says NOT_SERVING")

    async def close(self) -> None:
        await self.tokenizer.close()
        await self.models.close()


class StoreClients:
    """A store's clients, each made on first use and dropped after a failure so the next call reconnects: an
    asyncio-native client for the query path (`arun`, where subclasses have one: no thread hop per search, ~0.7 ms
    less CPU per Milvus search than from a thread pool; bench/RESULTS.md) and a blocking client used from a bounded
    thread pool (`run`) for writes, admin calls and the stores that have no asyncio client here."""

    dep: Dependency

    def __init__(self, timeout: float, metrics: SearchMetrics | None, workers: int) -> None:
        self.timeout = timeout
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"search-{self.dep.replace(' ', '-')}")
        self._client: Any = None
        self._lock = threading.Lock()
        # The asyncio client and the loop it serves (a client's channel and sockets belong to one event loop).
        self._aclient: Any = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._amisses = 0  # deadlines the asyncio client missed in a row
        self._closing: set[asyncio.Task[None]] = set()  # dropped asyncio clients still closing

    def _connect(self) -> Any:
        raise NotImplementedError

    def _aconnect(self) -> Any:
        """An asyncio client (connecting on its first call); subclasses that search through `arun` make one."""
        raise NotImplementedError

    def _get(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _drop(self, client: Any) -> None:
        with self._lock:
            if self._client is client:
                self._client = None
        try:
            client.close()
        except Exception:
            log.debug("closing the %s client failed", self.dep, exc_info=True)

    def _aget(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aloop is not loop:
            # Another loop's client (a caller that runs each call in its own loop) cannot be closed from here: its
            # loop is gone, and with it the channel's tasks. It is left to the garbage collector.
            self._aclient, self._aloop = self._aconnect(), loop
        return self._aclient

    def _forget(self, client: Any) -> None:
        """The next call makes a new asyncio client (if `client` is still the current one)."""
        if self._aclient is client:
            self._aclient, self._amisses = None, 0

    async def _adrop(self, client: Any) -> None:
        self._forget(client)
        try:
            await client.close()
        except Exception:
            log.debug("closing the %s asyncio client failed", self.dep, exc_info=True)

    def _adrop_later(self, client: Any) -> None:
        """Drop now, close in the background: closing a wedged client may wait on its own time-outs, which the
        request that found it wedged should not."""
        self._forget(client)  # now: the next call must get a new client, not this one closing
        task = asyncio.get_running_loop().create_task(self._adrop(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _is_unavailable(self, exc: Exception) -> bool:
        raise NotImplementedError

    def _is_store_error(self, exc: Exception) -> bool:
        raise NotImplementedError

    def _unavailable(self, exc: Exception) -> DependencyUnavailableError | None:
        """The 503 naming the store for any failure of the store itself; None for a bug of ours (raised as it is)."""
        if not (self._is_unavailable(exc) or self._is_store_error(exc)):
            return None
        if self.metrics:
            self.metrics.dependency_errors.labels(self.dep).inc()
        return DependencyUnavailableError(self.dep, f"{type(exc).__name__}: {exc}")

    async def run(self, fn: Callable[[Any], T]) -> T:
        def work() -> T:
            client = self._get()
            try:
                return fn(client)
            except Exception as exc:
                if self._is_unavailable(exc):
                    self._drop(client)
                raise

        loop = asyncio.get_running_loop()
        try:
            return await _bounded(self.dep, loop.run_in_executor(self.pool, work), self.timeout, self.metrics)
        except DependencyUnavailableError:
            raise
        except Exception as exc:
            unavailable = self._unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    async def arun(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """`run` with the asyncio client, on the event loop: the same deadline, the same 503s, the same reconnect."""
        client = self._aget()
        try:
            result = await _bounded(self.dep, fn(client), self.timeout, self.metrics)
        except DependencyUnavailableError:  # the deadline passed
            if client is self._aclient:
                self._amisses += 1
                if self._amisses >= WEDGED_AFTER_MISSES:
                    log.warning("%s: %d deadlines missed in a row; reconnecting", self.dep, self._amisses)
                    self._adrop_later(client)
            raise
        except Exception as exc:
            if self._is_unavailable(exc):
                await self._adrop(client)
            unavailable = self._unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc
        if client is self._aclient:
            self._amisses = 0
        return result

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """Both clients; the asyncio one only from the loop it serves (see `_aget`)."""
        client, self._aclient = self._aclient, None
        if client is not None and self._aloop is asyncio.get_running_loop():
            await self._adrop(client)
        if self._closing:
            await asyncio.gather(*self._closing)
        await asyncio.to_thread(self.close)


def raised_in(exc: BaseException, package: str) -> bool:
    """Whether `exc` was raised by the code of `package` (its traceback's innermost frame), not by ours."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module == package or module.startswith(f"{package}.")


def _settle_pymilvus_scipy_check() -> None:
    """pymilvus looks for scipy.sparse on a client's first search, importing it by hand without a lock: threads
    making their first searches at once saw a half-imported module (KeyError 'scipy.sparse', 503s at the start
    of a load test with 32 store threads). Done once here, before any thread searches."""
    try:
        from pymilvus.client.utils import SciPyHelper
    except ImportError:  # a pymilvus without the lazy check has nothing to settle
        return
    SciPyHelper.is_scipy_sparse(None)


def _not_loaded(exc: Exception) -> bool:
    """A restarted Milvus may come back with the collection released: the caller loads it again, once."""
    from pymilvus.exceptions import MilvusException

    return isinstance(exc, MilvusException) and (exc.code == NOT_LOADED or "load()" in str(exc))


def _output_fields(vector_field: str | None) -> list[str]:
    """What a search asks Milvus to return beside ids and scores: the vectors when a ranker needs them. Otherwise
    the key by name: Milvus Lite answers an empty output_fields with every field, vectors and BM25 sparse vectors
    included (twice the search time at 50 hits, 384-d; bench_output_fields)."""
    return [vector_field] if vector_field else [PRIMARY_KEY]


def _hit(h: Any, distance: float, vector: np.ndarray | None) -> AnnHit:
    entity = h.get("entity") or {}
    if DOCUMENT_FIELD not in entity:
        return AnnHit(id=str(h["id"]), distance=distance, vector=vector)
    return AnnHit(
        id=str(h["id"]),
        distance=distance,
        vector=vector,
        document=str(entity[DOCUMENT_FIELD]),
        position=int(entity[POSITION_FIELD]),
        passage=str(entity[PASSAGE_FIELD]),
    )


class MilvusVectorStore(StoreClients):
    dep: Dependency = "milvus"

    def __init__(
        self,
        settings: Settings,
        metrics: SearchMetrics | None = None,
        *,
        timeout: float | None = None,  # default: the search stage time-out (bounded by milvus.timeout_seconds)
        workers: int | None = None,  # default: search.store_threads
    ) -> None:
        self.settings = settings.milvus
        if timeout is None:
            timeout = min(settings.search.stage_timeout_seconds, settings.milvus.timeout_seconds)
        super().__init__(timeout, metrics, workers or settings.search.store_threads)
        # pymilvus logs a full traceback for every call that fails to reconnect: ~7000 in a 45 s outage. Each of
        # those requests is already a 503 naming Milvus, counted in dependency_errors and in the exposure log.
        logging.getLogger("pymilvus.client.connection_manager").setLevel(logging.ERROR)
        self._layouts: dict[str, tuple[float, CollectionMeta | None]] = {}

    def _connect(self) -> Any:
        # Runs under the store's lock, before any search of this store.
        _settle_pymilvus_scipy_check()
        return milvus_client(self.settings)

    def _is_unavailable(self, exc: Exception) -> bool:
        from pymilvus.exceptions import MilvusException

        # A search that Milvus refuses for a reason of the request (bad expression) is still Milvus' answer;
        # everything that is not an answer (connection refused, gRPC unavailable, timeout) is unavailability.
        return not isinstance(exc, MilvusException) or exc.code in (-1, 1, 2, 4) or "connect" in str(exc).lower()

    def _is_store_error(self, exc: Exception) -> bool:
        import grpc
        from pymilvus.exceptions import MilvusException

        return isinstance(exc, MilvusException | grpc.RpcError)

    def _aconnect(self) -> Any:
        _settle_pymilvus_scipy_check()
        return async_milvus_client(self.settings)

    async def search(self, req: AnnSearch) -> list[AnnHit]:
        out_fields = _output_fields(req.vector_field if req.with_vectors else None)
        params: dict[str, Any] = {"params": dict(req.search_params)}
        if req.metric_type:
            params["metric_type"] = req.metric_type

        async def search(client: Any, limit: int) -> Any:
            asked = params
            if "ef" in params["params"]:  # HNSW must explore at least the hits asked for
                asked = {**params, "params": {**params["params"], "ef": max(int(params["params"]["ef"]), limit)}}
            return await client.search(
                req.collection,
                data=[list(req.vector)],
                anns_field=req.vector_field,
                limit=limit,
                filter=req.expression,
                output_fields=out_fields + (list(CHUNK_FIELDS) if req.grouping else []),
                search_params=asked,
                timeout=self.timeout,
            )

        def hit(h: Any) -> AnnHit:
            vec = np.asarray(h["entity"][req.vector_field], dtype=np.float32) if req.with_vectors else None
            return _hit(h, float(h["distance"]), vec)

        async def go(client: Any) -> list[AnnHit]:
            res = await self._search(client, req.collection, search, req.limit, req.grouping)
            return [hit(h) for h in res]

        return await self.arun(go)

    async def text_search(self, req: TextSearch) -> list[AnnHit]:
        out_fields = _output_fields(req.vector_field) + (list(CHUNK_FIELDS) if req.grouping else [])

        async def search(client: Any, limit: int) -> Any:
            return await client.search(
                req.collection,
                data=[req.text],
                anns_field=req.sparse_field,
                limit=limit,
                filter=req.expression,
                output_fields=out_fields,
                search_params={"metric_type": "BM25"},
                timeout=self.timeout,
            )

        async def go(client: Any) -> list[AnnHit]:
            res = await self._search(client, req.collection, search, req.limit, req.grouping)
            # Milvus returns BM25 scores as positive numbers, Milvus Lite as their negatives (the order is the same
            # in both): the rest of the service sees one convention, positive and higher-is-better.
            return [
                _hit(
                    h,
                    abs(float(h["distance"])),
                    np.asarray(h["entity"][req.vector_field], dtype=np.float32) if req.vector_field else None,
                )
                for h in res
            ]

        return await self.arun(go)

    async def _search(
        self,
        client: Any,
        collection: str,
        search: Callable[[Any, int], Awaitable[Any]],
        limit: int,
        grouping: Grouping | None,
    ) -> list[Any]:
        """The hits of one search; with `grouping`, chunks of at least `limit` documents (or of all there are).

        Over-fetch and collapse, on every Milvus: ask for `per_document` chunks (at least two) per document wanted,
        and again for twice as many while they cover too few documents and the store had more to give. The
        documents are exact (a document's best chunk decides its place, and every chunk better than the last
        document's best is in the list); a document may bring fewer than `per_document` chunks.
        Not Milvus' grouping search (`group_by_field`): Milvus Lite 3.2.2 answers it with no hits at all for an
        HNSW index and `group_size` > 1, and with `group_size` 1 it took 11-13 ms where 30-60 plain hits took
        7-10 ms (MED, 2431 passages, bench_chunking); the 2.3.5 server of the milvus-server tier predates it."""
        if grouping is None:
            return list((await self._loaded(client, collection, functools.partial(search, client, limit)))[0])
        asked = min(MAX_HITS, limit * max(2, grouping.per_document))
        while True:
            hits = list((await self._loaded(client, collection, functools.partial(search, client, asked)))[0])
            documents = {h["entity"][DOCUMENT_FIELD] for h in hits}
            if len(documents) >= limit or len(hits) < asked or asked >= MAX_HITS:
                return hits
            asked = min(MAX_HITS, asked * 2)

    async def _loaded(self, client: Any, collection: str, search: Callable[[], Awaitable[Any]]) -> Any:
        """`_with_load` for the asyncio client."""
        try:
            return await search()
        except Exception as exc:
            if not _not_loaded(exc):
                raise
            log.warning("collection %s was not loaded in Milvus; loading it", collection)
            await client.load_collection(collection, timeout=self.timeout)
            return await search()

    async def layout(self, collection: str) -> CollectionMeta | None:
        now = time.monotonic()
        cached = self._layouts.get(collection)
        if cached is not None and now - cached[0] < LAYOUT_SECONDS:
            return cached[1]
        status = await self.describe(collection)
        self._layouts[collection] = (now, status.meta)
        return status.meta

    def _with_load(self, client: Any, collection: str, search: Callable[[], Any]) -> Any:
        try:
            return search()
        except Exception as exc:
            if not _not_loaded(exc):
                raise
            log.warning("collection %s was not loaded in Milvus; loading it", collection)
            client.load_collection(collection, timeout=self.timeout)
            return search()

    async def describe(self, collection: str) -> CollectionStatus:
        def go(client: Any) -> CollectionStatus:
            if not client.has_collection(collection, timeout=self.timeout):
                return CollectionStatus(exists=False)
            info = client.describe_collection(collection, timeout=self.timeout)
            return CollectionStatus(exists=True, meta=from_properties(info.get("properties")))

        return await self.run(go)

    async def ping(self) -> None:
        # Through the client searches use: ready means searches can reach Milvus.
        await self.arun(lambda client: client.list_collections(timeout=self.timeout))


class MongoStore(StoreClients):
    """A MongoDB database of the stack (settings.mongo) behind the blocking-client pool."""

    dep: Dependency = "mongodb"

    def __init__(
        self,
        settings: Settings,
        metrics: SearchMetrics | None = None,
        workers: int | None = None,  # default: search.store_threads
        appname: str = "mmsearch-search",
    ) -> None:
        self.settings = settings.mongo
        self.appname = appname
        timeout = min(settings.search.stage_timeout_seconds, settings.mongo.timeout_ms / 1000)
        super().__init__(timeout, metrics, workers or settings.search.store_threads)

    def _connect(self) -> Any:
        return mongo_client(self.settings, appname=self.appname)

    def _is_unavailable(self, exc: Exception) -> bool:
        from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError, ServerSelectionTimeoutError

        if isinstance(exc, ConnectionFailure | ServerSelectionTimeoutError | ExecutionTimeout | OSError):
            return True
        # pymongo failing inside itself (not one of its errors: its asyncio lock's RuntimeError after a cancelled
        # server selection): the client cannot be trusted any more, so it is replaced, and the search gets a 503.
        return not isinstance(exc, PyMongoError) and raised_in(exc, "pymongo")

    def _is_store_error(self, exc: Exception) -> bool:
        from pymongo.errors import PyMongoError

        return isinstance(exc, PyMongoError)

    async def ping(self) -> None:
        await self.run(lambda client: client.admin.command("ping"))


class MongoDocumentStore(MongoStore):
    """The corpora's documents (summary stage)."""

    def _aconnect(self) -> Any:
        return async_mongo_client(self.settings, appname=self.appname)

    async def ping(self) -> None:
        # Through the client the summary stage uses: ready means fetches can reach MongoDB.
        await self.arun(lambda client: client.admin.command("ping"))

    async def fetch(self, collection: str, ids: Sequence[str], fields: Sequence[str]) -> dict[str, dict[str, Any]]:
        projection = {f: 1 for f in fields} | {"queryid": 1, "_id": 0}
        wanted = list(ids)

        async def go(client: Any) -> dict[str, dict[str, Any]]:
            coll = client[self.settings.database][collection]
            # One round trip for every hit (the reference's contract: queryid in [...]).
            cursor = coll.find({"queryid": {"$in": wanted}}, projection, max_time_ms=int(self.timeout * 1000))
            return {str(d["queryid"]): d async for d in cursor}

        return await self.arun(go)
