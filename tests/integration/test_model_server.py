"""The model server as a real process over real gRPC: vectors equal the in-process encoder, batched equals
unbatched, every bad request gets its precise status, and the server's life cycle (health per model, broken
models, load/unload/rescan, full queue, graceful stop) behaves."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from grpc_health.v1 import health_pb2
from PIL import Image

from mmsearch.model_repo import ModelRepository, write_manifest
from mmsearch.runtime.encoder import OnnxEncoder
from mmsearch.runtime.text import TextPreprocessor
from services.model_server.client import (
    ModelServerClient,
    ModelStatus,
    ServiceCallError,
    embed_images,
    tokenize_then_embed,
)
from services.tokenizer.client import TokenizerClient
from tests.fixtures.grpc_services import (
    RunningService,
    health_status,
    list_services,
    scrape_metrics,
    start_service,
)
from tests.fixtures.prometheus import metric_value

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

TEXTS = [
    "How do I renew a building permit?",
    "hi",
    "What documents are needed to open a restaurant in the old town, and how long does the licence take?",
    "noise complaint",
    "¿Dónde está la biblioteca?",
    "Can I park a caravan on a public street overnight?",
    "tax",
    "Who do I call about a broken street light near the river?",
]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def predict(target: str, model: str, inputs: dict[str, npt.NDArray[Any]], outputs: tuple[str, ...] = ()) -> Any:
    async def go() -> Any:
        async with ModelServerClient(target) as client:
            return await client.predict(model, inputs, outputs)

    return run(go())


def list_models(target: str) -> dict[str, ModelStatus]:
    async def go() -> list[ModelStatus]:
        async with ModelServerClient(target) as client:
            return await client.list_models()

    return {m.key: m for m in run(go())}


def status_of(call: Callable[[], Any]) -> ServiceCallError:
    with pytest.raises(ServiceCallError) as info:
        call()
    return info.value


@pytest.fixture(scope="module")
def minilm_inputs(model_repo: ModelRepository) -> dict[str, npt.NDArray[np.int64]]:
    return TextPreprocessor.from_repo(model_repo, "minilm").prep(TEXTS[:2]).tensors


def test_text_vectors_equal_the_in_process_encoder(
    tokenizer_target: str, model_server_target: str, model_repo: ModelRepository
) -> None:
    async def go() -> npt.NDArray[np.float32]:
        async with TokenizerClient(tokenizer_target) as tok, ModelServerClient(model_server_target) as models:
            return await tokenize_then_embed(tok, models, "minilm", TEXTS)

    got = run(go())
    want = OnnxEncoder.from_repo(model_repo, "minilm").encode_texts(TEXTS)
    assert got.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("model", ["minilm", "tiny-clip-text"])
def test_embed_in_one_call_equals_tokenizer_then_predict(
    tokenizer_target: str, model_server_target: str, model_server_service: RunningService, model: str
) -> None:
    async def go() -> tuple[Any, npt.NDArray[np.float32], list[Any]]:
        async with TokenizerClient(tokenizer_target) as tok, ModelServerClient(model_server_target) as models:
            one_call = await models.embed_texts(model, TEXTS)
            two_calls = await tokenize_then_embed(tok, models, model, TEXTS)
            # Concurrent single-text calls share the server's batches like Predict calls do.
            together = await asyncio.gather(*(models.embed_texts(model, [t]) for t in TEXTS * 4))
            return one_call, two_calls, list(together)

    before = scrape_metrics(model_server_service)
    one_call, two_calls, together = run(go())
    after = scrape_metrics(model_server_service)
    assert one_call.vectors.shape == two_calls.shape
    np.testing.assert_allclose(one_call.vectors, two_calls, atol=1e-5)
    for i, emb in enumerate(together):
        np.testing.assert_allclose(emb.vectors[0], two_calls[i % len(TEXTS)], atol=1e-5)
    assert one_call.version
    assert {e.version for e in together} == {one_call.version}
    assert list_models(model_server_service.target)[model].version == one_call.version

    def embeds(text: str) -> float:
        return metric_value(text, "mmsearch_model_server_requests_total", method="Embed", model=model)

    assert embeds(after) - embeds(before) == 1 + len(together)


def test_image_vectors_equal_the_in_process_encoder(
    tokenizer_target: str, model_server_target: str, model_repo: ModelRepository
) -> None:
    from skimage import data

    photos = []
    for array in (data.astronaut(), data.chelsea(), data.coffee()):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="JPEG")
        photos.append(buf.getvalue())

    async def go() -> npt.NDArray[np.float32]:
        async with TokenizerClient(tokenizer_target) as tok, ModelServerClient(model_server_target) as models:
            return await embed_images(tok, models, "tiny-clip-image", photos)

    got = run(go())
    want = OnnxEncoder.from_repo(model_repo, "tiny-clip-image").encode_images(photos)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_concurrent_requests_are_batched_and_equal_single_ones(
    tokenizer_target: str, model_server_target: str, model_server_service: RunningService
) -> None:
    async def go() -> tuple[list[npt.NDArray[np.float32]], list[npt.NDArray[np.float32]]]:
        async with TokenizerClient(tokenizer_target) as tok, ModelServerClient(model_server_target) as models:
            batches = [await tok.tokenize("minilm", [t]) for t in TEXTS * 4]
            single = [await models.embed("minilm", b.tensors) for b in batches[: len(TEXTS)]]
            together = await asyncio.gather(*(models.embed("minilm", b.tensors) for b in batches))
            return single, list(together)

    before = scrape_metrics(model_server_service)
    single, together = run(go())
    after = scrape_metrics(model_server_service)
    for i, vector in enumerate(together):
        # Padding to the group's longest text with attention_mask 0 must not change a vector.
        np.testing.assert_allclose(vector, single[i % len(TEXTS)], atol=1e-5)

    def grouped(text: str) -> float:
        requests = metric_value(text, "mmsearch_model_server_requests_per_batch_sum", model="minilm")
        calls = metric_value(text, "mmsearch_model_server_requests_per_batch_count", model="minilm")
        return requests - calls  # requests that shared an ORT call with another one

    assert grouped(after) > grouped(before), "32 concurrent requests never shared a batch"


def test_token_embeddings_are_cropped_back_to_each_request(tokenizer_target: str, model_server_target: str) -> None:
    async def go() -> list[dict[str, npt.NDArray[Any]]]:
        async with TokenizerClient(tokenizer_target) as tok, ModelServerClient(model_server_target) as models:
            batches = [await tok.tokenize("minilm", [t]) for t in TEXTS]
            return list(await asyncio.gather(*(models.predict("minilm", b.tensors) for b in batches)))

    for text, out in zip(TEXTS, run(go()), strict=True):
        assert out["token_embeddings"].shape[:2] == (1, out["token_embeddings"].shape[1])
        assert out["sentence_embedding"].shape == (1, 384)
        assert out["token_embeddings"].shape[1] >= len(text.split()) // 2


BAD_INPUTS: dict[str, tuple[Callable[[dict[str, npt.NDArray[Any]]], dict[str, npt.NDArray[Any]]], str]] = {
    "missing input": (lambda x: {k: v for k, v in x.items() if k != "attention_mask"}, "attention_mask"),
    "extra input": (lambda x: {**x, "pixel_values": np.zeros((2, 3), np.float32)}, "pixel_values"),
    "wrong dtype": (lambda x: {**x, "input_ids": x["input_ids"].astype(np.int32)}, "input_ids"),
    "wrong rank": (lambda x: {**x, "attention_mask": x["attention_mask"][0]}, "attention_mask"),
    "empty batch": (lambda x: {k: v[:0] for k, v in x.items()}, "empty batch"),
    "batch sizes differ": (lambda x: {**x, "token_type_ids": x["token_type_ids"][:1]}, "token_type_ids"),
    "sequence lengths differ": (lambda x: {**x, "attention_mask": x["attention_mask"][:, :2]}, "attention_mask"),
    "token id out of vocabulary": (lambda x: {**x, "input_ids": x["input_ids"] + 10**6}, "minilm"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_are_invalid_argument_naming_the_tensor(
    case: str, model_server_target: str, minilm_inputs: dict[str, npt.NDArray[np.int64]]
) -> None:
    make, named = BAD_INPUTS[case]
    err = status_of(lambda: predict(model_server_target, "minilm", make(minilm_inputs)))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert named in err.details


def test_undecodable_tensor_is_invalid_argument(model_server_target: str) -> None:
    from mmsearch.api.v1 import model_server_pb2, model_server_pb2_grpc, tensor_pb2

    short = tensor_pb2.Tensor(dtype="int64", shape=[1, 4], data=b"\0" * 8)  # needs 32 bytes
    with grpc.insecure_channel(model_server_target) as channel:
        stub = model_server_pb2_grpc.ModelServerStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(model_server_pb2.PredictRequest(model_name="minilm", inputs={"input_ids": short}), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input_ids" in (info.value.details() or "")


def test_unknown_output_is_invalid_argument(
    model_server_target: str, minilm_inputs: dict[str, npt.NDArray[np.int64]]
) -> None:
    err = status_of(lambda: predict(model_server_target, "minilm", minilm_inputs, ("pooled", "sentence_embedding")))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "pooled" in err.details
    assert "token_embeddings" in err.details  # says what exists


def test_requested_outputs_only(model_server_target: str, minilm_inputs: dict[str, npt.NDArray[np.int64]]) -> None:
    out = predict(model_server_target, "minilm", minilm_inputs, ("sentence_embedding",))
    assert list(out) == ["sentence_embedding"]
    assert out["sentence_embedding"].shape == (2, 384)


def test_unknown_model_is_not_found_listing_models(
    model_server_target: str, minilm_inputs: dict[str, npt.NDArray[np.int64]]
) -> None:
    err = status_of(lambda: predict(model_server_target, "bert-large", minilm_inputs))
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert "bert-large" in err.details
    assert "minilm" in err.details
    assert "tiny-clip-text" in err.details


def test_list_models_gives_signatures(model_server_target: str) -> None:
    models = list_models(model_server_target)
    assert sorted(models) == ["minilm", "tiny-clip-image", "tiny-clip-text"]
    minilm = models["minilm"]
    assert (minilm.state, minilm.kind, minilm.embedding_dim) == ("loaded", "text_embedding", 384)
    assert {t.name for t in minilm.inputs} == {"input_ids", "attention_mask", "token_type_ids"}
    assert next(t for t in minilm.outputs if t.name == "sentence_embedding").shape == [-1, 384]
    assert models["tiny-clip-image"].inputs[0].name == "pixel_values"


def test_health_per_model_and_reflection(model_server_target: str) -> None:
    assert health_status(model_server_target) == SERVING
    assert health_status(model_server_target, "mmsearch.api.v1.ModelServer") == SERVING
    for key in ("minilm", "tiny-clip-text", "tiny-clip-image"):
        assert health_status(model_server_target, f"model/{key}") == SERVING
    assert "mmsearch.api.v1.ModelServer" in list_services(model_server_target)
    assert "grpc.health.v1.Health" in list_services(model_server_target)


def test_metrics_expose_requests_latency_batches_and_errors(
    model_server_service: RunningService, minilm_inputs: dict[str, npt.NDArray[np.int64]]
) -> None:
    predict(model_server_service.target, "minilm", minilm_inputs)
    status_of(lambda: predict(model_server_service.target, "minilm", {}))
    text = scrape_metrics(model_server_service)
    assert metric_value(text, "mmsearch_model_server_requests_total", method="Predict", model="minilm") >= 2
    assert metric_value(text, "mmsearch_model_server_request_seconds_count", method="Predict", model="minilm") >= 2
    assert metric_value(text, "mmsearch_model_server_errors_total", model="minilm", code="INVALID_ARGUMENT") >= 1
    assert metric_value(text, "mmsearch_model_server_batch_size_count", model="minilm") >= 1
    assert metric_value(text, "mmsearch_model_server_queue_wait_seconds_count", model="minilm") >= 1
    assert metric_value(text, "mmsearch_model_server_model_state", model="minilm", state="loaded") == 1


# --- servers of their own: a repository with a broken model, tiny limits, a graceful stop ---------------------


def link_model(source: ModelRepository, key: str, dest: ModelRepository, new_key: str) -> None:
    """Publish `key` under `new_key` in `dest` (files linked, manifest rewritten), as an export would."""
    manifest = source.manifest(key)
    with dest.writer(new_key) as staging:
        for path in source.path(key).iterdir():
            if path.name != "manifest.json":
                (staging / path.name).symlink_to(path)
        write_manifest(staging, manifest.model_copy(update={"key": new_key}))


@pytest.fixture(scope="module")
def broken_repo(tmp_path_factory: pytest.TempPathFactory, model_repo: ModelRepository) -> ModelRepository:
    repo = ModelRepository(tmp_path_factory.mktemp("repo-with-broken-model"))
    link_model(model_repo, "minilm", repo, "minilm")
    manifest = model_repo.manifest("minilm")
    with repo.writer("broken") as staging:
        (staging / manifest.onnx_file).write_bytes(b"this is not an ONNX graph")
        write_manifest(staging, manifest.model_copy(update={"key": "broken"}))
    return repo


@pytest.fixture(scope="module")
def lifecycle_server(broken_repo: ModelRepository, grpc_logs: Path) -> Iterator[RunningService]:
    # No rescans: LoadModel alone must pick new entries up. minilm unbatched: the per-model switch.
    flags = ["--rescan-seconds", "0", "--no-batching-model", "minilm", "--intra-op-threads", "1"]
    with start_service("model", broken_repo.root, *flags, log_dir=grpc_logs, name="lifecycle") as service:
        yield service


def test_broken_model_is_failed_while_others_serve(
    lifecycle_server: RunningService, minilm_inputs: dict[str, npt.NDArray[np.int64]], model_server_target: str
) -> None:
    target = lifecycle_server.target
    models = list_models(target)
    assert models["broken"].state == "failed"
    assert "ONNX" in models["broken"].error or "onnx" in models["broken"].error
    assert models["minilm"].state == "loaded"
    assert health_status(target) == SERVING
    assert health_status(target, "model/broken") == NOT_SERVING
    assert health_status(target, "model/minilm") == SERVING
    err = status_of(lambda: predict(target, "broken", minilm_inputs))
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert "failed to load" in err.details
    assert "model 'broken' failed to load" in lifecycle_server.log_text()
    # Unbatched minilm gives the same vectors as the batched session server.
    unbatched = predict(target, "minilm", minilm_inputs, ("sentence_embedding",))["sentence_embedding"]
    batched = predict(model_server_target, "minilm", minilm_inputs, ("sentence_embedding",))["sentence_embedding"]
    np.testing.assert_allclose(unbatched, batched, atol=1e-5)


def test_model_added_after_start_is_loaded_by_load_model(
    lifecycle_server: RunningService,
    broken_repo: ModelRepository,
    model_repo: ModelRepository,
    minilm_inputs: dict[str, npt.NDArray[np.int64]],
) -> None:
    target = lifecycle_server.target
    link_model(model_repo, "minilm", broken_repo, "minilm-late")
    err = status_of(lambda: predict(target, "minilm-late", minilm_inputs))
    assert err.code == grpc.StatusCode.NOT_FOUND  # no rescans: not served before LoadModel

    async def load() -> ModelStatus:
        async with ModelServerClient(target) as client:
            return await client.load_model("minilm-late")

    status = run(load())
    assert (status.key, status.state) == ("minilm-late", "loaded")
    assert health_status(target, "model/minilm-late") == SERVING
    out = predict(target, "minilm-late", minilm_inputs, ("sentence_embedding",))
    assert out["sentence_embedding"].shape == (2, 384)


def test_load_model_of_a_missing_key_is_not_found(lifecycle_server: RunningService) -> None:
    async def load() -> ModelStatus:
        async with ModelServerClient(lifecycle_server.target) as client:
            return await client.load_model("never-exported")

    err = status_of(lambda: run(load()))
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert "minilm" in err.details


def test_unload_then_reload(lifecycle_server: RunningService, minilm_inputs: dict[str, npt.NDArray[np.int64]]) -> None:
    target = lifecycle_server.target

    async def unload() -> None:
        async with ModelServerClient(target) as client:
            await client.unload_model("minilm")

    run(unload())
    assert list_models(target)["minilm"].state == "unloaded"
    assert health_status(target, "model/minilm") == NOT_SERVING
    err = status_of(lambda: predict(target, "minilm", minilm_inputs))
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert "LoadModel" in err.details

    async def load() -> ModelStatus:
        async with ModelServerClient(target) as client:
            return await client.load_model("minilm")

    assert run(load()).state == "loaded"
    assert predict(target, "minilm", minilm_inputs)["sentence_embedding"].shape == (2, 384)


def test_rescan_picks_up_a_new_model(
    grpc_logs: Path,
    tmp_path: Path,
    model_repo: ModelRepository,
    minilm_inputs: dict[str, npt.NDArray[np.int64]],
) -> None:
    repo = ModelRepository(tmp_path / "repo")
    link_model(model_repo, "tiny-clip-text", repo, "tiny-clip-text")
    with start_service("model", repo.root, "--rescan-seconds", "0.2", log_dir=grpc_logs, name="rescan") as server:
        assert sorted(list_models(server.target)) == ["tiny-clip-text"]
        link_model(model_repo, "minilm", repo, "minilm")
        deadline = time.monotonic() + 60
        while health_status(server.target, "model/minilm") != SERVING:
            assert time.monotonic() < deadline, "the rescan did not load the new model"
            time.sleep(0.1)
        assert predict(server.target, "minilm", minilm_inputs)["sentence_embedding"].shape == (2, 384)


@pytest.fixture
def limits_server(model_repo: ModelRepository, grpc_logs: Path) -> Iterator[RunningService]:
    # One request in flight and one waiting at most; small messages.
    flags = ["--max-queue-size", "1", "--max-batch-size", "1", "--max-message-mb", "2", "--grace-seconds", "30"]
    with start_service("model", model_repo.root, *flags, log_dir=grpc_logs, name="limits") as service:
        yield service


def heavy_inputs(model_repo: ModelRepository, rows: int = 32) -> dict[str, npt.NDArray[np.int64]]:
    """A request that keeps ORT busy for a while on CPU: many rows at the full sequence length."""
    return TextPreprocessor.from_repo(model_repo, "minilm").prep(["word " * 300] * rows).tensors


def test_full_queue_fails_fast_with_resource_exhausted(
    limits_server: RunningService, model_repo: ModelRepository
) -> None:
    inputs = heavy_inputs(model_repo)

    async def go() -> list[ServiceCallError | None]:
        async with ModelServerClient(limits_server.target, timeout=120) as client:

            async def one() -> ServiceCallError | None:
                try:
                    await client.predict("minilm", inputs, ["sentence_embedding"])
                except ServiceCallError as exc:
                    return exc
                return None

            return list(await asyncio.gather(*(one() for _ in range(8))))

    results = run(go())
    codes = [r.code for r in results if r is not None]
    assert codes, "8 concurrent heavy requests against a queue of 1 all succeeded"
    assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert any(r is None for r in results)
    assert all("queue is full" in r.details for r in results if r is not None)


def test_message_over_the_limit_is_resource_exhausted(limits_server: RunningService) -> None:
    big = {"input_ids": np.ones((1, 3 * 1024 * 1024 // 8), np.int64)}  # 3 MB > 2 MB limit
    err = status_of(lambda: predict(limits_server.target, "minilm", big))
    assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_sigterm_finishes_the_in_flight_call(limits_server: RunningService, model_repo: ModelRepository) -> None:
    inputs = heavy_inputs(model_repo, rows=64)

    async def go() -> npt.NDArray[np.float32]:
        async with ModelServerClient(limits_server.target, timeout=120) as client:
            call = asyncio.ensure_future(client.embed("minilm", inputs))
            # Wait until the server has the call in hand (its queue depth or batch count moves), then stop it.
            while not call.done() and "minilm" not in _busy(limits_server):
                await asyncio.sleep(0.01)
            os.kill(limits_server.proc.pid, signal.SIGTERM)
            return await call

    vectors = run(go())
    assert vectors.shape == (64, 384)
    assert limits_server.proc.wait(timeout=60) == 0
    assert "stopping: finishing in-flight calls" in limits_server.log_text()


def _busy(service: RunningService) -> str:
    text = scrape_metrics(service)
    waiting = metric_value(text, "mmsearch_model_server_queue_wait_seconds_count", model="minilm")
    return "minilm" if waiting >= 1 else ""
