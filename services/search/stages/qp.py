"""Query processing: the query text through the tokenizer service, or the uploaded image through its preprocessing."""

from __future__ import annotations

import dataclasses

from services.search.config.model import QpArgs, StageArgs
from services.search.errors import InvalidQueryError
from services.search.ports import Deps
from services.search.state import State


class QueryProcessing:
    async def run(self, state: State, args: StageArgs, deps: Deps) -> State:
        assert isinstance(args, QpArgs)
        q = state.query
        if args.input == "image":
            if q.image is None:
                raise InvalidQueryError(f"scene {q.scene!r} searches by image: upload one as the 'image' form field")
            tensors = await deps.models.preprocess_images(args.model_name, [q.image])
        else:
            if q.text is None:
                raise InvalidQueryError(f"scene {q.scene!r} needs a text query")
            tensors = await deps.models.tokenize(args.model_name, [q.text])
        return dataclasses.replace(state, model_inputs=tensors)
