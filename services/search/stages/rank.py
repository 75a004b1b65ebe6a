"""Ranking: the reference's dummy ranker, maximal marginal relevance (diversity), score blending, and the
cross-encoder (stages/rerank.py)."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from services.search.config.model import RankArgs, StageArgs
from services.search.ports import Deps
from services.search.stages.rerank import CrossEncoderRanker
from services.search.state import Item, State


class Ranker(Protocol):
    key: str
    needs_vectors: bool  # the matchers return the documents' vectors when the chosen ranker needs them

    def rank(self, items: tuple[Item, ...], args: RankArgs, keep: int | None = None) -> tuple[Item, ...]:
        """Rank `items`; return at most `keep` (default: args.max_reservation)."""
        ...


def _scored(item: Item, key: str, value: float) -> Item:
    return dataclasses.replace(item, ranking_scores={key: value}, final_ranking_score=value, score=value, vector=None)


class DummyRanker:
    """The reference's: copies the retrieval score. Works with any number of hits (the reference crashed below
    maxReservation)."""

    key = "dummy"
    needs_vectors = False

    def rank(self, items: tuple[Item, ...], args: RankArgs, keep: int | None = None) -> tuple[Item, ...]:
        out = [_scored(it, self.key, it.final_retrieval_score) for it in items]
        out.sort(key=lambda i: (-(i.score or 0.0), i.id))
        return tuple(out[: keep or args.max_reservation])


class BlendRanker:
    """Weighted sum of the matchers' raw scores (blendWeights: {matcher key: weight}; a missing weight is 1.0, a
    matcher that did not find the item contributes 0)."""

    key = "blend"
    needs_vectors = False

    def rank(self, items: tuple[Item, ...], args: RankArgs, keep: int | None = None) -> tuple[Item, ...]:
        out = []
        for it in items:
            value = sum(args.blend_weights.get(k, 1.0) * v for k, v in it.retrieval_scores.items())
            out.append(_scored(it, self.key, value))
        out.sort(key=lambda i: (-(i.score or 0.0), i.id))
        return tuple(out[: keep or args.max_reservation])


def mmr_order(relevance: np.ndarray, vectors: np.ndarray, lam: float, k: int) -> list[tuple[int, float]]:
    """Greedy maximal marginal relevance: each pick maximises lam*rel - (1-lam)*max cosine to the picks so far.

    Returns (index, mmr value) in pick order."""
    n = len(relevance)
    if n == 0:
        return []
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    sim = unit @ unit.T
    max_sim = np.full(n, -np.inf)
    chosen = np.zeros(n, dtype=bool)
    out: list[tuple[int, float]] = []
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        value = lam * relevance - (1 - lam) * penalty
        value[chosen] = -np.inf
        i = int(np.argmax(value))
        out.append((i, float(value[i])))
        chosen[i] = True
        max_sim = np.maximum(max_sim, sim[i])
    return out


class MmrRanker:
    """Diversity: maximal marginal relevance over the documents' vectors (the reference's unused useDiversify)."""

    key = "mmr"
    needs_vectors = True

    def rank(self, items: tuple[Item, ...], args: RankArgs, keep: int | None = None) -> tuple[Item, ...]:
        usable = [it for it in items if it.vector is not None]
        if len(usable) != len(items) or not items:
            # Without vectors there is nothing to diversify on: keep the retrieval order, named honestly.
            return DummyRanker().rank(items, args, keep)
        rel = np.array([it.raw_score for it in items], dtype=np.float64)
        vecs = np.stack([np.asarray(it.vector, dtype=np.float64) for it in items])
        picks = mmr_order(rel, vecs, args.mmr_lambda, keep or args.max_reservation)
        return tuple(_scored(items[i], self.key, v) for i, v in picks)


RANKERS: dict[str, Ranker] = {r.key: r for r in (DummyRanker(), MmrRanker(), BlendRanker(), CrossEncoderRanker())}


class RankStage:
    async def run(self, state: State, args: StageArgs, deps: Deps) -> State:
        assert isinstance(args, RankArgs)
        keep = state.query.keep(args.max_reservation)  # the whole depth is ranked; the page is cut after
        ranker = RANKERS[args.ranker_name]
        if isinstance(ranker, CrossEncoderRanker):
            layer = state.experiments["rank"].layer
            return await ranker.rerank(state, args, deps, layer, keep)
        return dataclasses.replace(state, items=ranker.rank(state.items, args, keep))
