"""The Tokenizer gRPC service: texts to token tensors and images to pixel tensors, named as the model's inputs.

Each call: check the request's size limits, find the model's preprocessor (NOT_FOUND lists what exists), run
the preprocessing in the worker pool (tokenizers and Pillow block), encode the arrays with the one tensor codec.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

import grpc
from grpc import aio
from prometheus_client import CollectorRegistry, Histogram

from mmsearch.api.v1 import tokenizer_pb2, tokenizer_pb2_grpc
from mmsearch.grpc_common.errors import RpcRunner, RpcStatusError, invalid_argument, not_found
from mmsearch.grpc_common.health import HealthStatus
from mmsearch.grpc_common.metrics import RpcMetrics
from mmsearch.model_repo import ModelRepoError
from mmsearch.runtime.image import ImageDecodeError
from mmsearch.settings import TokenizerSettings
from mmsearch.tensors import map_to_proto
from services.tokenizer.preprocessors import PreprocessorCache, UnknownModelError, WrongKindError

log = logging.getLogger(__name__)

T = TypeVar("T")
Context = aio.ServicerContext[object, object]


class TokenizerMetrics(RpcMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__("mmsearch_tokenizer", registry)
        self.items = Histogram(
            "mmsearch_tokenizer_items_per_request",
            "Texts or images per request.",
            ["method", "model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=registry,
        )


class TokenizerServicer(tokenizer_pb2_grpc.TokenizerServicer):
    def __init__(
        self,
        cache: PreprocessorCache,
        settings: TokenizerSettings,
        executor: Executor,
        metrics: TokenizerMetrics,
        health: HealthStatus | None = None,
    ) -> None:
        self.cache = cache
        self.settings = settings
        self.executor = executor
        self.metrics = metrics
        self.health = health
        self.rpc = RpcRunner(metrics, log)

    async def Tokenize(  # noqa: N802 (gRPC method name)
        self, request: tokenizer_pb2.TokenizeRequest, context: Context
    ) -> tokenizer_pb2.TokenizeResponse:
        return await self.rpc.run("Tokenize", self._label(request.model_name), context, lambda: self._tokenize(request))

    async def TokenizePairs(  # noqa: N802
        self, request: tokenizer_pb2.TokenizePairsRequest, context: Context
    ) -> tokenizer_pb2.TokenizeResponse:
        return await self.rpc.run(
            "TokenizePairs", self._label(request.model_name), context, lambda: self._tokenize_pairs(request)
        )

    async def PreprocessImages(  # noqa: N802
        self, request: tokenizer_pb2.PreprocessImagesRequest, context: Context
    ) -> tokenizer_pb2.PreprocessImagesResponse:
        return await self.rpc.run(
            "PreprocessImages", self._label(request.model_name), context, lambda: self._preprocess_images(request)
        )

    async def _tokenize(self, request: tokenizer_pb2.TokenizeRequest) -> tokenizer_pb2.TokenizeResponse:
        texts = list(request.texts)
        self._check_count("texts", len(texts))
        self.metrics.items.labels("Tokenize", self._label(request.model_name)).observe(len(texts))

        def work() -> tokenizer_pb2.TokenizeResponse:
            # Clients send query texts: the model's query prompt, if it has one, goes in front.
            batch = self.cache.text(request.model_name).prep(texts, role="query")
            return tokenizer_pb2.TokenizeResponse(tensors=map_to_proto(batch.tensors), truncated=batch.truncated)

        return await self._in_pool(request.model_name, work)

    async def _tokenize_pairs(self, request: tokenizer_pb2.TokenizePairsRequest) -> tokenizer_pb2.TokenizeResponse:
        documents = list(request.documents)
        self._check_count("documents", len(documents))
        if not request.query.strip():
            raise invalid_argument("query is empty: send the text the documents are scored against")
        self.metrics.items.labels("TokenizePairs", self._label(request.model_name)).observe(len(documents))

        def work() -> tokenizer_pb2.TokenizeResponse:
            batch = self.cache.pairs(request.model_name).prep_pairs([(request.query, d) for d in documents])
            return tokenizer_pb2.TokenizeResponse(tensors=map_to_proto(batch.tensors), truncated=batch.truncated)

        return await self._in_pool(request.model_name, work)

    async def _preprocess_images(
        self, request: tokenizer_pb2.PreprocessImagesRequest
    ) -> tokenizer_pb2.PreprocessImagesResponse:
        images = list(request.images)
        self._check_count("images", len(images))
        limit = self.settings.max_image_mb * 1024 * 1024
        for i, data in enumerate(images):
            if len(data) > limit:
                raise invalid_argument(
                    f"image {i} is {len(data) / 1024 / 1024:.1f} MB, over the limit of {self.settings.max_image_mb} MB"
                )
        self.metrics.items.labels("PreprocessImages", self._label(request.model_name)).observe(len(images))

        def work() -> tokenizer_pb2.PreprocessImagesResponse:
            pre = self.cache.image(request.model_name)
            return tokenizer_pb2.PreprocessImagesResponse(tensors=map_to_proto({pre.input_name: pre.prep(images)}))

        return await self._in_pool(request.model_name, work)

    def _check_count(self, what: str, n: int) -> None:
        if n == 0:
            raise invalid_argument(f"{what} is empty: send at least one")
        if n > self.settings.max_batch:
            raise invalid_argument(f"{n} {what} in one request; the limit is {self.settings.max_batch}")

    async def _in_pool(self, key: str, work: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self.executor, work)
        except UnknownModelError as exc:
            raise not_found("model", exc.key, exc.available) from exc
        except WrongKindError as exc:
            raise invalid_argument(str(exc)) from exc
        except ImageDecodeError as exc:
            raise invalid_argument(f"image {exc.index} cannot be used: {exc.reason}") from exc
        except ModelRepoError as exc:
            if self.health is not None:
                await self.health.set_model(key, False)
            raise RpcStatusError(grpc.StatusCode.FAILED_PRECONDITION, f"model {key!r} cannot be used: {exc}") from exc
        if self.health is not None:
            await self.health.set_model(key, True)
        return result

    def _label(self, key: str) -> str:
        # Metric labels only for models that exist, so random names from clients cannot grow the label set.
        return key if self.cache.is_loaded(key) else "_unknown"

    async def refresh(self) -> None:
        """Load every model's preprocessor (start-up and rescans): health then lists each model."""
        loop = asyncio.get_running_loop()
        for key in self.cache.model_keys():
            try:
                await loop.run_in_executor(self.executor, self.cache.get, key)
            except (ModelRepoError, UnknownModelError, OSError, ValueError) as exc:
                log.error("model %r: preprocessor failed to load: %s", key, exc)
                if self.health is not None:
                    await self.health.set_model(key, False)
                continue
            if self.health is not None:
                await self.health.set_model(key, True)
        for key in self.cache.forget_missing():
            log.info("model %r left the repository", key)
            if self.health is not None:
                await self.health.set_model(key, False)
