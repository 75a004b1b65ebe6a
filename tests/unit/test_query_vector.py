"""Which calls a text query's embedding costs: one Embed when the qp stage names the match model, the tokenizer and
then the model when they differ, none on a cache hit."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np

from mmsearch.model_repo import ModelRepository
from services.model_server.client import Embedding
from services.search.config.model import MatchArgs
from services.search.ports import Deps
from services.search.query_cache import QueryEmbeddingCache
from services.search.query_vector import query_vector
from services.search.state import Query, State
from tests.unit.test_search_pipeline import Documents, Models, Vectors


class Recording(Models):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def tokenize(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        self.calls.append(("tokenize", model))
        return await super().tokenize(model, texts)

    async def embed(self, model: str, inputs: Mapping[str, np.ndarray], output: str) -> Embedding:
        self.calls.append(("embed", model))
        return await super().embed(model, inputs, output)

    async def embed_texts(self, model: str, texts: Sequence[str], output: str) -> Embedding:
        self.calls.append(("embed_texts", model))
        return await super().embed_texts(model, texts, output)


def match_args(model: str, query_cache: bool = True) -> MatchArgs:
    return MatchArgs.model_validate(
        {
            "modelName": model,
            "matcherNames": ["ann_matcher"],
            "milvusArgs": {"collectionName": "faq", "vectorField": "question_emb"},
            "queryCache": query_cache,
        }
    )


def vector_calls(
    qp_model: str, match_model: str, cache: QueryEmbeddingCache | None, times: int = 1
) -> list[tuple[str, str]]:
    models = Recording()
    deps = Deps(models=models, vectors=Vectors({}), documents=Documents({}), query_cache=cache)
    state = State(query=Query(scene="qa", user_id="1", text="renew a permit"), experiments={}, text_model=qp_model)
    for _ in range(times):
        vector = asyncio.run(query_vector(state, match_args(match_model), deps))
        np.testing.assert_array_equal(vector, [[1.0, 0.0]])
    return models.calls


def test_the_match_models_own_tokenizer_takes_one_embed_call() -> None:
    assert vector_calls("minilm", "minilm", None) == [("embed_texts", "minilm")]


def test_another_qp_model_tokenizes_there_then_embeds() -> None:
    assert vector_calls("mclip-tokenizer", "mclip", None) == [("tokenize", "mclip-tokenizer"), ("embed", "mclip")]


def test_a_cached_query_calls_nothing(model_repo: ModelRepository) -> None:
    cache = QueryEmbeddingCache(size=10, ttl_seconds=60, repo=model_repo)
    assert vector_calls("minilm", "minilm", cache, times=3) == [("embed_texts", "minilm")]
