"""The tokenizer servicer called directly (no network): results and the status of each refusal."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from mmsearch.api.v1 import tokenizer_pb2
from mmsearch.grpc_common.errors import RpcStatusError
from mmsearch.model_repo import ModelRepository
from mmsearch.runtime.text import TextPreprocessor
from mmsearch.settings import TokenizerSettings
from mmsearch.tensors import map_from_proto
from services.tokenizer.preprocessors import PreprocessorCache
from services.tokenizer.servicer import TokenizerMetrics, TokenizerServicer


@pytest.fixture
def servicer(model_repo: ModelRepository) -> Iterator[TokenizerServicer]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        cache = PreprocessorCache(model_repo, max_image_pixels=1_000_000)
        yield TokenizerServicer(cache, TokenizerSettings(max_batch=4), pool, TokenizerMetrics(CollectorRegistry()))


def tokenize(servicer: TokenizerServicer, model: str, texts: list[str]) -> Any:
    request = tokenizer_pb2.TokenizeRequest(model_name=model, texts=texts)
    return asyncio.run(servicer._tokenize(request))


def refusal(call: Any) -> RpcStatusError:
    with pytest.raises(RpcStatusError) as info:
        call()
    return info.value


def test_tokenize(servicer: TokenizerServicer, model_repo: ModelRepository) -> None:
    reply = tokenize(servicer, "minilm", ["hello there", "hi"])
    want = TextPreprocessor.from_repo(model_repo, "minilm").prep(["hello there", "hi"])
    got = map_from_proto(reply.tensors)
    for name, array in want.tensors.items():
        np.testing.assert_array_equal(got[name], array)
    assert list(reply.truncated) == [False, False]


@pytest.mark.parametrize(
    ("model", "texts", "code", "words"),
    [
        ("nope", ["x"], grpc.StatusCode.NOT_FOUND, ["'nope'", "minilm"]),
        ("../etc", ["x"], grpc.StatusCode.NOT_FOUND, ["minilm"]),
        ("minilm", [], grpc.StatusCode.INVALID_ARGUMENT, ["empty"]),
        ("minilm", ["x"] * 5, grpc.StatusCode.INVALID_ARGUMENT, ["5 texts", "limit is 4"]),
        ("tiny-clip-image", ["x"], grpc.StatusCode.INVALID_ARGUMENT, ["clip_image", "PreprocessImages"]),
    ],
)
def test_refusals(servicer: TokenizerServicer, model: str, texts: list[str], code: Any, words: list[str]) -> None:
    err = refusal(lambda: tokenize(servicer, model, texts))
    assert err.code == code
    for word in words:
        assert word in err.message


def test_images(servicer: TokenizerServicer) -> None:
    request = tokenizer_pb2.PreprocessImagesRequest(model_name="tiny-clip-image", images=[b"", b"junk"])
    err = refusal(lambda: asyncio.run(servicer._preprocess_images(request)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "image 0" in err.message
