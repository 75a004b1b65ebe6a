"""The query's embedding for an ANN matcher: an image query's prepared pixels through the model server; a text
query through the query-embedding cache, or on a miss the model server's Embed (one call: it tokenizes with the
model's own tokenizer) when the qp stage names the match model, as every reference config does, else the
qp model's tokenizer and then the match model."""

from __future__ import annotations

import numpy as np

from services.search.config.model import MatchArgs
from services.search.ports import Deps
from services.search.state import State


async def query_vector(state: State, args: MatchArgs, deps: Deps) -> np.ndarray:
    if state.model_inputs is not None:
        return (await deps.models.embed(args.model_name, state.model_inputs, args.vector_name)).vectors
    text, tokenizer_model = state.query.text, state.text_model
    if text is None or tokenizer_model is None:
        raise RuntimeError("ANNMatcher needs the qp stage's query: add a qp layer before match")
    cache = deps.query_cache if args.query_cache else None
    key = None
    if cache is not None:
        key = cache.key(model=args.model_name, tokenizer_model=tokenizer_model, text=text, output=args.vector_name)
        hit = cache.get(key)
        if hit is not None:
            return hit
    if tokenizer_model == args.model_name:
        embedding = await deps.models.embed_texts(args.model_name, [text], args.vector_name)
    else:
        inputs = await deps.models.tokenize(tokenizer_model, [text])
        embedding = await deps.models.embed(args.model_name, inputs, args.vector_name)
    if cache is not None and key is not None:
        cache.put(key, embedding.vectors, embedding.version)
    return embedding.vectors
