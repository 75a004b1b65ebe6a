"""The cross_encoder ranker in the pipeline, with fake stores and a fake scorer (the real model path is
tests/integration/test_rerank_search.py): the first rerankTopN items reordered by the model, the rest kept below
them in their order, the documents fetched once for rerank and summary, and the time-out fallback said aloud."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mmsearch.model_repo import ModelKind, ModelManifest, ModelSource, TensorSpec
from services.search.config.checks import CollectionStatus, check_environment
from services.search.config.manager import parse_config
from services.search.errors import ConfigError, DependencyUnavailableError
from services.search.metrics import SearchMetrics
from services.search.pipeline import run_scene
from services.search.ports import Deps
from services.search.state import Query
from tests.unit.test_search_pipeline import Documents, Models, Vectors

DEFAULT = Path(__file__).resolve().parents[2] / "deploy" / "ab-config.yaml"
CE = {"rankerName": "cross_encoder", "modelName": "tiny-ce", "documentField": "answer", "rerankTopN": 3}


class Scorer(Models):
    """Scores a document by how many of the query's words its text holds; can be slow or down."""

    def __init__(self, delay: float = 0.0, down: bool = False) -> None:
        self.delay = delay
        self.down = down
        self.seen: list[tuple[str, list[str]]] = []

    async def score_pairs(self, model: str, query: str, documents: Sequence[str]) -> np.ndarray:
        if self.down:
            raise DependencyUnavailableError("model server", "connection refused")
        await asyncio.sleep(self.delay)
        self.seen.append((query, list(documents)))
        words = set(query.lower().split())
        return np.array([len(words & set(d.lower().split())) for d in documents], dtype=np.float32)


def _config(**ce: Any) -> str:
    doc = yaml.safe_load(DEFAULT.read_text(encoding="utf-8"))
    cfg = doc["scene-config"]
    qa = next(s for s in cfg["scenes"] if s["name"] == "questionAnswer")
    rank = next(la for la in qa["layers"] if la["name"] == "rank.qa")
    rank["normalLayerArgs"].append({"experimentName": "rank.qa.ce", "ratio": 0.01})  # the tests pin it
    cfg["experiments"].append(
        {"layerName": "rank.qa", "experimentName": "rank.qa.ce", "extraExperimentArgs": {**CE, **ce}}
    )
    return str(yaml.safe_dump(doc))


def _stores() -> tuple[Vectors, Documents]:
    # Recall order (by vector): 1, 2, 3, 4, 5; the answers decide the cross-encoder's order among the first 3.
    vectors = Vectors({"faq_qa": [(str(i), [1.0 - i / 10, i / 10]) for i in range(1, 6)]})
    answers = {"1": "cats sleep", "2": "permit office hours", "3": "apply for a building permit online"}
    documents = Documents(
        {"faq_qa": {i: {"question": f"q{i}", "answer": answers.get(i, "nothing"), "category": ["c"]} for i in "12345"}}
    )
    return vectors, documents


def _run(scorer: Scorer, documents: Documents, vectors: Vectors, **ce: Any) -> Any:
    cfg = parse_config(_config(**ce), "t")
    q = Query(scene="questionAnswer", user_id="7", text="building permit office", top_k=5, debug=True)
    metrics = SearchMetrics()
    deps = Deps(models=scorer, vectors=vectors, documents=documents)
    res = asyncio.run(run_scene(cfg, q, deps, metrics, pinned={"rank.qa": "rank.qa.ce", "match.qa": "match.qa.base"}))
    return res, metrics


def test_the_first_n_are_reordered_by_the_model_and_the_rest_stay_below_in_order() -> None:
    vectors, documents = _stores()
    scorer = Scorer()
    res, metrics = _run(scorer, documents, vectors)
    items = res.state.items
    # Scores among the first 3: "3" holds 2 query words, "2" holds 2, "1" none -> 2, 3 (by id on ties), 1; then 4, 5.
    assert [i.id for i in items] == ["2", "3", "1", "4", "5"]
    assert [dict(i.ranking_scores) for i in items[:3]] == [
        {"cross_encoder": 2.0},
        {"cross_encoder": 2.0},
        {"cross_encoder": 0.0},
    ]
    assert items[3].ranking_scores.keys() == {"dummy"}
    scores = [i.score for i in items]
    assert scores == sorted(scores, reverse=True)  # sorting by score gives the served order
    assert scores[3] < scores[2]
    assert scorer.seen == [
        ("building permit office", ["cats sleep", "permit office hours", "apply for a building permit online"])
    ]
    # Rerank fetched the first 3 with the summary's fields; the summary fetched only 4 and 5.
    assert documents.calls == 2
    assert items[0].summary == {"question": "q2", "answer": "permit office hours", "category": ["c"]}
    assert items[4].summary["question"] == "q5"
    assert res.state.fallbacks == {}
    assert metrics.rank_fallbacks.labels("questionAnswer", "rank.qa", "rank.qa.ce")._value.get() == 0


@pytest.mark.parametrize(
    ("scorer", "says"),
    [(Scorer(delay=0.5), "cross_encoder took over 50 ms"), (Scorer(down=True), "cross_encoder unavailable")],
)
def test_past_the_timeout_or_without_the_model_the_recall_order_is_kept_and_said(scorer: Scorer, says: str) -> None:
    vectors, documents = _stores()
    res, metrics = _run(scorer, documents, vectors, timeoutMs=50)
    assert [i.id for i in res.state.items] == ["1", "2", "3", "4", "5"]
    assert all(i.ranking_scores.keys() == {"dummy"} for i in res.state.items)
    assert says in res.state.fallbacks["rank.qa"]
    assert "recall order kept" in res.state.fallbacks["rank.qa"]
    assert metrics.rank_fallbacks.labels("questionAnswer", "rank.qa", "rank.qa.ce")._value.get() == 1
    assert res.state.items[0].summary["question"] == "q1"


def test_a_cross_encoder_experiment_needs_a_document_field_and_a_cross_encoder_model() -> None:
    with pytest.raises(ConfigError, match="rankerName cross_encoder needs documentField"):
        parse_config(_config(documentField=""), "t")
    cfg = parse_config(_config(), "t")
    manifest = ModelManifest(
        key="x",
        kind=ModelKind.TEXT_EMBEDDING,
        inputs=[TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"])],
        outputs=[],
        embedding_dim=2,
        normalized=True,
        source=ModelSource(),
    )
    status = {
        "faq_qa": CollectionStatus(True),
        "chatterbot_qa": CollectionStatus(True),
        "documents": CollectionStatus(False),
        "photos": CollectionStatus(False),
    }
    models = {"minilm": manifest.model_copy(update={"key": "minilm"})}
    # Missing: the scene is disabled, saying how to export one.
    out = check_environment(cfg, models=models, model_repo_root="/r", describe_collection=status.__getitem__)
    reason = out.scenes["questionAnswer"].disabled_reason
    assert reason is not None
    assert "mmsearch export cross-encoder" in reason
    # Present but an embedding model (the scene's modelName leaking in): refused, saying where to set it.
    with pytest.raises(ConfigError, match="needs a cross_encoder model, and 'minilm' is a text_embedding model"):
        check_environment(
            parse_config(_config(modelName="minilm"), "t"),
            models=models,
            model_repo_root="/r",
            describe_collection=status.__getitem__,
        )


def test_a_document_corpus_hit_is_scored_on_its_best_passage() -> None:
    """A long document is more than the model's window: the cross-encoder reads the passage that matched."""
    from services.search.config.model import RankArgs
    from services.search.stages.rerank import CrossEncoderRanker
    from services.search.state import Item, MatchedChunk, State

    _, documents = _stores()
    items = tuple(
        Item(
            id=i,
            retrieval_scores={"ann_matcher": 1.0 - int(i) / 10},
            final_retrieval_score=1.0 - int(i) / 10,
            chunks=(MatchedChunk(4, passage, 0.9, "ann_matcher"), MatchedChunk(0, "unrelated words", 0.5, "ann")),
        )
        for i, passage in (("1", "nothing here"), ("2", "the building permit office opens at nine"))
    )
    query = Query(scene="questionAnswer", user_id="7", text="building permit office")
    scorer = Scorer()
    args = RankArgs.model_validate({**CE, "mongoCollection": "faq_qa"})
    out = asyncio.run(
        CrossEncoderRanker().rerank(
            State(query=query, experiments={}, items=items),
            args,
            Deps(models=scorer, vectors=Vectors({}), documents=documents),
            "rank.qa",
            2,
        )
    )
    assert scorer.seen == [("building permit office", ["nothing here", "the building permit office opens at nine"])]
    assert [i.id for i in out.items] == ["2", "1"]
