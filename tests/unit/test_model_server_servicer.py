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
from mmsearch.tensors import map_from_proto, map_to_proto
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
