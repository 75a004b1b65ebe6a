"""Async client of the model server, for the search service.

    async with ModelServerClient("127.0.0.1:50000", timeout=3.0) as models:
        vectors = await models.embed("minilm", batch.tensors)      # float32 [n, dim], L2-normalised
        emb = await models.embed_texts("minilm", ["how do I ..."])  # tokenized by the model server; + .version
        outputs = await models.predict("minilm", batch.tensors)     # every output, raw, by name
        infos = await models.list_models()                          # [ModelStatus(key, kind, state, ...)]

`tokenize_then_embed` / `embed_images` below chain the tokenizer and the model server. Every failure raises
ServiceCallError carrying the gRPC status code (`.unavailable` -> HTTP 503).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from grpc import aio

from mmsearch.api.v1 import model_server_pb2, model_server_pb2_grpc, tensor_pb2
from mmsearch.grpc_common.client import ClientTls, ServiceCallError, call, check_health, open_channel
from mmsearch.tensors import from_proto, map_from_proto, map_to_proto
from services.tokenizer.client import TokenizerClient

__all__ = ["ModelServerClient", "ModelStatus", "ServiceCallError", "TensorInfo", "embed_images", "tokenize_then_embed"]

SERVICE = "ModelServer"
EMBEDDING_OUTPUT = "sentence_embedding"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: list[int]  # -1: dynamic (batch, sequence)


@dataclass(frozen=True)
class Embedding:
    vectors: npt.NDArray[np.float32]  # [n, dim], L2-normalised
    version: str  # the model version that computed them (ModelStatus.version)


@dataclass(frozen=True)
class ModelStatus:
    key: str
    kind: str  # "text_embedding", "clip_text" or "clip_image"
    state: str  # "loaded", "loading", "unloaded" or "failed"
    error: str  # why it failed, when state == "failed"
    embedding_dim: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    version: str = ""  # the loaded version (as Embedding.version); "" while none is loaded

    @classmethod
    def from_proto(cls, info: model_server_pb2.ModelInfo) -> ModelStatus:
        return cls(
            key=info.key,
            kind=info.kind,
            state=info.state,
            error=info.error,
            embedding_dim=info.embedding_dim,
            inputs=[_spec(s) for s in info.inputs],
            outputs=[_spec(s) for s in info.outputs],
            version=info.version,
        )


def _unit_rows(array: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    emb = np.asarray(array, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = (emb / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


def _spec(spec: tensor_pb2.TensorSpec) -> TensorInfo:
    return TensorInfo(name=spec.name, dtype=spec.dtype, shape=[int(d) for d in spec.shape])


class ModelServerClient:
    """One channel to the model server; create and use it inside the running event loop."""

    def __init__(
        self, target: str, *, timeout: float = 3.0, max_message_mb: int = 64, tls: ClientTls | None = None
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.max_message_mb = max_message_mb
        self.tls = tls
        self._channel: aio.Channel | None = None
        self._stub: model_server_pb2_grpc.ModelServerAsyncStub | None = None

    def _get_stub(self) -> model_server_pb2_grpc.ModelServerAsyncStub:
        # grpc.aio channels bind to the event loop that is running when they are made: create them lazily.
        if self._stub is None:
            self._channel = open_channel(self.target, max_message_mb=self.max_message_mb, tls=self.tls)
            self._stub = model_server_pb2_grpc.ModelServerStub(self._channel)
        return self._stub

    async def predict(
        self,
        model: str,
        inputs: Mapping[str, npt.NDArray[Any]],
        output_names: Sequence[str] = (),
        *,
        timeout: float | None = None,
    ) -> dict[str, npt.NDArray[Any]]:
        """Run `model` on named input arrays; returns the requested outputs (all when none named)."""
        return (await self._predict(model, inputs, output_names, timeout=timeout))[0]

    async def _predict(
        self,
        model: str,
        inputs: Mapping[str, npt.NDArray[Any]],
        output_names: Sequence[str],
        *,
        timeout: float | None,
    ) -> tuple[dict[str, npt.NDArray[Any]], str]:
        stub = self._get_stub()
        request = model_server_pb2.PredictRequest(
            model_name=model, inputs=map_to_proto(inputs), output_names=list(output_names)
        )
        reply = await call(SERVICE, "Predict", lambda: stub.Predict(request, timeout=timeout or self.timeout))
        return map_from_proto(reply.outputs), reply.model_version

    async def embed(
        self,
        model: str,
        inputs: Mapping[str, npt.NDArray[Any]],
        *,
        output: str = EMBEDDING_OUTPUT,
        timeout: float | None = None,
    ) -> npt.NDArray[np.float32]:
        """The model's embedding output as float32 [n, dim], L2-normalised (as the index stores vectors)."""
        return (await self.embed_versioned(model, inputs, output=output, timeout=timeout)).vectors

    async def embed_versioned(
        self,
        model: str,
        inputs: Mapping[str, npt.NDArray[Any]],
        *,
        output: str = EMBEDDING_OUTPUT,
        timeout: float | None = None,
    ) -> Embedding:
        """`embed`, with the version of the model that computed the vectors (for callers that cache them)."""
        outputs, version = await self._predict(model, inputs, [output], timeout=timeout)
        return Embedding(_unit_rows(outputs[output]), version)

    async def embed_texts(
        self, model: str, texts: Sequence[str], *, output: str = "", timeout: float | None = None
    ) -> Embedding:
        """Query texts -> unit vectors [n, dim] in one call: the server tokenizes them with the model's own
        tokenizer (query prompt included). `output`: "" for the model's embedding output."""
        stub = self._get_stub()
        request = model_server_pb2.EmbedRequest(model_name=model, texts=list(texts), output_name=output)
        reply = await call(SERVICE, "Embed", lambda: stub.Embed(request, timeout=timeout or self.timeout))
        return Embedding(_unit_rows(from_proto(reply.embeddings, "embeddings")), reply.model_version)

    async def score_pairs(
        self, model: str, query: str, documents: Sequence[str], *, timeout: float | None = None
    ) -> npt.NDArray[np.float32]:
        """A cross-encoder's relevance score for each (query, document) pair, [len(documents)], in one call: the
        server tokenizes the pairs and applies the model's score rule."""
        stub = self._get_stub()
        request = model_server_pb2.ScorePairsRequest(model_name=model, query=query, documents=list(documents))
        reply = await call(SERVICE, "ScorePairs", lambda: stub.ScorePairs(request, timeout=timeout or self.timeout))
        return np.asarray(reply.scores, dtype=np.float32)

    async def list_models(self, *, timeout: float | None = None) -> list[ModelStatus]:
        stub = self._get_stub()
        reply = await call(
            SERVICE,
            "ListModels",
            lambda: stub.ListModels(model_server_pb2.ListModelsRequest(), timeout=timeout or self.timeout),
        )
        return [ModelStatus.from_proto(m) for m in reply.models]

    async def load_model(self, model: str, *, timeout: float = 120.0) -> ModelStatus:
        """Load or reload `model` from the repository (slow: loads and warms up); returns its state."""
        stub = self._get_stub()
        request = model_server_pb2.LoadModelRequest(model_name=model)
        reply = await call(SERVICE, "LoadModel", lambda: stub.LoadModel(request, timeout=timeout))
        return ModelStatus.from_proto(reply.model)

    async def unload_model(self, model: str, *, timeout: float | None = None) -> None:
        stub = self._get_stub()
        request = model_server_pb2.UnloadModelRequest(model_name=model)
        await call(SERVICE, "UnloadModel", lambda: stub.UnloadModel(request, timeout=timeout or self.timeout))

    async def health(self, model: str | None = None, *, timeout: float | None = None) -> bool:
        """True when the server (or, with `model`, that model) reports SERVING."""
        self._get_stub()
        assert self._channel is not None
        return await check_health(self._channel, SERVICE, model, timeout or self.timeout)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
        self._channel, self._stub = None, None

    async def __aenter__(self) -> ModelServerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def tokenize_then_embed(
    tokenizer: TokenizerClient,
    models: ModelServerClient,
    model: str,
    texts: Sequence[str],
    *,
    timeout: float | None = None,
) -> npt.NDArray[np.float32]:
    """Texts -> unit vectors [n, dim] in two calls: tokenize, then forward the tensors unchanged to the model
    (what `ModelServerClient.embed_texts` does in one; kept for clients that also want the tensors)."""
    batch = await tokenizer.tokenize(model, texts, timeout=timeout)
    return await models.embed(model, batch.tensors, timeout=timeout)


async def embed_images(
    tokenizer: TokenizerClient,
    models: ModelServerClient,
    model: str,
    images: Sequence[bytes],
    *,
    timeout: float | None = None,
) -> npt.NDArray[np.float32]:
    """Encoded images -> unit vectors [n, dim] with a CLIP image tower."""
    pixels = await tokenizer.preprocess_images(model, images, timeout=timeout)
    return await models.embed(model, pixels, timeout=timeout)
