"""Hybrid recall without servers: fusion by hand-computed values, the cuts (minScore, minSimilarity), the depth
every matcher searches to, the config rules of fusion, and paging as a property: consecutive pages of one query
are consecutive slices of one ranked list, for every fusion method and ranker."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.search.config.manager import parse_config
from services.search.config.model import FusionArgs, RuntimeConfig
from services.search.errors import ConfigError
from services.search.metrics import SearchMetrics
from services.search.pipeline import SearchResult, run_scene
from services.search.stages.fusion import LEVEL, fuse, retrieval_scores
from services.search.state import Item, Query
from tests.unit.test_search_pipeline import Documents, Vectors, _deps, _item

RESERVATION = 30


def _hits(key: str, scored: list[tuple[str, float]]) -> list[Item]:
    return [_item(i, s, key) for i, s in scored]


ANN = _hits("ann_matcher", [("1", 0.9), ("2", 0.8), ("3", 0.5)])
BM25 = _hits("bm25_matcher", [("3", 12.0), ("4", 6.0)])


def test_rrf_sums_reciprocal_ranks_and_keeps_every_raw_score() -> None:
    fused = fuse([("ANNMatcher", ANN), ("BM25Matcher", BM25)], FusionArgs(method="rrf", k=60), keep=10)
    expected = {"1": 1 / 61, "2": 1 / 62, "3": 1 / 63 + 1 / 61, "4": 1 / 62}
    assert [i.id for i in fused] == ["3", "1", "2", "4"]  # "2" and "4" tie: the id decides, always the same way
    for it in fused:
        assert it.final_retrieval_score == pytest.approx(expected[it.id])
    assert dict(fused[0].retrieval_scores) == {"ann_matcher": 0.5, "bm25_matcher": 12.0}
    assert [i.id for i in fuse([("ANNMatcher", ANN), ("BM25Matcher", BM25)], FusionArgs(method="rrf"), keep=2)] == [
        "3",
        "1",
    ]


def test_weighted_normalises_each_list_to_0_1_then_sums() -> None:
    fusion = FusionArgs(method="weighted", weights={"ANNMatcher": 0.7, "BM25Matcher": 0.3})
    fused = {i.id: i for i in fuse([("ANNMatcher", ANN), ("BM25Matcher", BM25)], fusion, keep=10)}
    # ANN: (0.9, 0.8, 0.5) -> (1, 0.75, 0); BM25: (12, 6) -> (1, 0).
    assert fused["1"].final_retrieval_score == pytest.approx(0.7)
    assert fused["2"].final_retrieval_score == pytest.approx(0.7 * 0.75)
    assert fused["3"].final_retrieval_score == pytest.approx(0.3)
    assert fused["4"].final_retrieval_score == pytest.approx(0.0)
    equal = fuse([("ANNMatcher", _hits("ann_matcher", [("a", 0.4), ("b", 0.4)]))], fusion, keep=10)
    assert [i.final_retrieval_score for i in equal] == [pytest.approx(0.7)] * 2  # a flat list is all 1


def test_max_with_one_matcher_is_the_reference_rule() -> None:
    fused = fuse([("ANNMatcher", ANN)], FusionArgs(), keep=10)
    assert [i.final_retrieval_score for i in fused] == pytest.approx(retrieval_scores([0.9, 0.8, 0.5], LEVEL))
    two = {i.id: i for i in fuse([("ANNMatcher", ANN), ("BM25Matcher", BM25)], FusionArgs(), keep=10)}
    assert two["3"].final_retrieval_score == pytest.approx(12 / 12.001 + LEVEL)  # BM25's best beats ANN's 0.5
    assert dict(two["3"].retrieval_scores) == {"ann_matcher": 0.5, "bm25_matcher": 12.0}


# ---- through the pipeline ---------------------------------------------------------------------------------

WORDS = ["permit", "garage", "roof", "fence", "tax", "zoning", "window", "solar", "drain", "tree"]


def _corpus(n: int = 60, seed: int = 7) -> tuple[Vectors, Documents]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, 2))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    docs = [(str(i), vecs[i].tolist()) for i in range(n)]
    texts = {str(i): " ".join(rng.choice(WORDS, size=3)) for i in range(n)}
    vectors = Vectors({"faq_qa": docs}, texts={"faq_qa": texts})
    documents = Documents({"faq_qa": {str(i): {"question": texts[str(i)]} for i in range(n)}})
    return vectors, documents


def _config(**match_args: Any) -> str:
    """A QA scene whose match layer has one experiment per fusion method, and three rankers. `match_args` go to
    every match experiment, last (a `fusion` there replaces all three)."""
    matchers = match_args.get("matcherNames", ["ANNMatcher", "BM25Matcher"])
    base = {
        "vectorName": "sentence_embedding",
        "matcherNames": matchers,
        "lexicalField": "question",
        "milvusArgs": {"collectionName": "faq_qa", "vectorField": "question_emb", "searchParams": '{"ef": 64}'},
    }
    weights = {"ANNMatcher": 0.7, "BM25Matcher": 0.3}
    fusions = {
        "max": {"method": "max"},
        "rrf": {"method": "rrf", "k": 60},
        "weighted": {"method": "weighted", "weights": {m: weights[m] for m in matchers}},
    }
    experiments: list[dict[str, Any]] = [
        {"layerName": "qp.qa", "experimentName": "qp", "extraExperimentArgs": {"input": "text"}},
        {
            "layerName": "summary.qa",
            "experimentName": "summary",
            "extraExperimentArgs": {"summaryFields": ["question"]},
        },
    ]
    experiments += [
        {
            "layerName": "match.qa",
            "experimentName": f"match.{name}",
            "extraExperimentArgs": {**base, "fusion": f, **match_args},
        }
        for name, f in fusions.items()
    ]
    rankers = {
        "dummy": {"rankerName": "dummy"},
        "mmr": {"rankerName": "mmr", "mmrLambda": 0.5},
        "blend": {"rankerName": "blend", "blendWeights": {"ann_matcher": 1.0, "bm25_matcher": 0.1}},
    }
    experiments += [
        {"layerName": "rank.qa", "experimentName": f"rank.{name}", "extraExperimentArgs": args}
        for name, args in rankers.items()
    ]

    def layer(name: str, exps: list[str]) -> dict[str, Any]:
        return {"name": name, "normalLayerArgs": [{"experimentName": e, "ratio": 1 / len(exps)} for e in exps]}

    doc = {
        "scene-config": {
            "scenes": [
                {
                    "name": "questionAnswer",
                    "extraSceneArgs": {"modelName": "minilm", "maxReservation": RESERVATION},
                    "layers": [
                        layer("qp.qa", ["qp"]),
                        layer("match.qa", [f"match.{n}" for n in fusions]),
                        layer("rank.qa", [f"rank.{n}" for n in rankers]),
                        layer("summary.qa", ["summary"]),
                    ],
                }
            ],
            "experiments": experiments,
        }
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _search(
    cfg: RuntimeConfig, deps: Any, text: str, *, fusion: str, ranker: str, top_k: int | None, offset: int = 0
) -> SearchResult:
    q = Query(scene="questionAnswer", user_id="u", text=text, top_k=top_k, offset=offset, debug=True)
    pins = {"match.qa": f"match.{fusion}", "rank.qa": f"rank.{ranker}"}
    return asyncio.run(run_scene(cfg, q, deps, SearchMetrics(), pinned=pins))


def _ids(res: SearchResult) -> list[str]:
    return [i.id for i in res.state.items]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fusion=st.sampled_from(["max", "rrf", "weighted"]),
    ranker=st.sampled_from(["dummy", "mmr", "blend"]),
    page=st.integers(min_value=1, max_value=10),
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
)
def test_pages_are_consecutive_slices_of_one_list(fusion: str, ranker: str, page: int, words: list[str]) -> None:
    cfg = parse_config(_config(), "t")
    vectors, documents = _corpus()
    deps = _deps(vectors, documents)
    text = " ".join(words)
    pages = RESERVATION // page
    deep = _search(cfg, deps, text, fusion=fusion, ranker=ranker, top_k=pages * page)
    got: list[str] = []
    for n in range(pages):
        res = _search(cfg, deps, text, fusion=fusion, ranker=ranker, top_k=page, offset=n * page)
        got += _ids(res)
        assert res.state.has_more == (len(deep.state.items) > (n + 1) * page or deep.state.has_more)
    assert got == _ids(deep)  # no duplicate, no gap
    assert len(set(got)) == len(got)


def test_max_fusion_pages_stay_exact_past_max_reservation() -> None:
    milvus = {"collectionName": "faq_qa", "vectorField": "question_emb", "searchParams": '{"ef": 20}'}
    cfg = parse_config(_config(matcherNames=["ANNMatcher"], milvusArgs=milvus), "t")
    vectors, documents = _corpus()
    deps = _deps(vectors, documents)
    deep = _search(cfg, deps, "roof", fusion="max", ranker="dummy", top_k=50)
    assert len(deep.state.items) == 50 > RESERVATION
    first = _search(cfg, deps, "roof", fusion="max", ranker="dummy", top_k=25)
    second = _search(cfg, deps, "roof", fusion="max", ranker="dummy", top_k=25, offset=25)
    assert _ids(first) + _ids(second) == _ids(deep)
    assert first.state.has_more
    assert second.state.has_more
    # Every matcher searched offset + topK deep, and HNSW's ef was raised to it (the config says 20).
    assert vectors.seen[-1].limit == 50
    assert vectors.seen[-1].search_params["ef"] == 50
    # 60 documents. A page that ends at the last one cannot tell without searching deeper: it says "may have".
    assert _search(cfg, deps, "roof", fusion="max", ranker="dummy", top_k=10, offset=50).state.has_more
    tail = _search(cfg, deps, "roof", fusion="max", ranker="dummy", top_k=10, offset=55)
    assert len(tail.state.items) == 5
    assert not tail.state.has_more


def test_bm25_finds_a_rare_word_that_the_vector_misses() -> None:
    cfg = parse_config(_config(), "t")
    vectors, documents = _corpus()
    vectors.texts["faq_qa"]["41"] += " xylophone"
    vectors.docs["faq_qa"][41] = ("41", [-1.0, 0.0])  # as far from the query's embedding as it gets
    deps = _deps(vectors, documents)
    res = _search(cfg, deps, "xylophone", fusion="rrf", ranker="dummy", top_k=5)
    found = {i.id: i for i in res.state.items}
    assert "41" in found  # BM25's first hit, tied by rrf with the vector's first
    assert dict(found["41"].retrieval_scores).keys() == {"bm25_matcher"}
    ann_only = parse_config(_config(matcherNames=["ANNMatcher"]), "t")
    assert "41" not in _ids(_search(ann_only, deps, "xylophone", fusion="max", ranker="dummy", top_k=5))


def test_min_score_and_min_similarity_cut() -> None:
    vectors, documents = _corpus()
    deps = _deps(vectors, documents)
    everything = _search(parse_config(_config(), "t"), deps, "roof", fusion="rrf", ranker="dummy", top_k=None)
    cut = _search(parse_config(_config(minScore=0.02), "t"), deps, "roof", fusion="rrf", ranker="dummy", top_k=None)
    assert 0 < len(cut.state.items) < len(everything.state.items)
    assert all(i.final_retrieval_score >= 0.02 for i in cut.state.items)
    sim = parse_config(_config(matcherNames=["ANNMatcher"], minSimilarity=0.9), "t")
    res = _search(sim, deps, "roof", fusion="max", ranker="dummy", top_k=None)
    assert res.state.items
    assert all(i.retrieval_scores["ann_matcher"] >= 0.9 for i in res.state.items)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"fusion": {"method": "weighted", "weights": {"ANNMatcher": 1.0, "RecencyMatcher": 1.0}}}, "RecencyMatcher"),
        ({"fusion": {"method": "weighted", "weights": {"ANNMatcher": 1.0}}}, "missing: BM25Matcher"),
        ({"fusion": {"method": "rrf", "k": 0}}, "greater than 0"),
        ({"fusion": {"method": "borda"}}, "'max', 'rrf' or 'weighted'"),
        ({"lexicalField": None}, "BM25Matcher needs lexicalField"),
        ({"fusion": {"method": "weighted", "weights": {"ANNMatcher": -1.0, "BM25Matcher": 1.0}}}, "negative"),
    ],
)
def test_fusion_config_mistakes_are_refused(change: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config(**change), "t")
    assert says in str(info.value)
