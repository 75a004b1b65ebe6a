"""The cross_encoder ranker: a model scores (query, document) pairs for the first `rerankTopN` items of recall.

Path: the first N items' documents are fetched from MongoDB once, with the summary stage's fields (the summary
reuses them), `documentField` is paired with the query text, the model server scores the pairs in one ScorePairs
call (the model's manifest turns logits into scores), and the N items are reordered by that score. Items past N
keep their incoming order below them: their scores are shifted under the lowest reranked score, as Vespa's global
phase does, so sorting by score gives the served order.

Past `timeoutMs`, or when the model server cannot answer, the incoming order is kept, scored as the
dummy ranker scores it, and the fallback is named in the state (the debug block and
mmsearch_search_rank_fallbacks_total say so).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

from services.search.config.model import CROSS_ENCODER, RankArgs, SummaryArgs
from services.search.errors import DependencyUnavailableError
from services.search.ports import Deps
from services.search.state import Item, State

SCORE_KEY = "cross_encoder"


def _scored(item: Item, key: str, value: float) -> Item:
    return dataclasses.replace(item, ranking_scores={key: value}, final_ranking_score=value, score=value, vector=None)


class CrossEncoderRanker:
    key = CROSS_ENCODER
    needs_vectors = False

    def rank(self, items: tuple[Item, ...], args: RankArgs, keep: int | None = None) -> tuple[Item, ...]:
        """Without the model (no query text, a time-out): the incoming order, scored as the dummy ranker does."""
        return tuple(_scored(it, "dummy", it.final_retrieval_score) for it in items[: keep or args.max_reservation])

    async def rerank(self, state: State, args: RankArgs, deps: Deps, layer: str, keep: int) -> State:
        items = state.items
        text = state.query.text
        if not items:
            return state
        if text is None:
            return self._fallback(state, args, layer, keep, "no query text (an image query): recall order kept")
        top = items[: args.rerank_top_n]
        collection, docs = await self._documents(state, args, deps, [it.id for it in top])
        # A document corpus's hit is scored on its best passage (the model reads one window, and the passage is what
        # matched); a row corpus's on its documentField.
        texts = [it.chunks[0].text if it.chunks else _text(docs.get(it.id, {}).get(args.document_field)) for it in top]
        try:
            async with asyncio.timeout(args.timeout_ms / 1000):
                scores = await deps.models.score_pairs(args.model_name, text, texts)
        except TimeoutError:
            reason = f"cross_encoder took over {args.timeout_ms} ms: recall order kept"
            return self._fallback(state, args, layer, keep, reason, docs, collection)
        except DependencyUnavailableError as exc:
            reason = f"cross_encoder unavailable ({exc.message}): recall order kept"
            return self._fallback(state, args, layer, keep, reason, docs, collection)
        ranked = sorted(
            (_scored(it, SCORE_KEY, float(s)) for it, s in zip(top, scores, strict=True)),
            key=lambda it: (-(it.score or 0.0), it.id),
        )
        rest = items[args.rerank_top_n :]
        out = [*ranked, *_below(rest, min(it.score or 0.0 for it in ranked))]
        return self._with_documents(state, tuple(out[:keep]), docs, collection)

    async def _documents(
        self, state: State, args: RankArgs, deps: Deps, ids: list[str]
    ) -> tuple[str, dict[str, dict[str, Any]]]:
        summary = state.experiments.get("summary")
        summary_args = summary.args if summary is not None else None
        fields = [args.document_field]
        if isinstance(summary_args, SummaryArgs) and summary_args.mongo_collection == args.mongo_collection:
            fields += [f for f in summary_args.summary_fields if f != args.document_field]
        return args.mongo_collection, await deps.documents.fetch(args.mongo_collection, ids, fields)

    def _fallback(  # noqa: PLR0917 - the state, what to keep, why, and what was fetched
        self,
        state: State,
        args: RankArgs,
        layer: str,
        keep: int,
        reason: str,
        docs: Mapping[str, Mapping[str, Any]] | None = None,
        collection: str = "",
    ) -> State:
        fallbacks = {**state.fallbacks, layer: reason}
        out = self._with_documents(state, self.rank(state.items, args, keep), docs or {}, collection)
        return dataclasses.replace(out, fallbacks=fallbacks)

    @staticmethod
    def _with_documents(
        state: State, items: tuple[Item, ...], docs: Mapping[str, Mapping[str, Any]], collection: str
    ) -> State:
        if not docs:
            return dataclasses.replace(state, items=items)
        return dataclasses.replace(state, items=items, documents=dict(docs), documents_collection=collection)


def _below(rest: tuple[Item, ...], floor: float) -> list[Item]:
    """Items past rerankTopN in their incoming order, with their retrieval scores shifted to end under `floor`."""
    if not rest:
        return []
    shift = floor - 1.0 - max(it.final_retrieval_score for it in rest)
    return [_scored(it, "dummy", it.final_retrieval_score + shift) for it in rest]


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)
