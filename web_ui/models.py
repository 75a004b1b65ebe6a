"""Typed shapes at the UI's two boundaries: what the page sends, and what the search service answers.

The page gets a flattened, already-checked view (`ResultView`): scores as numbers, text as plain strings
(the page renders them with textContent), and image URLs only when they are http(s) or a same-origin path.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

USER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
USER_ID_RULE = "1 to 64 letters, digits or . _ @ -"
MAX_QUERY_CHARS = 512
MAX_PINS = 32
MAX_OFFSET = 1000  # the search service's default search.max_offset


def valid_user_id(value: str) -> bool:
    return bool(USER_ID_PATTERN.fullmatch(value))


class UiSearchRequest(BaseModel):
    """The body of POST /api/search/<scene> from the page."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    user_id: str | None = Field(default=None, alias="userId")
    debug: bool = False
    pins: dict[str, str] = Field(default_factory=dict)
    top_k: int | None = Field(default=None, ge=1, le=200, alias="topK")
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)  # "Show more": the next page starts here
    category: str | None = Field(default=None, max_length=100)

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("type something to search for")
        return value.strip()

    @field_validator("pins")
    @classmethod
    def _pins(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_PINS:
            raise ValueError(f"at most {MAX_PINS} pinned layers")
        cleaned = {k.strip(): v.strip() for k, v in value.items() if k.strip() and v.strip()}
        for key, val in cleaned.items():
            if len(key) > 100 or len(val) > 100:
                raise ValueError("layer and experiment names are at most 100 characters")
        return cleaned

    @field_validator("category")
    @classmethod
    def _category(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class UiFeedback(BaseModel):
    """What the page sends when a result is opened, liked or disliked (forwarded to the service's /feedback)."""

    model_config = ConfigDict(extra="forbid")

    requestId: str = Field(min_length=1, max_length=64)  # noqa: N815
    userId: str = Field(min_length=1, max_length=128)  # noqa: N815
    itemId: str = Field(min_length=1, max_length=256)  # noqa: N815
    event: Literal["click", "like", "dislike"]


# --- the search service's response (the reference's shape plus additive fields) ------------------


class SearchItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | int
    score: float | None = None
    finalRetrievalScore: float | None = None  # noqa: N815 - the reference's field names
    finalRankingScore: float | None = None  # noqa: N815
    originalRetrievalScoreMap: dict[str, float | None] = Field(default_factory=dict)  # noqa: N815
    originalRankingScoreMap: dict[str, float | None] = Field(default_factory=dict)  # noqa: N815
    summary: dict[str, Any] | None = None
    matchedChunks: list[dict[str, Any]] = Field(default_factory=list)  # noqa: N815 - a document corpus's passages


class DebugInfo(BaseModel):
    """The search service's `debug` block, present when the request had useDebug."""

    model_config = ConfigDict(extra="ignore")

    stageMs: dict[str, float] = Field(default_factory=dict)  # noqa: N815 - per layer, milliseconds
    totalMs: float | None = None  # noqa: N815


class SearchResponse(BaseModel):
    # Unknown additive fields are ignored so a newer service does not break an older UI.
    model_config = ConfigDict(extra="ignore")

    requestId: str | None = None  # noqa: N815 - older services do not send one: no feedback buttons then
    queryModel: dict[str, Any] = Field(default_factory=dict)  # noqa: N815
    searchItemModels: list[list[SearchItem]] = Field(default_factory=list)  # noqa: N815
    experiments: dict[str, str] = Field(default_factory=dict)  # layer -> the experiment that served it
    debug: DebugInfo | None = None
    hasMore: bool = False  # noqa: N815 - another page may follow (older services do not say: no "Show more")

    def items(self) -> list[SearchItem]:
        return self.searchItemModels[0] if self.searchItemModels else []


# --- what the page receives ----------------------------------------------------------------------


class PassageView(BaseModel):
    position: int
    text: str
    score: float | None = None


class ItemView(BaseModel):
    id: str
    score: float | None
    finalRetrievalScore: float | None  # noqa: N815
    finalRankingScore: float | None  # noqa: N815
    retrievalScores: dict[str, float | None]  # noqa: N815
    rankingScores: dict[str, float | None]  # noqa: N815
    # Text results
    question: str | None = None
    answer: str | None = None
    category: list[str] = Field(default_factory=list)
    # Document results: the title and the passages that matched, best first
    title: str | None = None
    passages: list[PassageView] = Field(default_factory=list)
    # Image results
    name: str | None = None
    url: str | None = None
    missingSummary: bool = False  # noqa: N815 - the document was not found in the store


class ResultView(BaseModel):
    scene: str
    query: str
    userId: str  # noqa: N815
    requestId: str | None  # noqa: N815 - the search's id, sent back with the clicks and likes on its results
    offset: int  # where this page starts in the ranked list
    hasMore: bool  # noqa: N815 - "Show more" asks for the next page
    items: list[ItemView]
    experiments: dict[str, str]
    timings: dict[str, float]  # per layer, as the search service measured it (with debug)
    totalMs: float | None  # noqa: N815 - the search service's own total (with debug)
    uiMs: float  # noqa: N815 - the round trip to the search service as the UI saw it


def safe_image_url(url: object) -> str | None:
    """Only http(s) URLs and same-origin absolute paths may reach an <img src>; javascript:, data: and
    protocol-relative (//host) URLs are dropped."""
    if not isinstance(url, str) or not url or len(url) > 2048 or any(c in url for c in "\r\n\t\\"):
        return None
    if url.startswith("/") and not url.startswith("//"):
        return url
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return url
    return None


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _categories(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value if v is not None and str(v)]
    if isinstance(value, str) and value:
        return [value]
    return []


def _passages(chunks: list[dict[str, Any]]) -> list[PassageView]:
    out = []
    for c in chunks:
        text, position, score = c.get("text"), c.get("position"), c.get("score")
        if isinstance(text, str) and text and isinstance(position, int):
            out.append(PassageView(position=position, text=text, score=score if isinstance(score, float) else None))
    return out


def item_view(item: SearchItem) -> ItemView:
    summary = item.summary or {}
    return ItemView(
        id=str(item.id),
        score=item.score,
        finalRetrievalScore=item.finalRetrievalScore,
        finalRankingScore=item.finalRankingScore,
        retrievalScores=item.originalRetrievalScoreMap,
        rankingScores=item.originalRankingScoreMap,
        question=_text(summary.get("question")),
        title=_text(summary.get("title")),
        passages=_passages(item.matchedChunks),
        answer=_text(summary.get("answer")),
        category=_categories(summary.get("category")),
        name=_text(summary.get("name")),
        url=safe_image_url(summary.get("url")),
        missingSummary=not summary,
    )


def result_view(
    scene: str, query: str, user_id: str, response: SearchResponse, ui_ms: float, *, offset: int = 0
) -> ResultView:
    return ResultView(
        scene=scene,
        query=query,
        userId=user_id,
        requestId=response.requestId,
        offset=offset,
        hasMore=response.hasMore,
        items=[item_view(item) for item in response.items()],
        experiments=response.experiments,
        timings=dict(response.debug.stageMs) if response.debug else {},
        totalMs=response.debug.totalMs if response.debug else None,
        uiMs=round(ui_ms, 1),
    )
