"""Async client of the tokenizer service, for the search service.

    async with TokenizerClient("127.0.0.1:60051", timeout=3.0) as tok:
        batch = await tok.tokenize("minilm", ["how do I ..."])
        batch.tensors  # {"input_ids": int64 [n, len], "attention_mask": ..., ...}: pass to ModelServerClient.predict
        pixels = await tok.preprocess_images("clip-image", [jpeg_bytes])  # {"pixel_values": float32 [n,3,H,W]}

Every failure raises ServiceCallError carrying the gRPC status code (`.unavailable` for UNAVAILABLE,
DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED, i.e. HTTP 503).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from grpc import aio

from mmsearch.api.v1 import tokenizer_pb2, tokenizer_pb2_grpc
from mmsearch.grpc_common.client import ClientTls, ServiceCallError, call, check_health, open_channel
from mmsearch.tensors import map_from_proto

__all__ = ["ServiceCallError", "TokenizedTexts", "TokenizerClient"]

SERVICE = "Tokenizer"


@dataclass(frozen=True)
class TokenizedTexts:
    tensors: dict[str, npt.NDArray[Any]]  # named as the model's ONNX inputs
    truncated: list[bool]  # one per text: cut at the model's max length


class TokenizerClient:
    """One channel to the tokenizer service; create and use it inside the running event loop."""

    def __init__(
        self, target: str, *, timeout: float = 3.0, max_message_mb: int = 32, tls: ClientTls | None = None
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.max_message_mb = max_message_mb
        self.tls = tls
        self._channel: aio.Channel | None = None
        self._stub: tokenizer_pb2_grpc.TokenizerAsyncStub | None = None

    def _get_stub(self) -> tokenizer_pb2_grpc.TokenizerAsyncStub:
        # grpc.aio channels bind to the event loop that is running when they are made: create them lazily.
        if self._stub is None:
            self._channel = open_channel(self.target, max_message_mb=self.max_message_mb, tls=self.tls)
            self._stub = tokenizer_pb2_grpc.TokenizerStub(self._channel)
        return self._stub

    async def tokenize(self, model: str, texts: Sequence[str], *, timeout: float | None = None) -> TokenizedTexts:
        stub = self._get_stub()
        request = tokenizer_pb2.TokenizeRequest(model_name=model, texts=list(texts))
        reply = await call(SERVICE, "Tokenize", lambda: stub.Tokenize(request, timeout=timeout or self.timeout))
        return TokenizedTexts(tensors=map_from_proto(reply.tensors), truncated=list(reply.truncated))

    async def tokenize_pairs(
        self, model: str, query: str, documents: Sequence[str], *, timeout: float | None = None
    ) -> TokenizedTexts:
        """Token tensors of (query, document) pairs for the cross-encoder `model`, one row per document."""
        stub = self._get_stub()
        request = tokenizer_pb2.TokenizePairsRequest(model_name=model, query=query, documents=list(documents))
        reply = await call(
            SERVICE, "TokenizePairs", lambda: stub.TokenizePairs(request, timeout=timeout or self.timeout)
        )
        return TokenizedTexts(tensors=map_from_proto(reply.tensors), truncated=list(reply.truncated))

    async def preprocess_images(
        self, model: str, images: Sequence[bytes], *, timeout: float | None = None
    ) -> dict[str, npt.NDArray[np.float32]]:
        stub = self._get_stub()
        request = tokenizer_pb2.PreprocessImagesRequest(model_name=model, images=list(images))
        reply = await call(
            SERVICE, "PreprocessImages", lambda: stub.PreprocessImages(request, timeout=timeout or self.timeout)
        )
        return {name: np.asarray(a, dtype=np.float32) for name, a in map_from_proto(reply.tensors).items()}

    async def health(self, model: str | None = None, *, timeout: float | None = None) -> bool:
        """True when the service (or, with `model`, that model's preprocessor) reports SERVING."""
        return await check_health(self._get_channel(), SERVICE, model, timeout or self.timeout)

    def _get_channel(self) -> aio.Channel:
        self._get_stub()
        assert self._channel is not None
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
        self._channel, self._stub = None, None

    async def __aenter__(self) -> TokenizerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
