"""Lexical (BM25) fields of `push milvus`, against every Milvus form: full-text search in Milvus itself, English
and Chinese (jieba), read back through the search service's own adapter with positive scores; analyzers a store
cannot honour, and the real Milvus 2.3.5 (which predates BM25), are refused before anything is written."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mmsearch.collection_meta import from_properties, sparse_field
from mmsearch.model_repo import ModelRepository
from mmsearch.settings import MilvusSettings, Settings
from offline.encode.pipeline import encode_corpus
from offline.preprocess.demo import prepare_demo
from offline.push.errors import ModelMismatchError, PushError
from offline.push.lexical import Analyzer
from offline.push.milvus_push import alias_target, push_milvus
from services.search.adapters import MilvusVectorStore
from services.search.ports import AnnHit, TextSearch
from tests.fixtures.models import MINILM_KEY
from tests.fixtures.stores import milvus_form
from tests.integration.test_indexing_milvus import _opts, client_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chatterbot_zh(model_repo: ModelRepository, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The Chinese conversations of chatterbot-corpus and their MiniLM vectors (only the words matter here)."""
    root = tmp_path_factory.mktemp("chatterbot-zh")
    both = root / "chatterbot.jsonl"
    prepare_demo("chatterbot", both)
    corpus = root / "zh.jsonl"
    rows = [json.loads(line) for line in both.read_text(encoding="utf-8").splitlines()]
    zh = [r for r in rows if r.get("category", [""])[0] == "chinese"]
    assert len(zh) > 100
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in zh), encoding="utf-8")
    vectors = root / "vectors"
    encode_corpus(corpus, model_repo, MINILM_KEY, "question", vectors, progress=False)
    return corpus, vectors


def _text_search(uri: str, corpus: str, field: str, text: str, limit: int = 10) -> list[AnnHit]:
    store = MilvusVectorStore(Settings(milvus=MilvusSettings(uri=uri)))

    async def go() -> list[AnnHit]:
        try:
            return await store.text_search(TextSearch(corpus, sparse_field(field), text, limit, ""))
        finally:
            await store.aclose()

    return asyncio.run(go())


def test_lexical_field_is_searchable_by_bm25_or_refused_by_an_old_server(
    milvus_uri: str, corpus_name: str, faq: tuple[Path, Path], request: pytest.FixtureRequest
) -> None:
    corpus, vectors = faq
    settings = MilvusSettings(uri=milvus_uri)
    opts = _opts(vectors, corpus_name, lexical_fields=["question"])
    if milvus_form(request) == "milvus-2.3.5":
        with pytest.raises(PushError, match=r"this Milvus server \(v?2\.3\.5[^)]*\) lacks: it came with Milvus 2\.5"):
            push_milvus(settings, opts)
        with client_for(milvus_uri) as client:  # refused before anything was written
            assert alias_target(client, corpus_name) is None
            assert not [c for c in client.list_collections() if c.startswith(corpus_name)]
        return

    summary = push_milvus(settings, opts)
    with client_for(milvus_uri) as client:
        meta = from_properties(client.describe_collection(corpus_name)["properties"])
        assert meta is not None
        assert (meta.lexical_fields, meta.analyzer) == (("question",), "standard")
        fields = {f["name"]: f for f in client.describe_collection(corpus_name)["fields"]}
        assert fields["question_bm25"]["type"].name == "SPARSE_FLOAT_VECTOR"
    questions = {str(r["id"]): r["question"] for r in map(json.loads, corpus.read_text(encoding="utf-8").splitlines())}
    hits = _text_search(milvus_uri, corpus_name, "question", "RADON")  # upper case: the analyzer lower-cases
    assert hits
    assert all(h.distance > 0 for h in hits)  # one convention: positive BM25, higher is better, on every form
    assert [h.distance for h in hits] == sorted((h.distance for h in hits), reverse=True)
    assert all("radon" in questions[h.id].lower() for h in hits)
    # The same input again changes nothing; the lexical field is part of what is compared.
    assert not push_milvus(settings, opts).changed
    # Dropping the lexical field would break live hybrid experiments: refused unless said on purpose.
    with pytest.raises(ModelMismatchError, match="would drop them: add --lexical-field question"):
        push_milvus(settings, _opts(vectors, corpus_name))
    with client_for(milvus_uri) as client:
        assert alias_target(client, corpus_name) == summary.collection
    assert push_milvus(settings, _opts(vectors, corpus_name, allow_model_change=True)).collection != summary.collection


def test_chinese_words_are_found_with_jieba(
    milvus_uri: str, corpus_name: str, chatterbot_zh: tuple[Path, Path], request: pytest.FixtureRequest
) -> None:
    if milvus_form(request) == "milvus-2.3.5":
        pytest.skip("the real Milvus 2.3.5 predates BM25 (its refusal is tested above)")
    corpus, vectors = chatterbot_zh
    push_milvus(
        MilvusSettings(uri=milvus_uri),
        _opts(vectors, corpus_name, lexical_fields=["question"], analyzer=Analyzer.JIEBA),
    )
    rows = {str(r["id"]): r["question"] for r in map(json.loads, corpus.read_text(encoding="utf-8").splitlines())}
    word = "电脑"  # "computer": a word inside sentences, with no spaces around it
    having = {i for i, q in rows.items() if word in q}
    assert having
    hits = _text_search(milvus_uri, corpus_name, "question", word, limit=50)
    assert hits
    assert {h.id for h in hits} <= having
    assert {h.id for h in hits} == having or len(hits) == 50


def test_an_analyzer_the_store_cannot_honour_is_refused(
    milvus_uri: str, corpus_name: str, faq: tuple[Path, Path], request: pytest.FixtureRequest
) -> None:
    if milvus_form(request) == "milvus-2.3.5":
        pytest.skip("the real Milvus 2.3.5 refuses any lexical field (tested above)")
    _, vectors = faq
    opts = _opts(vectors, corpus_name, lexical_fields=["question"], analyzer=Analyzer.ENGLISH)
    with pytest.raises(PushError, match=r"Milvus Lite \(milvus_lite-[\d.]+\) supports standard, jieba"):
        push_milvus(MilvusSettings(uri=milvus_uri), opts)
    with client_for(milvus_uri) as client:
        assert alias_target(client, corpus_name) is None


def test_a_lexical_field_that_is_not_text_is_refused(
    milvus_uri: str, corpus_name: str, faq: tuple[Path, Path], request: pytest.FixtureRequest
) -> None:
    if milvus_form(request) != "lite-embedded":
        pytest.skip("checked before any store is asked: one form is enough")
    _, vectors = faq
    with pytest.raises(PushError, match="'category' is also a filter field"):
        push_milvus(MilvusSettings(uri=milvus_uri), _opts(vectors, corpus_name, lexical_fields=["category"]))
    with pytest.raises(PushError, match="no row of the corpus has a 'nope' field"):
        push_milvus(MilvusSettings(uri=milvus_uri), _opts(vectors, corpus_name, lexical_fields=["nope"]))
