"""Summary: the display fields of the hits from MongoDB in one query; a missing document is an empty summary."""

from __future__ import annotations

import dataclasses

from services.search.config.model import StageArgs, SummaryArgs
from services.search.ports import Deps
from services.search.state import State


class SummaryStage:
    async def run(self, state: State, args: StageArgs, deps: Deps) -> State:
        assert isinstance(args, SummaryArgs)
        if not state.items:
            return state
        docs = await deps.documents.fetch(args.mongo_collection, [it.id for it in state.items], args.summary_fields)
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
