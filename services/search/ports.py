"""What the pipeline needs from the outside world, as protocols: the adapters (services/search/adapters/) speak to the
real tokenizer, model server, Milvus and MongoDB; each call is bounded by a timeout and raises
DependencyUnavailableError naming the dependency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mmsearch.collection_meta import CollectionMeta
from services.model_server.client import Embedding
from services.search.config.checks import CollectionStatus

if TYPE_CHECKING:
    from services.search.query_cache import QueryEmbeddingCache


class QueryModels(Protocol):
    async def tokenize(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]: ...

    async def preprocess_images(self, model: str, images: Sequence[bytes]) -> dict[str, np.ndarray]: ...

    async def embed(self, model: str, inputs: Mapping[str, np.ndarray], output: str) -> Embedding:
        """Unit vectors [n, dim] of `output`, with the model version that computed them."""
        ...

    async def embed_texts(self, model: str, texts: Sequence[str], output: str) -> Embedding:
        """`embed` of query texts in one call: the model server tokenizes them with the model's own tokenizer."""
        ...

    async def score_pairs(self, model: str, query: str, documents: Sequence[str]) -> np.ndarray:
        """One relevance score per document for `query`, by the cross-encoder `model` (its manifest's rule)."""
        ...

    async def ping_tokenizer(self) -> None: ...

    async def ping_model_server(self) -> None: ...


@dataclass(frozen=True)
class Grouping:
    """A search of a document corpus's chunks: the hits cover `limit` distinct documents (every one there is, when
    fewer match), with at most `per_document` chunks of each, best first; each hit says its document, position and
    passage."""

    per_document: int


@dataclass(frozen=True)
class AnnSearch:
    collection: str
    vector_field: str
    vector: tuple[float, ...]
    limit: int
    search_params: Mapping[str, Any]
    metric_type: str | None
    expression: str
    with_vectors: bool
    grouping: Grouping | None = None


@dataclass(frozen=True)
class TextSearch:
    """Full-text (BM25) search of a lexical field: Milvus analyses `text` with the field's analyzer."""

    collection: str
    sparse_field: str  # the field's BM25 sparse vector (collection_meta.sparse_field)
    text: str
    limit: int
    expression: str
    vector_field: str | None = None  # also return each hit's vector from this field (rankers that need them)
    grouping: Grouping | None = None


@dataclass(frozen=True)
class AnnHit:
    id: str
    distance: float  # similarity for ANN; a positive BM25 score for full-text search (higher is better)
    vector: np.ndarray | None = None
    # A chunk of a document corpus (searches with `grouping`): its document's id, position and text.
    document: str | None = None
    position: int = 0
    passage: str = ""


class CollectionCatalog(Protocol):
    """What validating a config needs of Milvus: whether a collection exists, and what it records."""

    async def describe(self, collection: str) -> CollectionStatus: ...


class VectorStore(CollectionCatalog, Protocol):
    async def search(self, req: AnnSearch) -> list[AnnHit]: ...

    async def text_search(self, req: TextSearch) -> list[AnnHit]: ...

    async def layout(self, collection: str) -> CollectionMeta | None:
        """What the collection (or alias) records, as of a few seconds ago: searches read it on every request."""
        ...

    async def ping(self) -> None: ...


class DocumentStore(Protocol):
    async def fetch(self, collection: str, ids: Sequence[str], fields: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    async def ping(self) -> None: ...


@dataclass(frozen=True)
class Deps:
    models: QueryModels
    vectors: VectorStore
    documents: DocumentStore
    query_cache: QueryEmbeddingCache | None = None  # None: every query is tokenized and embedded
