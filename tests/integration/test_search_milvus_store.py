"""What the search service's Milvus adapter asks each Milvus form for: ids and scores, and vectors only when the
ranker needs them. Milvus Lite answers a search without output fields with every field of each hit (vectors
and BM25 sparse vectors included), which doubled its search time; these tests read the raw answers."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmsearch.model_repo import ModelRepository
from mmsearch.runtime.encoder import OnnxEncoder
from mmsearch.settings import MilvusSettings, Settings
from offline.push.milvus_push import MilvusPushOptions, push_milvus
from services.search.adapters import MilvusVectorStore
from services.search.ports import AnnHit, AnnSearch, TextSearch
from tests.fixtures.models import MINILM_KEY

pytestmark = pytest.mark.integration

PERMIT_QUESTION_ID = "2"  # "How long does it take to get a building permit?"


class RecordingClient:
    """The real pymilvus client; keeps the field names each search answer carried per hit."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.hit_fields: list[set[str]] = []

    async def search(self, *args: Any, **kwargs: Any) -> Any:
        res = await self.client.search(*args, **kwargs)
        self.hit_fields.extend(set(h["entity"]) for h in res[0])
        return res

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class RecordingStore(MilvusVectorStore):
    def __init__(self, uri: str) -> None:
        super().__init__(Settings(milvus=MilvusSettings(uri=uri)))
        self.recording: RecordingClient | None = None

    def _aconnect(self) -> Any:  # searches go through the asyncio client
        self.recording = RecordingClient(super()._aconnect())
        return self.recording

    def fields_seen(self) -> set[str]:
        assert self.recording is not None
        assert self.recording.hit_fields
        return set().union(*self.recording.hit_fields)


def assert_vectors_came(store: RecordingStore) -> None:
    seen = store.fields_seen()
    assert "question_emb" in seen
    assert seen <= {"id", "question_emb"}  # the vectors, and nothing of the documents


def _ann(corpus: str, vector: np.ndarray, *, with_vectors: bool) -> AnnSearch:
    return AnnSearch(
        collection=corpus,
        vector_field="question_emb",
        vector=tuple(float(x) for x in vector),
        limit=50,
        search_params={},
        metric_type=None,
        expression="",
        with_vectors=with_vectors,
    )


def _search(store: RecordingStore, req: AnnSearch | TextSearch) -> list[AnnHit]:
    async def go() -> list[AnnHit]:
        try:
            return await (store.search(req) if isinstance(req, AnnSearch) else store.text_search(req))
        finally:
            await store.aclose()

    return asyncio.run(go())


def _permit_query(model_repo: ModelRepository) -> np.ndarray:
    encoder = OnnxEncoder.from_repo(model_repo, MINILM_KEY)
    return np.asarray(encoder.encode_texts(["how long does a building permit take"])[0])


def test_ann_search_reads_vectors_only_when_the_ranker_needs_them(
    milvus_uri: str, corpus_name: str, faq: tuple[Path, Path], model_repo: ModelRepository
) -> None:
    _, vectors = faq
    push_milvus(MilvusSettings(uri=milvus_uri), MilvusPushOptions(vectors=vectors, corpus=corpus_name, progress=False))
    query = _permit_query(model_repo)

    store = RecordingStore(milvus_uri)
    hits = _search(store, _ann(corpus_name, query, with_vectors=False))
    assert hits[0].id == PERMIT_QUESTION_ID
    assert len(hits) == 50
    assert all(h.vector is None for h in hits)
    assert store.fields_seen() <= {"id"}  # no vector, no document field came over the wire

    store = RecordingStore(milvus_uri)
    hits = _search(store, _ann(corpus_name, query, with_vectors=True))
    assert hits[0].id == PERMIT_QUESTION_ID
    assert_vectors_came(store)
    for h in hits:
        assert h.vector is not None
        assert h.vector.shape == (384,)
    best = hits[0].vector
    assert best is not None
    assert float(np.dot(best, query)) == pytest.approx(hits[0].distance, abs=1e-5)


def test_text_search_reads_only_ids_unless_vectors_are_asked_for(
    corpus_name: str, faq: tuple[Path, Path], tmp_path: Path
) -> None:
    """BM25 needs Milvus Lite (the real 2.3.5 predates it): the embedded form."""
    _, vectors = faq
    uri = str(tmp_path / "milvus.db")
    opts = MilvusPushOptions(vectors=vectors, corpus=corpus_name, lexical_fields=["question"], progress=False)
    push_milvus(MilvusSettings(uri=uri), opts)
    words = TextSearch(
        collection=corpus_name, sparse_field="question_bm25", text="building permit", limit=20, expression=""
    )

    store = RecordingStore(uri)
    hits = _search(store, words)
    assert PERMIT_QUESTION_ID in {h.id for h in hits}
    assert all(h.distance > 0 and h.vector is None for h in hits)
    assert store.fields_seen() <= {"id"}

    store = RecordingStore(uri)
    hits = _search(store, dataclasses.replace(words, vector_field="question_emb"))
    assert_vectors_came(store)
    assert all(h.vector is not None and h.vector.shape == (384,) for h in hits)


def test_the_store_settles_pymilvus_lazy_scipy_check_before_any_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pymilvus' first search imports scipy.sparse by hand, unlocked: 32 threads searching at once for the first
    time got half-imported modules. The store does that check once, under its lock, when it connects."""
    from pymilvus.client.utils import SciPyHelper

    monkeypatch.setattr(SciPyHelper, "_checked", False)
    store = MilvusVectorStore(Settings(milvus=MilvusSettings(uri=str(tmp_path / "milvus.db"))))
    try:
        store._get()
        assert SciPyHelper._checked
    finally:
        store.close()
