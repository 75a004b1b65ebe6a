"""The tokenizer service as a real process over real gRPC: outputs equal the shared runtime's, every error case
gets its precise status, health / reflection / metrics answer, new repository entries are picked up."""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from PIL import Image

from mmsearch.model_repo import ModelRepository, write_manifest
from mmsearch.runtime.image import ImagePreprocessor
from mmsearch.runtime.text import TextPreprocessor
from services.tokenizer.client import ServiceCallError, TokenizedTexts, TokenizerClient
from tests.fixtures.grpc_services import (
    RunningService,
    health_status,
    list_services,
    scrape_metrics,
    start_service,
)
from tests.fixtures.ports import wait_until
from tests.fixtures.prometheus import metric_value

pytestmark = pytest.mark.integration

TEXTS = ["How do I renew a building permit?", "hi", "¿Dónde está la biblioteca?", "深度学习 是 什么"]


def tokenize(target: str, model: str, texts: list[str]) -> TokenizedTexts:
    async def go() -> TokenizedTexts:
        async with TokenizerClient(target) as client:
            return await client.tokenize(model, texts)

    return asyncio.run(go())


def preprocess(target: str, model: str, images: list[bytes]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with TokenizerClient(target, max_message_mb=64) as client:
            return await client.preprocess_images(model, images)

    return asyncio.run(go())


def status_of(call: Any) -> ServiceCallError:
    with pytest.raises(ServiceCallError) as info:
        call()
    return info.value


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo() -> bytes:
    from skimage import data

    return png(Image.fromarray(data.astronaut()))


def test_tokenize_equals_the_shared_preprocessor(tokenizer_target: str, model_repo: ModelRepository) -> None:
    got = tokenize(tokenizer_target, "minilm", TEXTS)
    want = TextPreprocessor.from_repo(model_repo, "minilm").prep(TEXTS)
    # Names are exactly the ONNX inputs, so the search service forwards them to Predict unchanged.
    assert sorted(got.tensors) == sorted(model_repo.manifest("minilm").input_names)
    for name, array in want.tensors.items():
        assert got.tensors[name].dtype == np.int64
        np.testing.assert_array_equal(got.tensors[name], array)
    assert got.truncated == [False] * len(TEXTS)


def test_tokenize_reports_truncation(tokenizer_target: str, model_repo: ModelRepository) -> None:
    max_len = model_repo.manifest("minilm").max_seq_len
    assert max_len is not None
    got = tokenize(tokenizer_target, "minilm", ["word " * (2 * max_len), "short"])
    assert got.truncated == [True, False]
    assert got.tensors["input_ids"].shape == (2, max_len)


def test_tokenize_clip_text_tower(tokenizer_target: str, model_repo: ModelRepository) -> None:
    got = tokenize(tokenizer_target, "tiny-clip-text", ["a photo of a cat"])
    assert sorted(got.tensors) == sorted(model_repo.manifest("tiny-clip-text").input_names)


def test_unknown_model_is_not_found_and_lists_models(tokenizer_target: str) -> None:
    err = status_of(lambda: tokenize(tokenizer_target, "no-such-model", ["x"]))
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in err.details
    assert "minilm" in err.details
    assert "tiny-clip-image" in err.details
    assert not err.unavailable


def test_empty_batch_is_invalid(tokenizer_target: str) -> None:
    err = status_of(lambda: tokenize(tokenizer_target, "minilm", []))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in err.details


def test_too_many_texts_is_invalid(tokenizer_target: str) -> None:
    err = status_of(lambda: tokenize(tokenizer_target, "minilm", ["x"] * 257))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "257" in err.details
    assert "256" in err.details


def test_texts_to_an_image_tower_is_invalid(tokenizer_target: str) -> None:
    err = status_of(lambda: tokenize(tokenizer_target, "tiny-clip-image", ["x"]))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "PreprocessImages" in err.details


def test_preprocess_images_equals_the_shared_preprocessor(
    tokenizer_target: str, model_repo: ModelRepository, photo: bytes
) -> None:
    got = preprocess(tokenizer_target, "tiny-clip-image", [photo, photo])
    pre = ImagePreprocessor.from_repo(model_repo, "tiny-clip-image")
    want = pre.prep([photo])
    assert list(got) == [pre.input_name]
    assert got[pre.input_name].shape == (2, *want.shape[1:])
    np.testing.assert_array_equal(got[pre.input_name][1:], want)


def test_images_to_a_text_model_is_invalid(tokenizer_target: str, photo: bytes) -> None:
    err = status_of(lambda: preprocess(tokenizer_target, "minilm", [photo]))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Tokenize" in err.details


def test_undecodable_image_names_its_index(tokenizer_target: str, photo: bytes) -> None:
    err = status_of(lambda: preprocess(tokenizer_target, "tiny-clip-image", [photo, b"not an image at all"]))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "image 1" in err.details


def test_decompression_bomb_is_refused_with_its_index(tokenizer_target: str) -> None:
    # 8000 x 8000 of one colour compresses to a few kB but is 64 Mpx, over the 50 Mpx default.
    bomb = png(Image.new("L", (8000, 8000)))
    assert len(bomb) < 1_000_000
    err = status_of(lambda: preprocess(tokenizer_target, "tiny-clip-image", [bomb]))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "image 0" in err.details


def test_oversized_image_bytes_are_refused_with_its_index(tokenizer_target: str, photo: bytes) -> None:
    big = photo + b"\0" * (21 * 1024 * 1024)  # over the 20 MB default, under the 32 MB message limit
    err = status_of(lambda: preprocess(tokenizer_target, "tiny-clip-image", [photo, big]))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "image 1" in err.details
    assert "20 MB" in err.details


def test_message_over_the_limit_is_resource_exhausted(tokenizer_target: str) -> None:
    huge = "x" * (33 * 1024 * 1024)  # the tokenizer's default message limit is 32 MB
    err = status_of(lambda: tokenize(tokenizer_target, "minilm", [huge]))
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_health_has_an_entry_per_model(tokenizer_target: str) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health_status(tokenizer_target) == serving
    assert health_status(tokenizer_target, "mmsearch.api.v1.Tokenizer") == serving
    for key in ("minilm", "tiny-clip-text", "tiny-clip-image"):
        assert health_status(tokenizer_target, f"model/{key}") == serving
    assert health_status(tokenizer_target, "model/nope") == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


def test_reflection_lists_the_services(tokenizer_target: str) -> None:
    assert list_services(tokenizer_target) == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "mmsearch.api.v1.Tokenizer",
    ]


def test_metrics_count_requests_and_errors(tokenizer_service: RunningService) -> None:
    tokenize(tokenizer_service.target, "minilm", ["count me"])
    status_of(lambda: tokenize(tokenizer_service.target, "minilm", []))
    text = scrape_metrics(tokenizer_service)
    assert metric_value(text, "mmsearch_tokenizer_requests_total", method="Tokenize", model="minilm") >= 2
    assert (
        metric_value(
            text, "mmsearch_tokenizer_errors_total", method="Tokenize", model="minilm", code="INVALID_ARGUMENT"
        )
        >= 1
    )
    assert metric_value(text, "mmsearch_tokenizer_request_seconds_count", method="Tokenize", model="minilm") >= 2


@pytest.fixture
def own_repo(tmp_path: Path, model_repo: ModelRepository) -> ModelRepository:
    repo = ModelRepository(tmp_path / "repo")
    repo.root.mkdir()
    (repo.root / "minilm").symlink_to(model_repo.path("minilm"))
    return repo


def add_copy(source: ModelRepository, key: str, dest: ModelRepository, new_key: str) -> None:
    """Publish `key` again under `new_key` (its files linked, its manifest rewritten), as an export would."""
    manifest = source.manifest(key)
    with dest.writer(new_key) as staging:
        for path in source.path(key).iterdir():
            if path.name != "manifest.json":
                (staging / path.name).symlink_to(path)
        write_manifest(staging, manifest.model_copy(update={"key": new_key}))


@pytest.fixture
def own_tokenizer(own_repo: ModelRepository, grpc_logs: Path) -> Iterator[RunningService]:
    with start_service("tokenizer", own_repo.root, "--rescan-seconds", "0", log_dir=grpc_logs) as service:
        yield service


def test_new_model_is_served_without_restart(
    own_tokenizer: RunningService, own_repo: ModelRepository, model_repo: ModelRepository
) -> None:
    err = status_of(lambda: tokenize(own_tokenizer.target, "minilm-copy", ["x"]))
    assert err.code == grpc.StatusCode.NOT_FOUND
    add_copy(model_repo, "minilm", own_repo, "minilm-copy")
    got = tokenize(own_tokenizer.target, "minilm-copy", TEXTS)
    want = tokenize(own_tokenizer.target, "minilm", TEXTS)
    np.testing.assert_array_equal(got.tensors["input_ids"], want.tensors["input_ids"])
    assert health_status(own_tokenizer.target, "model/minilm-copy") == health_pb2.HealthCheckResponse.SERVING
    shutil.rmtree(own_repo.path("minilm-copy"))

    def gone() -> bool:
        # A cached preprocessor is rechecked against the repository about once a second.
        try:
            tokenize(own_tokenizer.target, "minilm-copy", ["x"])
        except ServiceCallError as exc:
            return exc.code == grpc.StatusCode.NOT_FOUND
        return False

    wait_until(gone, what="removed model to be NOT_FOUND")
