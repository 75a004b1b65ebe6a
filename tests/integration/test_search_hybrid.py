"""Hybrid recall end to end: the FAQ ingested with `--lexical-field question`, the demo A/B config's live
vector-vs-hybrid experiment (rrf and weighted fusion) served through /qa/user/{id} by the real service on the
milvus-lite server, and the same scene on Milvus Lite embedded through the real adapters; pages through the API."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from mmsearch.model_repo import ModelRepository
from mmsearch.settings import MilvusSettings, MongoSettings, SearchSettings, Settings
from offline.datasets.chatterbot import write_chatterbot
from services.search.adapters import GrpcQueryModels, MilvusVectorStore, MongoDocumentStore
from services.search.config.manager import validate_config
from services.search.metrics import SearchMetrics
from services.search.pipeline import run_scene
from services.search.ports import Deps
from services.search.state import Query
from tests.fixtures.search import AB_CONFIG, MONGO_DATABASE, FaqCorpus, RunningSearch, ingest_faq
from tests.fixtures.stores import milvus_form

pytestmark = pytest.mark.integration

HYBRID = ("match.qa.hybrid", "match.qa.weighted")


def rare_words(questions: dict[str, str], limit: int = 40) -> dict[str, str]:
    """Words (5+ letters) that occur in exactly one question: word -> that question's id."""
    where: dict[str, set[str]] = {}
    for qid, text in questions.items():
        for word in set(re.findall(r"[a-zåäö]{5,}", text.lower())):
            where.setdefault(word, set()).add(qid)
    once = sorted((w, next(iter(ids))) for w, ids in where.items() if len(ids) == 1)
    return dict(once[:limit])


def _search(
    svc: RunningSearch, query: str, match: str, *, rank: str = "rank.qa.dummy", top_k: int = 10, offset: int = 0
) -> dict[str, Any]:
    body = {
        "query": query,
        "useDebug": True,
        "specifiedLayerAndExperiment": {"match.qa": match, "rank.qa": rank},
        "topK": top_k,
        "offset": offset,
    }
    status, reply = svc.post("/qa/user/7", body)
    assert status == 200, reply
    experiments = reply["experiments"]
    assert isinstance(experiments, dict)
    assert experiments["match.qa"] == match
    return reply


def _items(reply: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = reply["searchItemModels"][0]
    return items


def test_rare_words_the_vector_misses_come_back_through_bm25(
    search_service: RunningSearch, faq_corpus: FaqCorpus
) -> None:
    missed = 0
    for word, qid in rare_words(faq_corpus.questions).items():
        if qid in {i["id"] for i in _items(_search(search_service, word, "match.qa.base"))}:
            continue
        missed += 1
        # rrf: BM25's only hit scores at least 1/61, as much as the vector's first: it comes back at the top.
        hybrid = _items(_search(search_service, word, "match.qa.hybrid"))
        assert qid in [i["id"] for i in hybrid][:2], f"rrf: {word!r} did not bring back question {qid}"
        found = next(i for i in hybrid if i["id"] == qid)
        assert found["originalRetrievalScoreMap"]["bm25_matcher"] > 0  # positive BM25 on every store
        assert found["finalRetrievalScore"] >= 1 / 61 - 1e-12
        # weighted (0.7 vector, 0.3 keywords): the keyword side alone scores 0.3, below the vector's best few,
        # so it is in the deeper list rather than necessarily the first page.
        deep = {i["id"]: i for i in _items(_search(search_service, word, "match.qa.weighted", top_k=50))}
        assert qid in deep
        assert deep[qid]["finalRetrievalScore"] >= 0.3 - 1e-9
    # The point of hybrid recall: exact words the embedding alone does not find.
    assert missed > 0


def test_fused_scores_follow_their_method(search_service: RunningSearch) -> None:
    rrf = _items(_search(search_service, "building permit garage", "match.qa.hybrid", top_k=20))
    assert all(0 < i["finalRetrievalScore"] <= 2 / 61 + 1e-9 for i in rrf)
    weighted = _items(_search(search_service, "building permit garage", "match.qa.weighted", top_k=20))
    assert all(0 <= i["finalRetrievalScore"] <= 1.0 + 1e-9 for i in weighted)
    assert any(set(i["originalRetrievalScoreMap"]) == {"ann_matcher", "bm25_matcher"} for i in weighted)
    base = _items(_search(search_service, "building permit garage", "match.qa.base", top_k=20))
    assert all(set(i["originalRetrievalScoreMap"]) == {"ann_matcher"} for i in base)


@pytest.mark.parametrize("match", ["match.qa.base", *HYBRID])
@pytest.mark.parametrize("rank", ["rank.qa.dummy", "rank.qa.mmr"])
def test_pages_through_the_api_are_exact(search_service: RunningSearch, match: str, rank: str) -> None:
    query = "how long does a building permit take"
    deep = _search(search_service, query, match, rank=rank, top_k=20)
    first = _search(search_service, query, match, rank=rank, top_k=10)
    second = _search(search_service, query, match, rank=rank, top_k=10, offset=10)
    ids = [i["id"] for i in _items(first) + _items(second)]
    assert ids == [i["id"] for i in _items(deep)]
    assert len(set(ids)) == 20
    assert first["hasMore"]
    assert second["hasMore"]


def test_an_offset_past_the_deepest_page_is_refused(search_service: RunningSearch) -> None:
    status, reply = search_service.post("/qa/user/7", {"query": "permit", "offset": 5000})
    assert status == 422
    assert reply["error"] == "invalid_query"
    assert "search.max_offset 1000" in str(reply["message"])


def test_hybrid_on_milvus_lite_embedded(
    model_repo: ModelRepository,
    mongo_uri: str,
    tokenizer_target: str,
    model_server_target: str,
    tmp_path: Path,
) -> None:
    """The same scene, with the collection in an embedded Milvus Lite file and the service's real adapters."""
    milvus_uri = str(tmp_path / "milvus.db")
    faq = ingest_faq(model_repo, milvus_uri, mongo_uri, tmp_path / "ingest")
    settings = Settings(
        model_repo=model_repo.root,
        milvus=MilvusSettings(uri=milvus_uri),
        mongo=MongoSettings(uri=mongo_uri, database=MONGO_DATABASE),
        search=SearchSettings(tokenizer_target=tokenizer_target, model_server_target=model_server_target),
    )
    word, qid = next(iter(rare_words(faq.questions).items()))

    async def go() -> list[list[str]]:
        models, vectors = GrpcQueryModels(settings), MilvusVectorStore(settings)
        documents = MongoDocumentStore(settings)
        deps = Deps(models=models, vectors=vectors, documents=documents)
        try:
            cfg = await validate_config(AB_CONFIG.read_text(), "t", repo=model_repo, vectors=vectors)
            out = []
            for match in HYBRID:
                q = Query(scene="questionAnswer", user_id="7", text=word, top_k=50, debug=True)
                res = await run_scene(cfg, q, deps, SearchMetrics(), pinned={"match.qa": match})
                out.append([i.id for i in res.state.items])
            return out
        finally:
            await models.close()
            await vectors.aclose()
            await documents.aclose()

    for ids in asyncio.run(go()):
        assert qid in ids


def test_hybrid_in_chinese_on_every_lite_form(  # noqa: PLR0917 - pytest fixtures are parameters
    milvus_uri: str,
    corpus_name: str,
    model_repo: ModelRepository,
    mongo_uri: str,
    tokenizer_target: str,
    model_server_target: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """Chinese conversations (chatterbot-corpus) ingested with --analyzer jieba, searched by a word inside sentences
    through the demo config's hybrid experiment with only its names changed, on embedded Milvus Lite and the
    milvus-lite server (the real 2.3.5 has no BM25)."""
    if milvus_form(request) == "milvus-2.3.5":
        pytest.skip("the real Milvus 2.3.5 predates BM25 (its refusal: test_indexing_lexical.py)")
    from offline.ingest.steps import IngestOptions, run_ingest
    from offline.preprocess.qa import QAFormat, QAOptions, preprocess_qa
    from offline.push.lexical import Analyzer

    raw = tmp_path / "zh.raw.jsonl"
    write_chatterbot(raw, languages=("chinese",))
    opts = IngestOptions(
        corpus=corpus_name,
        model_key="minilm",
        field="question",
        repo=model_repo,
        work_dir=tmp_path / "ingest",
        milvus=MilvusSettings(uri=milvus_uri),
        mongo=MongoSettings(uri=mongo_uri, database=MONGO_DATABASE),
        filter_fields=["category"],
        lexical_fields=["question"],
        analyzer=Analyzer.JIEBA,
        providers=["CPUExecutionProvider"],
    )
    run_ingest(opts, lambda out: preprocess_qa(raw, out, QAOptions.for_format(QAFormat.JSONL)))
    questions = {
        str(r["id"]): r["question"]
        for r in map(json.loads, (tmp_path / "ingest" / "corpus.jsonl").read_text(encoding="utf-8").splitlines())
    }
    word = "电脑"
    having = {i for i, q in questions.items() if word in q}
    assert having
    settings = Settings(
        model_repo=model_repo.root,
        milvus=MilvusSettings(uri=milvus_uri),
        mongo=MongoSettings(uri=mongo_uri, database=MONGO_DATABASE),
        search=SearchSettings(tokenizer_target=tokenizer_target, model_server_target=model_server_target),
    )
    config = AB_CONFIG.read_text(encoding="utf-8").replace("faq_qa", corpus_name)

    async def go() -> list[Any]:
        models, vectors = GrpcQueryModels(settings), MilvusVectorStore(settings)
        documents = MongoDocumentStore(settings)
        deps = Deps(models=models, vectors=vectors, documents=documents)
        try:
            cfg = await validate_config(config, "t", repo=model_repo, vectors=vectors)
            q = Query(scene="questionAnswer", user_id="7", text=word, top_k=10, debug=True)
            res = await run_scene(cfg, q, deps, SearchMetrics(), pinned={"match.qa": "match.qa.hybrid"})
            return list(res.state.items)
        finally:
            await models.close()
            await vectors.aclose()
            await documents.aclose()

    items = asyncio.run(go())
    by_bm25 = [it for it in items if "bm25_matcher" in it.retrieval_scores]
    assert by_bm25
    assert {it.id for it in by_bm25} <= having  # jieba found the word inside unspaced Chinese sentences
    assert all(word in (it.summary or {}).get("question", "") for it in by_bm25)
