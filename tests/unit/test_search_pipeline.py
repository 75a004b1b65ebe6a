"""Pipeline rules without servers: score rule, merge/dedup, rankers, summary of missing documents, per-request
isolation of experiment arguments, and the error a dependency failure becomes.

The ports are in-memory stand-ins holding plain data (no behaviour to mock); the real adapters are exercised by
tests/integration/test_search_service.py against real servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmsearch.collection_meta import CollectionMeta
from services.model_server.client import Embedding
from services.search.config.checks import CollectionStatus
from services.search.config.manager import parse_config
from services.search.config.model import RankArgs
from services.search.errors import DependencyUnavailableError
from services.search.metrics import SearchMetrics
from services.search.pipeline import run_scene
from services.search.ports import AnnHit, AnnSearch, Deps, TextSearch
from services.search.stages.fusion import LEVEL as ANN_LEVEL
from services.search.stages.fusion import merge, retrieval_scores
from services.search.stages.rank import BlendRanker, DummyRanker, MmrRanker, mmr_order
from services.search.state import Item, Query

DEFAULT = Path(__file__).resolve().parents[2] / "deploy" / "ab-config.yaml"


class Models:
    async def tokenize(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        return {"input_ids": np.array([[len(t) for t in texts]], dtype=np.int64)}

    async def preprocess_images(self, model: str, images: Sequence[bytes]) -> dict[str, np.ndarray]:
        return {"pixel_values": np.zeros((len(images), 3, 2, 2), dtype=np.float32)}

    async def embed(self, model: str, inputs: Mapping[str, np.ndarray], output: str) -> Embedding:
        return Embedding(np.array([[1.0, 0.0]], dtype=np.float32), "v1")

    async def embed_texts(self, model: str, texts: Sequence[str], output: str) -> Embedding:
        return Embedding(np.array([[1.0, 0.0]], dtype=np.float32), "v1")

    async def score_pairs(self, model: str, query: str, documents: Sequence[str]) -> np.ndarray:
        return np.zeros(len(documents), dtype=np.float32)

    async def ping_tokenizer(self) -> None:
        return None

    async def ping_model_server(self) -> None:
        return None


class Vectors:
    """Documents per collection as (id, vector); search is exact inner product. Full-text search scores a document
    by how many of the query's words its text holds (texts per collection, by id)."""

    def __init__(
        self,
        docs: dict[str, list[tuple[str, list[float]]]],
        delay: float = 0.0,
        texts: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.docs = docs
        self.delay = delay
        self.texts = texts or {}
        self.seen: list[AnnSearch] = []
        self.seen_text: list[TextSearch] = []
        self.down = False

    async def text_search(self, req: TextSearch) -> list[AnnHit]:
        if self.down:
            raise DependencyUnavailableError("milvus", "connection refused")
        self.seen_text.append(req)
        words = set(req.text.lower().split())
        scored = [(i, float(len(words & set(t.lower().split())))) for i, t in self.texts[req.collection].items()]
        hits = sorted((h for h in scored if h[1] > 0), key=lambda h: (-h[1], h[0]))
        return [AnnHit(i, d) for i, d in hits[: req.limit]]

    async def search(self, req: AnnSearch) -> list[AnnHit]:
        if self.down:
            raise DependencyUnavailableError("milvus", "connection refused")
        self.seen.append(req)
        await asyncio.sleep(self.delay)
        q = np.array(req.vector)
        hits = [(i, float(np.dot(q, v)), np.array(v, dtype=np.float32)) for i, v in self.docs[req.collection]]
        hits.sort(key=lambda h: -h[1])
        return [AnnHit(i, d, v if req.with_vectors else None) for i, d, v in hits[: req.limit]]

    async def describe(self, collection: str) -> CollectionStatus:
        return CollectionStatus(collection in self.docs)

    async def layout(self, collection: str) -> CollectionMeta | None:
        return None  # row corpora (document corpora are tested against Milvus: test_search_documents.py)

    async def ping(self) -> None:
        return None


class Documents:
    def __init__(self, docs: dict[str, dict[str, dict[str, Any]]]) -> None:
        self.docs = docs
        self.calls = 0

    async def fetch(self, collection: str, ids: Sequence[str], fields: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.calls += 1
        have = self.docs.get(collection, {})
        return {i: have[i] for i in ids if i in have}

    async def ping(self) -> None:
        return None


def _deps(vectors: Vectors, documents: Documents) -> Deps:
    return Deps(models=Models(), vectors=vectors, documents=documents)


def _item(i: str, raw: float, key: str = "ann_matcher", vec: list[float] | None = None) -> Item:
    return Item(
        id=i,
        retrieval_scores={key: raw},
        final_retrieval_score=raw,
        raw_score=raw,
        vector=None if vec is None else np.array(vec),
    )


def test_reference_score_rule() -> None:
    out = retrieval_scores([0.9, 0.45, 0.0], ANN_LEVEL)
    assert out[0] == pytest.approx(0.9 / 0.901 + 3)
    assert out[1] == pytest.approx(0.45 / 0.901 + 3)
    assert out[2] == pytest.approx(3.0)
    assert retrieval_scores([], ANN_LEVEL) == []
    # Non-positive best score: no division by ~0 or sign flip.
    assert retrieval_scores([-0.2, -0.5], 3.0) == [pytest.approx(2.8), pytest.approx(2.5)]


def test_merge_dedups_keeping_best_score_and_every_matcher_score() -> None:
    a = [_item("1", 3.5, "ann"), _item("2", 3.9, "ann")]
    b = [_item("1", 3.8, "other"), _item("3", 3.1, "other")]
    merged = merge([a, b], max_reservation=10)
    assert [i.id for i in merged] == ["2", "1", "3"]
    one = merged[1]
    assert one.final_retrieval_score == 3.8
    assert dict(one.retrieval_scores) == {"ann": 3.5, "other": 3.8}
    assert [i.id for i in merge([a, b], max_reservation=2)] == ["2", "1"]


def test_dummy_ranker_copies_and_survives_fewer_hits_than_max_reservation() -> None:
    ranked = DummyRanker().rank((_item("1", 3.2), _item("2", 3.9)), RankArgs(maxReservation=200))
    assert [i.id for i in ranked] == ["2", "1"]
    assert ranked[0].score == ranked[0].final_ranking_score == 3.9
    assert dict(ranked[0].ranking_scores) == {"dummy": 3.9}
    assert DummyRanker().rank((), RankArgs()) == ()


def test_mmr_prefers_a_diverse_second_pick() -> None:
    # Two near-duplicates at the top and one different item slightly below.
    rel = np.array([0.95, 0.94, 0.90])
    vecs = np.array([[1.0, 0.0], [0.999, 0.04], [0.0, 1.0]])
    picks = [i for i, _ in mmr_order(rel, vecs, lam=0.5, k=3)]
    assert picks == [0, 2, 1]
    # lam = 1 is pure relevance.
    assert [i for i, _ in mmr_order(rel, vecs, lam=1.0, k=3)] == [0, 1, 2]
    items = tuple(_item(str(i), float(r), vec=v.tolist()) for i, (r, v) in enumerate(zip(rel, vecs, strict=True)))
    ranked = MmrRanker().rank(items, RankArgs(rankerName="mmr", mmrLambda=0.5))
    assert [i.id for i in ranked] == ["0", "2", "1"]
    assert "mmr" in ranked[0].ranking_scores
    assert all(i.vector is None for i in ranked)  # vectors are not sent back to clients


def test_blend_weights_matcher_scores() -> None:
    it = Item(id="1", retrieval_scores={"ann": 0.8, "kw": 0.5}, final_retrieval_score=3.8)
    ranked = BlendRanker().rank((it,), RankArgs(rankerName="blend", blendWeights={"ann": 2.0}))
    assert ranked[0].score == pytest.approx(2 * 0.8 + 0.5)


def _config_docs() -> tuple[Vectors, Documents]:
    vectors = Vectors(
        {
            "faq_qa": [("1", [0.9, 0.1]), ("2", [0.8, 0.2]), ("3", [0.1, 0.9])],
            "photos": [("10", [1.0, 0.0]), ("11", [0.5, 0.5])],
        },
        texts={"faq_qa": {"1": "building permit", "2": "garage roof", "3": "fence"}},
    )
    documents = Documents(
        {
            "faq_qa": {"1": {"question": "q1", "answer": "a1", "category": ["c"], "extra": 1}, "3": {"question": "q3"}},
            "photos": {"10": {"name": "a.jpg", "url": "http://x/a.jpg"}},
        }
    )
    return vectors, documents


def test_scene_runs_all_stages_and_missing_documents_get_empty_summaries() -> None:
    cfg = parse_config(DEFAULT.read_text(), "t")
    vectors, documents = _config_docs()
    metrics = SearchMetrics()
    q = Query(scene="questionAnswer", user_id="10", text="hello", top_k=10, debug=True)
    res = asyncio.run(run_scene(cfg, q, _deps(vectors, documents), metrics, pinned={"rank.qa": "rank.qa.dummy"}))
    assert res.experiments["rank.qa"] == "rank.qa.dummy"
    assert set(res.stage_ms) == {"qp.qa", "match.qa", "rank.qa", "summary.qa"}
    items = res.state.items
    assert [i.id for i in items] == ["1", "2", "3"]
    assert items[0].summary == {"question": "q1", "answer": "a1", "category": ["c"]}  # summaryFields only
    assert items[1].summary == {}  # document 2 is missing: empty, counted, no crash
    assert res.state.missing_summaries == 1
    assert documents.calls == 1  # one query for all hits
    assert metrics.missing_summaries.labels("questionAnswer")._value.get() == 1
    # MMR needs the vectors: the match stage asks Milvus for them only then.
    res2 = asyncio.run(run_scene(cfg, q, _deps(vectors, documents), metrics, pinned={"rank.qa": "rank.qa.mmr"}))
    assert res2.experiments["rank.qa"] == "rank.qa.mmr"
    assert [s.with_vectors for s in vectors.seen] == [False, True]


def test_pins_are_ignored_without_use_debug_and_top_k_cuts() -> None:
    cfg = parse_config(DEFAULT.read_text(), "t")
    vectors, documents = _config_docs()
    served = set()
    for u in range(40):
        q = Query(scene="questionAnswer", user_id=str(u), text="x", top_k=1, debug=False)
        res = asyncio.run(
            run_scene(cfg, q, _deps(vectors, documents), SearchMetrics(), pinned={"rank.qa": "rank.qa.mmr"})
        )
        served.add(res.experiments["rank.qa"])
        assert len(res.state.items) == 1
    assert served == {"rank.qa.dummy", "rank.qa.mmr"}


def test_concurrent_scenes_search_their_own_collections() -> None:
    """The reference's singleton defect: concurrent QA and image queries must never swap collections."""
    cfg = parse_config(DEFAULT.read_text(), "t")
    vectors, documents = _config_docs()
    vectors.delay = 0.001
    deps = _deps(vectors, documents)

    async def both() -> list[Any]:
        jobs = []
        for u in range(30):
            jobs.append(run_scene(cfg, Query(scene="questionAnswer", user_id=str(u), text="q"), deps, SearchMetrics()))
            jobs.append(run_scene(cfg, Query(scene="textToImage", user_id=str(u), text="q"), deps, SearchMetrics()))
        return await asyncio.gather(*jobs)

    for res in asyncio.run(both()):
        ids = {i.id for i in res.state.items}
        if res.state.query.scene == "questionAnswer":
            assert ids <= {"1", "2", "3"}
        else:
            assert ids <= {"10", "11"}


def test_dependency_failure_propagates_named_and_counts_the_experiment_error() -> None:
    cfg = parse_config(DEFAULT.read_text(), "t")
    vectors, documents = _config_docs()
    vectors.down = True
    metrics = SearchMetrics()
    q = Query(scene="questionAnswer", user_id="1", text="q", debug=True)
    with pytest.raises(DependencyUnavailableError) as info:
        asyncio.run(run_scene(cfg, q, _deps(vectors, documents), metrics, pinned={"match.qa": "match.qa.base"}))
    assert info.value.dependency == "milvus"
    assert info.value.status_code == 503
    assert metrics.experiment_errors.labels("questionAnswer", "match.qa", "match.qa.base")._value.get() == 1
