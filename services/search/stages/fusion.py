"""Fusion: the lists of a match experiment's matchers become one list, as its `fusion` argument says.

Every matcher returns its hits best first, each with its raw score (cosine for ANN, BM25 for full-text) under
its own key in `retrieval_scores`. Fusion sets `final_retrieval_score` and keeps every raw score, so a response
shows both what each matcher thought and what the experiment made of it. Ties are broken by id, so the same
lists always give the same order (paging depends on it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from services.search.config.model import FusionArgs
from services.search.state import Item, merge_chunks

LEVEL = 3.0  # the reference's algorithm level of a matcher, added to its normalised score


def retrieval_scores(raw: list[float], level: float) -> list[float]:
    """The reference's rule: raw / (max_in_list + 0.001) + level.

    Guarded for lists whose best score is not positive (e.g. L2 or unrelated IP queries), where the reference
    divided by ~0 or flipped signs: there the raw score is used unscaled.
    """
    if not raw:
        return []
    denom = max(raw) + 0.001
    if denom <= 0.001:
        return [r + level for r in raw]
    return [r / denom + level for r in raw]


def merge(lists: Iterable[list[Item]], max_reservation: int) -> tuple[Item, ...]:
    """One item per id: the best final score wins, the raw scores of every matcher that found it are kept."""
    best: dict[str, Item] = {}
    for items in lists:
        for it in items:
            have = best.get(it.id)
            if have is None:
                best[it.id] = it
                continue
            scores = {**have.retrieval_scores, **it.retrieval_scores}
            winner = it if it.final_retrieval_score > have.final_retrieval_score else have
            best[it.id] = dataclasses.replace(
                winner,
                retrieval_scores=scores,
                vector=winner.vector if winner.vector is not None else (have.vector if winner is it else it.vector),
                chunks=merge_chunks(have.chunks, it.chunks),
            )
    ordered = sorted(best.values(), key=lambda i: (-i.final_retrieval_score, i.id))
    return tuple(ordered[:max_reservation])


def fuse(lists: Sequence[tuple[str, list[Item]]], fusion: FusionArgs, keep: int) -> tuple[Item, ...]:
    """`lists`: (matcher name, its hits best first). Returns at most `keep` items, best first."""
    if fusion.method == "max":
        scored = [
            [
                dataclasses.replace(it, final_retrieval_score=f)
                for it, f in zip(items, retrieval_scores([it.raw_score for it in items], LEVEL), strict=True)
            ]
            for _, items in lists
        ]
        return merge(scored, keep)
    total: dict[str, float] = {}
    found: dict[str, Item] = {}
    for name, items in lists:
        for it, part in zip(items, _contributions(name, items, fusion), strict=True):
            total[it.id] = total.get(it.id, 0.0) + part
            have = found.get(it.id)
            found[it.id] = (
                it
                if have is None
                else dataclasses.replace(
                    have,
                    retrieval_scores={**have.retrieval_scores, **it.retrieval_scores},
                    vector=have.vector if have.vector is not None else it.vector,
                    chunks=merge_chunks(have.chunks, it.chunks),
                )
            )
    top = max(total.values(), default=0.0)
    fused = [
        # Rankers that read a relevance in [0, 1] (MMR) get the fused score scaled by the list's best.
        dataclasses.replace(it, final_retrieval_score=total[i], raw_score=total[i] / top if top > 0 else 0.0)
        for i, it in found.items()
    ]
    fused.sort(key=lambda it: (-it.final_retrieval_score, it.id))
    return tuple(fused[:keep])


def _contributions(name: str, items: list[Item], fusion: FusionArgs) -> list[float]:
    if fusion.method == "rrf":
        return [1.0 / (fusion.k + rank) for rank in range(1, len(items) + 1)]
    weight = fusion.weights[name]
    raw = [it.raw_score for it in items]
    if not raw:
        return []
    low, high = min(raw), max(raw)
    if high == low:
        return [weight] * len(raw)
    return [weight * (r - low) / (high - low) for r in raw]
