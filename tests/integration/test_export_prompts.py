"""Query and document prompts of asymmetric models (e5, bge): read from the sentence-transformers config or given
as flags, recorded in the manifest with their own parity against sentence-transformers' `encode(prompt=...)`,
applied to queries by the tokenizer service and to documents by `index`. Checked on the real MiniLM weights with
e5-style prompts added to its config (the prompts change the input, so parity is meaningful for any weights)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from tokenizers import Tokenizer

from mmsearch.api.v1 import tokenizer_pb2
from mmsearch.cli.main import cli
from mmsearch.model_repo import ModelRepository
from mmsearch.settings import TokenizerSettings
from mmsearch.tensors import map_from_proto
from offline.encode.pipeline import encode_corpus
from offline.encode.shards import iter_shards, open_vectors
from offline.export.parity import FP32_MIN_COSINE
from offline.export.sbert import export_sbert
from offline.preprocess.demo import prepare_demo
from services.tokenizer.preprocessors import PreprocessorCache
from services.tokenizer.servicer import TokenizerMetrics, TokenizerServicer
from tests.fixtures.models import minilm_source

pytestmark = pytest.mark.integration

QUERY, PASSAGE = "query: ", "passage: "


@pytest.fixture(scope="module")
def e5_style_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM's folder with e5-style prompts in config_sentence_transformers.json, as such models ship them."""
    folder = tmp_path_factory.mktemp("e5-style") / "minilm-prompts"
    shutil.copytree(minilm_source(), folder)
    config_file = folder / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    config["prompts"] = {"query": QUERY, "passage": PASSAGE}
    config_file.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def prompted(e5_style_source: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    repo = ModelRepository(tmp_path_factory.mktemp("prompted-repo"))
    export_sbert(str(e5_style_source), repo, "e5ish")
    return repo


def test_prompts_from_the_model_config_are_recorded_with_their_parity(prompted: ModelRepository) -> None:
    m = prompted.manifest("e5ish")
    assert (m.query_prompt, m.document_prompt) == (QUERY, PASSAGE)
    by_variant = {p.variant: p for p in m.parity}
    assert set(by_variant) == {"fp32", "fp32:query-prompt", "fp32:document-prompt"}
    for p in by_variant.values():
        assert p.min_cosine >= FP32_MIN_COSINE
    assert "query prompt 'query: '" in by_variant["fp32:query-prompt"].inputs


def test_flags_override_the_config_and_a_model_without_prompts_has_none(
    e5_style_source: Path, model_repo: ModelRepository, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        cli,
        [
            *("export", "sbert", "--source", str(e5_style_source), "--key", "flagged"),
            *("--repo", str(tmp_path), "--query-prompt", "search_query: "),
        ],
    )
    assert result.exit_code == 0, result.output
    m = ModelRepository(tmp_path).manifest("flagged")
    assert (m.query_prompt, m.document_prompt) == ("search_query: ", PASSAGE)
    assert "query prompt 'search_query: ': applied by the tokenizer service" in result.output
    plain = model_repo.manifest("minilm")
    assert (plain.query_prompt, plain.document_prompt) == (None, None)


@pytest.fixture
def servicer(prompted: ModelRepository) -> Iterator[TokenizerServicer]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        cache = PreprocessorCache(prompted, max_image_pixels=1_000_000)
        yield TokenizerServicer(cache, TokenizerSettings(), pool, TokenizerMetrics(CollectorRegistry()))


def test_the_tokenizer_service_puts_the_query_prompt_before_queries(
    servicer: TokenizerServicer, prompted: ModelRepository
) -> None:
    texts = ["how long does a building permit take", "garage"]
    reply = asyncio.run(servicer._tokenize(tokenizer_pb2.TokenizeRequest(model_name="e5ish", texts=texts)))
    got = map_from_proto(reply.tensors)["input_ids"]
    raw = Tokenizer.from_file(str(prompted.path("e5ish") / "tokenizer.json"))
    raw.no_padding()
    for row, text in zip(got, texts, strict=True):
        want = raw.encode(QUERY + text).ids
        assert [int(t) for t in row[: len(want)]] == want
        assert not any(row[len(want) :])  # the rest is padding


def test_index_puts_the_document_prompt_before_documents(
    prompted: ModelRepository, e5_style_source: Path, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    corpus = tmp_path / "faq.jsonl"
    prepare_demo("faq", corpus)
    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()][:40]
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    encode_corpus(small, prompted, "e5ish", "question", tmp_path / "vectors", progress=False)
    ids, vectors = next(iter_shards(tmp_path / "vectors", open_vectors(tmp_path / "vectors")))
    by_id = {r["id"]: r["question"] for r in rows}
    model = SentenceTransformer(str(e5_style_source), device="cpu")
    want = model.encode([by_id[int(i)] for i in ids], prompt=PASSAGE, normalize_embeddings=True)
    unprompted = model.encode([by_id[int(i)] for i in ids], normalize_embeddings=True)
    cosine = np.sum(np.asarray(vectors) * want, axis=1)
    assert float(np.min(cosine)) >= FP32_MIN_COSINE
    # And the prompt made a difference: without it the vectors are measurably different.
    assert float(np.min(np.sum(np.asarray(vectors) * unprompted, axis=1))) < 0.999
