"""Recall: every matcher of the experiment searches to the request's depth, then fusion makes one list of them.

ANNMatcher: the query's embedding against the collection's vectors. BM25Matcher: the query's text against a
lexical field (Milvus full-text search), which finds the exact words, names and codes that an embedding misses.
Both honour the request's filters. `minSimilarity` drops ANN hits below a cosine before fusion; `minScore` drops
items whose fused score is below it after fusion.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Protocol

from mmsearch.collection_meta import sparse_field
from services.search.config.model import MatchArgs, RankArgs, StageArgs
from services.search.errors import InvalidQueryError
from services.search.filters import build_expression
from services.search.ports import AnnHit, AnnSearch, Deps, Grouping, TextSearch
from services.search.query_vector import query_vector
from services.search.stages.chunks import collapse, grouping
from services.search.stages.fusion import fuse
from services.search.stages.rank import RANKERS
from services.search.state import Item, State


class Matcher(Protocol):
    key: str  # the name in originalRetrievalScoreMap

    async def match(self, state: State, args: MatchArgs, deps: Deps, limit: int) -> list[Item]: ...


def _items(key: str, hits: list[AnnHit]) -> list[Item]:
    return [
        Item(
            id=h.id,
            retrieval_scores={key: h.distance},
            final_retrieval_score=h.distance,
            raw_score=h.distance,
            vector=h.vector,
        )
        for h in hits
    ]


class AnnMatcher:
    key = "ann_matcher"

    async def match(self, state: State, args: MatchArgs, deps: Deps, limit: int) -> list[Item]:
        vec = await query_vector(state, args, deps)
        ma = args.milvus_args
        params = dict(ma.search_params)
        if "ef" in params:
            # HNSW explores ef candidates; fewer than the hits asked for is an error (Milvus) or a short list.
            params["ef"] = max(int(params["ef"]), limit)
        grouped = await _documents(args, deps)
        hits = await deps.vectors.search(
            AnnSearch(
                collection=ma.collection_name,
                vector_field=ma.vector_field,
                vector=tuple(float(x) for x in vec.reshape(-1)),
                limit=limit,
                search_params=params,
                metric_type=ma.metric_type,
                expression=build_expression(state.query.filters, args.filter_fields),
                with_vectors=_rank_needs_vectors(state),
                grouping=grouped,
            )
        )
        if args.min_similarity is not None:
            hits = [h for h in hits if h.distance >= args.min_similarity]
        if grouped is not None:
            return collapse(self.key, hits, summed=args.chunks_summed, limit=limit)
        return _items(self.key, hits)


class Bm25Matcher:
    key = "bm25_matcher"

    async def match(self, state: State, args: MatchArgs, deps: Deps, limit: int) -> list[Item]:
        if state.query.text is None or args.lexical_field is None:
            return []  # an image query has no words (the config refuses BM25Matcher in image scenes)
        ma = args.milvus_args
        grouped = await _documents(args, deps)
        hits = await deps.vectors.text_search(
            TextSearch(
                collection=ma.collection_name,
                sparse_field=sparse_field(args.lexical_field),
                text=state.query.text,
                limit=limit,
                expression=build_expression(state.query.filters, args.filter_fields),
                vector_field=ma.vector_field if _rank_needs_vectors(state) else None,
                grouping=grouped,
            )
        )
        if grouped is not None:
            return collapse(self.key, hits, summed=args.chunks_summed, limit=limit)
        return _items(self.key, hits)


MATCHERS: dict[str, Matcher] = {"ANNMatcher": AnnMatcher(), "BM25Matcher": Bm25Matcher()}


async def _documents(args: MatchArgs, deps: Deps) -> Grouping | None:
    """How to search a document corpus's passages (collapsed to documents after); None for a row corpus."""
    layout = await deps.vectors.layout(args.milvus_args.collection_name)
    return grouping(args) if layout is not None and layout.documents else None


def _rank_needs_vectors(state: State) -> bool:
    rank = state.experiments.get("rank")
    return rank is not None and isinstance(rank.args, RankArgs) and RANKERS[rank.args.ranker_name].needs_vectors


class MatchStage:
    async def run(self, state: State, args: StageArgs, deps: Deps) -> State:
        assert isinstance(args, MatchArgs)
        unknown = set(state.query.filters) - set(args.filter_fields)
        if unknown:
            have = ", ".join(sorted(args.filter_fields)) or "none"
            raise InvalidQueryError(f"cannot filter on {', '.join(sorted(unknown))}: filterable fields are {have}")
        keep = state.query.keep(args.max_reservation)
        lists = await asyncio.gather(*(MATCHERS[name].match(state, args, deps, keep) for name in args.matcher_names))
        items = fuse(list(zip(args.matcher_names, lists, strict=True)), args.fusion, keep)
        if any(it.chunks for it in items):  # a document corpus: each hit shows its best passages
            items = tuple(dataclasses.replace(it, chunks=it.chunks[: args.matched_chunks]) for it in items)
        if args.min_score is not None:
            items = tuple(it for it in items if it.final_retrieval_score >= args.min_score)
        return dataclasses.replace(state, items=items, matchers_full=any(len(hits) >= keep for hits in lists))
