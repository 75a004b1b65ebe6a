"""The per-request state passed from stage to stage. Frozen: a stage returns a new state, it never mutates one,
and nothing request-specific lives on a shared object (the reference mutated a singleton's Milvus arguments per
request, so concurrent QA and image queries could search each other's collection)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from services.search.config.model import Experiment, StageKind
from services.search.filters import FilterValue

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Query:
    scene: str
    user_id: str
    text: str | None = None
    image: bytes | None = None
    top_k: int | None = None  # None: as many as the experiments keep, at most max_top_k
    offset: int = 0  # the page starts after this many items of the ranked list
    max_top_k: int = 200
    filters: Mapping[str, FilterValue | tuple[FilterValue, ...]] = field(default_factory=lambda: _EMPTY)
    debug: bool = False

    @property
    def depth(self) -> int:
        """How far down the ranked list this page reaches: every matcher and ranker keeps at least this many."""
        return self.offset + (self.top_k or 0)

    def keep(self, max_reservation: int) -> int:
        """How many items a match or rank stage keeps: its maxReservation, never fewer than the page reaches."""
        return max(max_reservation, self.depth)


@dataclass(frozen=True)
class MatchedChunk:
    """A passage of a document that a matcher found: shown under the hit, read by the cross-encoder."""

    position: int
    text: str
    score: float
    matcher: str  # whose score this is (a cosine and a BM25 score are not comparable)


@dataclass(frozen=True)
class Item:
    id: str
    retrieval_scores: Mapping[str, float]
    final_retrieval_score: float
    ranking_scores: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    final_ranking_score: float | None = None
    score: float | None = None
    summary: Mapping[str, Any] | None = None
    raw_score: float = 0.0  # the matcher's raw similarity (before the score rule), for rankers that need it
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)
    # A document corpus: the document's best passages per matcher, best first (merged by fusion).
    chunks: tuple[MatchedChunk, ...] = ()


@dataclass(frozen=True)
class State:
    query: Query
    experiments: Mapping[StageKind, Experiment]  # the experiment chosen for each stage's layer
    model_inputs: Mapping[str, np.ndarray] | None = None  # an image query, prepared by the qp stage
    text_model: str | None = None  # a text query: the model that tokenizes it (qp's modelName), when embedded
    items: tuple[Item, ...] = ()
    missing_summaries: int = 0
    paged: bool = False  # items are the requested page (offset, topK) of the ranked list
    has_more: bool = False  # the ranked list goes on after this page
    # A matcher returned as many hits as it was asked for: the store may hold more than this list shows.
    matchers_full: bool = False
    # Documents a stage already fetched from MongoDB ({id: fields}, from `documents_collection`): the cross-encoder
    # reads its texts with the summary's fields, and the summary stage reuses them instead of fetching twice.
    documents: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _EMPTY)
    documents_collection: str = ""
    # What a stage could not do and did instead, by layer (a reranker past its time-out): shown in the debug block.
    fallbacks: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


def merge_chunks(first: tuple[MatchedChunk, ...], second: tuple[MatchedChunk, ...]) -> tuple[MatchedChunk, ...]:
    """Two matchers' passages of one document: interleaved by rank (each matcher's best first), a position once."""
    out: list[MatchedChunk] = []
    seen: set[int] = set()
    for pair in itertools.zip_longest(first, second):
        for c in pair:
            if c is not None and c.position not in seen:
                seen.add(c.position)
                out.append(c)
    return tuple(out)
