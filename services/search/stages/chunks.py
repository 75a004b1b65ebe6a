"""A document corpus's chunk hits collapsed to one item per document, before fusion and ranking.

A document's score is its best chunk's (`max`) or the sum of its k best (`topSum(k)`: a document that matches in
several places ranks above one that matches once as well). The store's search brings the chunks of enough
documents (adapters.MilvusVectorStore._search: over-fetch); the item keeps a document's chunks as its passages,
best first.
"""

from __future__ import annotations

from services.search.config.model import MatchArgs
from services.search.ports import AnnHit, Grouping
from services.search.state import Item, MatchedChunk


def grouping(args: MatchArgs) -> Grouping:
    """Enough chunks of each document for its score and the passages a hit shows."""
    return Grouping(per_document=max(args.chunks_summed, args.matched_chunks, 1))


def collapse(key: str, hits: list[AnnHit], *, summed: int, limit: int) -> list[Item]:
    """One item per document of `hits` (chunks, any order), scored by its `summed` best chunks; the best `limit`."""
    by_document: dict[str, list[AnnHit]] = {}
    for h in hits:
        by_document.setdefault(h.document if h.document is not None else h.id, []).append(h)
    items = []
    for document, chunks in by_document.items():
        chunks.sort(key=lambda h: (-h.distance, h.position))
        score = sum(h.distance for h in chunks[:summed])
        items.append(
            Item(
                id=document,
                retrieval_scores={key: score},
                final_retrieval_score=score,
                raw_score=score,
                vector=chunks[0].vector,  # rankers that need a vector (MMR) read the best chunk's
                chunks=tuple(MatchedChunk(h.position, h.passage, h.distance, key) for h in chunks),
            )
        )
    items.sort(key=lambda it: (-it.final_retrieval_score, it.id))
    return items[:limit]
