"""A cross-encoder through the real tokenizer service and model server (gRPC over loopback): TokenizePairs gives
the model's own tokenisation of (query, document) pairs, and Predict on those tensors, batched on the server
with other callers' pairs, gives PyTorch's logits (exact order, within 1e-4); ScorePairs does both in one call
and gives PyTorch's scores."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mmsearch.model_repo import ModelRepository
from mmsearch.runtime.text import TextPreprocessor
from offline.export.cross_encoder import export_cross_encoder
from services.model_server.client import ModelServerClient, ServiceCallError
from services.tokenizer.client import TokenizedTexts, TokenizerClient
from tests.fixtures.grpc_services import start_service
from tests.fixtures.models import torch_pair_logits, write_classifier

pytestmark = pytest.mark.integration

CE = "tiny-ce"
QUERY = "when does the building permit office open?"
DOCS = [
    "The permit office opens at eight on weekdays.",
    "Cats sleep most of the day.",
    "Apply for a permit online; opening hours are listed on the city's site. " * 30,
    "营业时间为周一至周五。",
]


@pytest.fixture(scope="module")
def ce_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_classifier(tmp_path_factory.mktemp("ce-src"), labels=1, seed=11)


@pytest.fixture(scope="module")
def ce_repo(ce_source: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    repo = ModelRepository(tmp_path_factory.mktemp("ce-repo"))
    export_cross_encoder(str(ce_source), repo, CE)
    return repo


@pytest.fixture(scope="module")
def services(ce_repo: ModelRepository, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    logs = tmp_path_factory.mktemp("ce-logs")
    with (
        start_service("tokenizer", ce_repo.root, log_dir=logs, name="ce-tok") as tok,
        start_service("model", ce_repo.root, "--intra-op-threads", "1", log_dir=logs, name="ce-model") as model,
    ):
        yield tok.target, model.target


def _pairs(target: str, model: str, query: str, docs: list[str]) -> TokenizedTexts:
    async def go() -> TokenizedTexts:
        client = TokenizerClient(target, timeout=30)
        try:
            return await client.tokenize_pairs(model, query, docs)
        finally:
            await client.close()

    return asyncio.run(go())


def test_tokenize_pairs_equals_the_models_own_tokenizer(
    services: tuple[str, str], ce_repo: ModelRepository, ce_source: Path
) -> None:
    from transformers import AutoTokenizer

    got = _pairs(services[0], CE, QUERY, DOCS)
    assert got.truncated == [False, False, True, False]
    theirs = AutoTokenizer.from_pretrained(str(ce_source))(
        [QUERY] * len(DOCS), DOCS, truncation="only_second", max_length=512, padding=True, return_tensors="np"
    )
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(got.tensors[name], theirs[name])
    local = TextPreprocessor.from_repo(ce_repo, CE).prep_pairs([(QUERY, d) for d in DOCS]).tensors
    for name, array in local.items():
        np.testing.assert_array_equal(got.tensors[name], array)


def test_served_logits_order_pairs_as_pytorch_under_concurrent_batching(
    services: tuple[str, str], ce_source: Path
) -> None:
    tok_target, model_target = services
    queries = [QUERY, "cats", "如何申请建筑许可证？", "opening hours"]

    async def score_all() -> list[np.ndarray]:
        tok = TokenizerClient(tok_target, timeout=60)
        model = ModelServerClient(model_target, timeout=60)
        try:

            async def one(query: str) -> np.ndarray:
                pairs = await tok.tokenize_pairs(CE, query, DOCS)
                out = await model.predict(CE, pairs.tensors, ["logits"])
                return np.asarray(out["logits"])

            # Concurrent callers: the server batches their pairs (of different lengths) into shared ORT calls.
            return list(await asyncio.gather(*(one(q) for q in queries)))
        finally:
            await tok.close()
            await model.close()

    for query, served in zip(queries, asyncio.run(score_all()), strict=True):
        reference = torch_pair_logits(ce_source, query, DOCS)
        np.testing.assert_allclose(served, reference, atol=1e-4, err_msg=query)
        assert list(np.argsort(-served[:, 0])) == list(np.argsort(-reference[:, 0])), query


def test_pairs_for_a_model_that_is_not_a_cross_encoder_are_refused(tokenizer_target: str) -> None:
    with pytest.raises(ServiceCallError) as info:
        _pairs(tokenizer_target, "minilm", QUERY, DOCS)
    assert info.value.code.name == "INVALID_ARGUMENT"
    assert "not a cross_encoder" in info.value.details


def test_pairs_without_documents_or_query_are_refused(services: tuple[str, str]) -> None:
    for query, docs, says in ((QUERY, [], "documents is empty"), ("  ", DOCS, "query is empty")):
        with pytest.raises(ServiceCallError) as info:
            _pairs(services[0], CE, query, docs)
        assert info.value.code.name == "INVALID_ARGUMENT"
        assert says in info.value.details


def _score(target: str, model: str, query: str, docs: list[str]) -> np.ndarray:
    async def go() -> np.ndarray:
        client = ModelServerClient(target, timeout=60)
        try:
            return await client.score_pairs(model, query, docs)
        finally:
            await client.close()

    return asyncio.run(go())


def test_score_pairs_gives_pytorchs_scores_in_one_call_under_concurrent_batching(
    services: tuple[str, str], ce_source: Path, ce_repo: ModelRepository
) -> None:
    """ScorePairs: the model server tokenizes the pairs itself, batches each pair at its own length with other
    callers' pairs, and applies the manifest's score rule: PyTorch's logits through that rule, in the request's
    order, for pairs of very different lengths (one document is cut to the model's window)."""
    from mmsearch.runtime.pair_scores import pair_scores

    manifest = ce_repo.manifest(CE)
    queries = [QUERY, "cats", "如何申请建筑许可证？", "opening hours"]

    async def score_all() -> list[np.ndarray]:
        model = ModelServerClient(services[1], timeout=60)
        try:
            return list(await asyncio.gather(*(model.score_pairs(CE, q, DOCS) for q in queries)))
        finally:
            await model.close()

    for query, served in zip(queries, asyncio.run(score_all()), strict=True):
        reference = pair_scores(torch_pair_logits(ce_source, query, DOCS), manifest)
        assert served.shape == (len(DOCS),)
        np.testing.assert_allclose(served, reference, atol=1e-4, err_msg=query)
        assert list(np.argsort(-served)) == list(np.argsort(-reference)), query


def test_score_pairs_refuses_what_it_cannot_score(services: tuple[str, str], model_server_target: str) -> None:
    cases = [
        (model_server_target, "minilm", QUERY, DOCS, "does not score (query, document) pairs"),
        (services[1], CE, QUERY, [], "documents is empty"),
        (services[1], CE, "  ", DOCS, "query is empty"),
        (services[1], CE, QUERY, ["d"] * 257, "257 documents in one request; the limit is 256"),
        (services[1], "no-such-model", QUERY, DOCS, "no-such-model"),
    ]
    for target, model, query, docs, says in cases:
        with pytest.raises(ServiceCallError) as info:
            _score(target, model, query, docs)
        assert info.value.code.name in {"INVALID_ARGUMENT", "NOT_FOUND"}, (model, says)
        assert says in info.value.details, info.value.details


def test_the_model_server_serves_a_models_int8_variant_when_told(
    ce_source: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`--variant KEY=int8` runs the graph `export --int8` wrote beside the fp32 one: the scores are the quantised
    graph's (not fp32's to the last bit) and keep their order against PyTorch on these pairs."""
    from mmsearch.runtime.pair_scores import pair_scores
    from offline.export.variants import VariantRequest

    repo = ModelRepository(tmp_path_factory.mktemp("ce-int8-repo"))
    # Gate off: random weights keep fewer than 0.95 of fp32's top 10 under int8 (test_export_cross_encoder).
    manifest = export_cross_encoder(str(ce_source), repo, CE, variants=VariantRequest(int8=True), min_top10_overlap=0)
    assert "int8" in manifest.variants
    logs = tmp_path_factory.mktemp("ce-int8-logs")
    flags = ("--intra-op-threads", "1", "--variant", f"{CE}=int8")
    with start_service("model", repo.root, *flags, log_dir=logs, name="ce-int8") as model:
        served = _score(model.target, CE, QUERY, DOCS)
    log = "".join(p.read_text(encoding="utf-8") for p in logs.iterdir())
    assert "loaded model.int8.onnx" in log, log
    reference = pair_scores(torch_pair_logits(ce_source, QUERY, DOCS), manifest)
    assert np.abs(served - reference).max() > 1e-6  # the quantised graph ran, not the fp32 one
    np.testing.assert_allclose(served, reference, atol=0.05)
    assert list(np.argsort(-served)) == list(np.argsort(-reference))
