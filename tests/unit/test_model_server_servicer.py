"""The model server's registry and servicer called directly (no network): loading, Predict, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from mmsearch.api.v1 import model_server_pb2
from mmsearch.grpc_common.errors import RpcStatusError
from mmsearch.model_repo import ModelRepository, write_manifest
from mmsearch.runtime.encoder import OnnxEncoder
from mmsearch.runtime.text import TextPreprocessor
from mmsearch.settings import ModelServerSettings
from mmsearch.tensors import from_proto, map_from_proto, map_to_proto
from services.model_server.metrics import ServingMetrics
from services.model_server.registry import ModelRegistry
from services.model_server.servicer import ModelServerServicer

T = TypeVar("T")


@pytest.fixture
def repo(tmp_path: Path, model_repo: ModelRepository) -> ModelRepository:
    """minilm (linked from the session repository) and a model whose ONNX file is garbage."""
    own = ModelRepository(tmp_path / "repo")
    own.root.mkdir()
    (own.root / "minilm").symlink_to(model_repo.path("minilm"))
    manifest = model_repo.manifest("minilm")
    with own.writer("broken") as staging:
        (staging / manifest.onnx_file).write_bytes(b"not onnx")
        write_manifest(staging, manifest.model_copy(update={"key": "broken"}))
    return own


def with_servicer(repo: ModelRepository, body: Callable[[ModelServerServicer], Awaitable[T]], **settings: Any) -> T:
    async def go() -> T:
        with ThreadPoolExecutor(max_workers=2) as pool:
            metrics = ServingMetrics(CollectorRegistry())
            registry = ModelRegistry(repo, ModelServerSettings(**settings), pool, metrics)
            await registry.load_all()
            try:
                return await body(ModelServerServicer(registry, pool, metrics))
            finally:
                await registry.stop()

    return asyncio.run(go())


def request(model: str, texts: list[str], repo: ModelRepository) -> model_server_pb2.PredictRequest:
    tensors = TextPreprocessor.from_repo(repo, "minilm").prep(texts).tensors
    return model_server_pb2.PredictRequest(model_name=model, inputs=map_to_proto(tensors))


@pytest.mark.parametrize("batching", [True, False])
def test_predict_equals_the_in_process_encoder(repo: ModelRepository, batching: bool) -> None:
    texts = ["a building permit", "hello"]

    async def body(servicer: ModelServerServicer) -> Any:
        return await servicer._predict(request("minilm", texts, repo))

    reply = with_servicer(repo, body, batching=batching)
    got = np.asarray(map_from_proto(reply.outputs)["sentence_embedding"], dtype=np.float32)
    np.testing.assert_allclose(got, OnnxEncoder.from_repo(repo, "minilm").encode_texts(texts), atol=1e-5)


def test_states_and_refusals(repo: ModelRepository) -> None:
    async def body(servicer: ModelServerServicer) -> list[Any]:
        infos = {m.key: m for m in (servicer._info(k) for k in servicer.registry.known_keys())}
        errors = []
        for model in ("broken", "gpt"):
            with pytest.raises(RpcStatusError) as info:
                await servicer._predict(request(model, ["x"], repo))
            errors.append(info.value)
        return [infos, *errors]

    infos, broken, unknown = with_servicer(repo, body)
    assert infos["minilm"].state == "loaded"
    assert infos["broken"].state == "failed"
    assert infos["broken"].error
    assert broken.code == grpc.StatusCode.UNAVAILABLE
    assert "failed to load" in broken.message
    assert unknown.code == grpc.StatusCode.NOT_FOUND
    assert "broken, minilm" in unknown.message


def embed_request(model: str, texts: list[str], output: str = "") -> model_server_pb2.EmbedRequest:
    return model_server_pb2.EmbedRequest(model_name=model, texts=texts, output_name=output)


# Up to INLINE_TOKENIZE_TEXTS texts are tokenized on the event loop, more in the thread pool: both paths.
EMBED_TEXTS = [f"how do I renew permit number {i}?" for i in range(12)]


@pytest.mark.parametrize("batching", [True, False])
@pytest.mark.parametrize("n", [1, 12])
def test_embed_tokenizes_in_process_and_equals_the_in_process_encoder(
    repo: ModelRepository, batching: bool, n: int
) -> None:
    texts = EMBED_TEXTS[:n]

    async def body(servicer: ModelServerServicer) -> Any:
        embed = await servicer._embed(embed_request("minilm", texts))
        predict = await servicer._predict(request("minilm", texts, repo))
        return embed, predict

    embed, predict = with_servicer(repo, body, batching=batching)
    got = np.asarray(from_proto(embed.embeddings), dtype=np.float32)
    assert got.shape == (n, 384)
    assert list(embed.truncated) == [False] * n
    assert embed.model_version
    assert embed.model_version == predict.model_version
    unit = got / np.linalg.norm(got, axis=1, keepdims=True)
    np.testing.assert_allclose(unit, OnnxEncoder.from_repo(repo, "minilm").encode_texts(texts), atol=1e-5)


def test_embed_flags_texts_cut_to_the_max_length(repo: ModelRepository) -> None:
    long_text = "permit " * 600

    async def body(servicer: ModelServerServicer) -> Any:
        return await servicer._embed(embed_request("minilm", ["short", long_text]))

    assert list(with_servicer(repo, body).truncated) == [False, True]


def test_embed_refusals(tmp_path: Path, model_repo: ModelRepository) -> None:
    own = ModelRepository(tmp_path / "repo")
    own.root.mkdir()
    for key in ("minilm", "tiny-clip-image"):
        (own.root / key).symlink_to(model_repo.path(key))

    async def body(servicer: ModelServerServicer) -> list[RpcStatusError]:
        errors = []
        for req in (
            embed_request("minilm", []),
            embed_request("minilm", ["a", "b", "c", "d"]),
            embed_request("minilm", ["a"], output="logits"),
            embed_request("tiny-clip-image", ["a photo of a cat"]),
            embed_request("gpt", ["a"]),
        ):
            with pytest.raises(RpcStatusError) as info:
                await servicer._embed(req)
            errors.append(info.value)
        return errors

    empty, too_many, output, image, unknown = with_servicer(own, body, max_embed_texts=3)
    assert empty.code == too_many.code == output.code == image.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "at least one" in empty.message
    assert "4 texts" in too_many.message
    assert "limit is 3" in too_many.message
    assert "logits" in output.message
    assert "clip_image" in image.message
    assert "PreprocessImages" in image.message
    assert unknown.code == grpc.StatusCode.NOT_FOUND
