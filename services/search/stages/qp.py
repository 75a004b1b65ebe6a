"""Query processing: the uploaded image through its preprocessing; a text query is checked and names the model
that tokenizes it. The tokenizer runs when a matcher needs the embedding (query_vector), and not at all when
the embedding is cached or only BM25 matches the words."""

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
            return dataclasses.replace(state, text_model=args.model_name)
        return dataclasses.replace(state, model_inputs=tensors)
