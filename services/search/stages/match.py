"""Recall: every matcher of the experiment, merged, de-duplicated by id (best score kept), cut to maxReservation."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from typing import Protocol

from services.search.config.model import MatchArgs, RankArgs, StageArgs
from services.search.errors import InvalidQueryError
from services.search.filters import build_expression
from services.search.ports import AnnSearch, Deps
from services.search.stages.rank import RANKERS
from services.search.state import Item, State

ANN_LEVEL = 3.0  # the reference's algorithm level of the ANN matcher, added to its normalised score


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


class Matcher(Protocol):
    key: str  # the name in originalRetrievalScoreMap

    async def match(self, state: State, args: MatchArgs, deps: Deps) -> list[Item]: ...


class AnnMatcher:
    key = "ann_matcher"

    async def match(self, state: State, args: MatchArgs, deps: Deps) -> list[Item]:
        if state.model_inputs is None:
            raise RuntimeError("ANNMatcher needs the qp stage's model inputs: add a qp layer before match")
        vec = await deps.models.embed(args.model_name, state.model_inputs, args.vector_name)
        ma = args.milvus_args
        hits = await deps.vectors.search(
            AnnSearch(
                collection=ma.collection_name,
                vector_field=ma.vector_field,
                vector=tuple(float(x) for x in vec.reshape(-1)),
                limit=args.max_reservation,
                search_params=ma.search_params,
                metric_type=ma.metric_type,
                expression=build_expression(state.query.filters, args.filter_fields),
                with_vectors=_rank_needs_vectors(state),
            )
        )
        finals = retrieval_scores([h.distance for h in hits], ANN_LEVEL)
        return [
            Item(
                id=h.id,
                retrieval_scores={self.key: h.distance},
                final_retrieval_score=f,
                raw_score=h.distance,
                vector=h.vector,
            )
            for h, f in zip(hits, finals, strict=True)
        ]


MATCHERS: dict[str, Matcher] = {"ANNMatcher": AnnMatcher()}


def _rank_needs_vectors(state: State) -> bool:
    rank = state.experiments.get("rank")
    return rank is not None and isinstance(rank.args, RankArgs) and RANKERS[rank.args.ranker_name].needs_vectors


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
            )
    ordered = sorted(best.values(), key=lambda i: (-i.final_retrieval_score, i.id))
    return tuple(ordered[:max_reservation])


class MatchStage:
    async def run(self, state: State, args: StageArgs, deps: Deps) -> State:
        assert isinstance(args, MatchArgs)
        unknown = set(state.query.filters) - set(args.filter_fields)
        if unknown:
            have = ", ".join(sorted(args.filter_fields)) or "none"
            raise InvalidQueryError(f"cannot filter on {', '.join(sorted(unknown))}: filterable fields are {have}")
        lists = await asyncio.gather(*(MATCHERS[name].match(state, args, deps) for name in args.matcher_names))
        return dataclasses.replace(state, items=merge(lists, args.max_reservation))
