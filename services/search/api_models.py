"""HTTP request and response bodies: the reference's shape, plus additive fields (topK, filters, experiments, debug)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from services.search.filters import FilterValue


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    query: str = Field(description="The query text; required, not blank, at most search.max_query_chars characters.")
    use_debug: bool = Field(default=False, alias="useDebug", description="Return per-stage timings; allow pinning.")
    specified_layer_and_experiment: dict[str, str] = Field(
        default_factory=dict,
        alias="specifiedLayerAndExperiment",
        description="{layer: experiment}; honoured only with useDebug.",
    )
    top_k: int | None = Field(default=None, alias="topK", gt=0, description="At most this many hits (capped).")
    offset: int = Field(
        default=0,
        ge=0,
        description="Skip this many hits of the ranked list (paging; at most search.max_offset). With the same "
        "query, user and topK, consecutive offsets give consecutive slices of one list while offset + topK "
        "stays within the match experiment's maxReservation.",
    )
    filters: dict[str, FilterValue | list[FilterValue]] = Field(
        default_factory=dict, description='Field filters, e.g. {"category": "Permits"}; fields the scene allows only.'
    )


class MatchedChunkModel(BaseModel):
    position: int = Field(description="The passage's place in its document: 0, 1, ...")
    text: str = Field(description="The passage, the document's own words.")
    score: float = Field(description="The matcher's score of this passage (cosine, or BM25 score).")
    matcher: str = Field(description="Which matcher scored it (ann_matcher, bm25_matcher).")


class SearchItemModel(BaseModel):
    id: str
    originalRetrievalScoreMap: dict[str, float]  # noqa: N815 - the reference's wire names
    finalRetrievalScore: float  # noqa: N815
    originalRankingScoreMap: dict[str, float]  # noqa: N815
    finalRankingScore: float  # noqa: N815
    score: float
    summary: dict[str, Any]
    matchedChunks: list[MatchedChunkModel] | None = Field(  # noqa: N815
        default=None,
        description="A document corpus: the document's best passages, best first (absent for row corpora).",
    )

    @model_serializer(mode="wrap")
    def _reference_shape(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Row corpora answer exactly the reference's item shape: no matchedChunks key at all.
        out: dict[str, Any] = handler(self)
        if out.get("matchedChunks") is None:
            out.pop("matchedChunks", None)
        return out


class DebugInfo(BaseModel):
    stageMs: dict[str, float]  # noqa: N815 - per layer, milliseconds
    totalMs: float  # noqa: N815
    buckets: dict[str, int] = Field(default_factory=dict)
    configDigest: str  # noqa: N815
    configOrigin: str  # noqa: N815
    # Layers that could not do their work and did something simpler (layer -> what and why), e.g. a
    # cross-encoder past its timeoutMs that kept the recall order.
    fallbacks: dict[str, str] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    requestId: str = Field(  # noqa: N815
        description="This search's id: send it back with POST /feedback (clicks, likes) for the results shown."
    )
    queryModel: dict[str, Any]  # noqa: N815
    searchItemModels: list[list[SearchItemModel]]  # noqa: N815 - one list per query, as the reference
    hasMore: bool = Field(  # noqa: N815
        default=False,
        description="The ranked list goes on after this page (ask with offset): items are known to follow, or a "
        "matcher returned as many hits as it was asked for, so more may (the next page can then be empty).",
    )
    experiments: dict[str, str] = Field(description="Which experiment served each layer (layer -> experiment).")
    debug: DebugInfo | None = None


class ErrorBody(BaseModel):
    # short kind: invalid_request (body or field), invalid_query, unknown_scene, not_found, method_not_allowed,
    # upload_too_large, unsupported_image, scene_disabled, dependency_unavailable, internal
    error: str
    message: str
    dependency: str | None = None
