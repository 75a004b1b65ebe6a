"""Summary: the display fields of the hits from MongoDB in one query; a missing document is an empty summary."""

from __future__ import annotations

import dataclasses
from typing import Any

from services.search.config.model import StageArgs, SummaryArgs
from services.search.ports import Deps
from services.search.state import State


class SummaryStage:
    async def run(self, state: State, args: StageArgs, deps: Deps) -> State:
        assert isinstance(args, SummaryArgs)
        if not state.items:
            return state
        # The cross-encoder may have fetched some of these documents already, with these fields: fetch the rest.
        # (It fetched them with the summary's fields when both read the same collection.)
        reused: dict[str, Any] = dict(state.documents) if state.documents_collection == args.mongo_collection else {}
        wanted = [it.id for it in state.items if it.id not in reused]
        fetched = await deps.documents.fetch(args.mongo_collection, wanted, args.summary_fields) if wanted else {}
        docs = {**reused, **fetched}
        items = []
        missing = 0
        for it in state.items:
            doc = docs.get(it.id)
            if doc is None:
                missing += 1
                items.append(dataclasses.replace(it, summary={}))
            else:
                items.append(dataclasses.replace(it, summary={f: doc[f] for f in args.summary_fields if f in doc}))
        return dataclasses.replace(state, items=tuple(items), missing_summaries=state.missing_summaries + missing)
