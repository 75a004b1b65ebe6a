"""`POST /feedback`: what a user did with a result they were shown (click, like, dislike).

An event must name a search this service answered (its requestId, for the same user) and an item that search
showed; anything else is refused in the one error shape (404 unknown_request, 422 item_not_shown), so the events
collection only ever holds outcomes of real exposures. The same (requestId, itemId, event) twice is stored once:
per search, a user can add at most (items shown x 3) events, however often they send them.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmsearch.outcomes_schema import EventKind
from services.search.errors import SearchError
from services.search.metrics import SearchMetrics
from services.search.outcomes.recorder import ExposureRecorder
from services.search.outcomes.store import MongoOutcomeStore

MAX_VALUE_CHARS = 256
MAX_ABS_VALUE = 1e9


class UnknownRequestError(SearchError):
    status_code = 404
    kind = "unknown_request"


class ItemNotShownError(SearchError):
    status_code = 422
    kind = "item_not_shown"


class OutcomesDisabledError(SearchError):
    status_code = 503
    kind = "outcomes_disabled"


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requestId: str = Field(min_length=1, max_length=64, description="The search response's requestId.")  # noqa: N815
    userId: str = Field(min_length=1, max_length=128, description="The user the search was made for.")  # noqa: N815
    itemId: str = Field(min_length=1, max_length=256, description="The id of a result that search showed.")  # noqa: N815
    event: EventKind
    value: float | str | None = Field(
        default=None,
        description=f"Optional detail (a rating, a dwell time): a finite number within ±{MAX_ABS_VALUE:g} or a "
        f"text of at most {MAX_VALUE_CHARS} characters.",
    )

    @field_validator("value")
    @classmethod
    def _bounded(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, str) and len(v) > MAX_VALUE_CHARS:
            raise ValueError(f"value text is {len(v)} characters long; the limit is {MAX_VALUE_CHARS}")
        if isinstance(v, str):
            return _unicode(v)
        if isinstance(v, float) and (not math.isfinite(v) or abs(v) > MAX_ABS_VALUE):
            raise ValueError(f"value must be a finite number within ±{MAX_ABS_VALUE:g}")
        return v


def _unicode(v: str) -> str:
    # JSON allows "\ud800" (a lone surrogate): not Unicode text, and MongoDB cannot store it. (Plain str fields
    # refuse it already; a float | str union passes it through.)
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"holds an unpaired UTF-16 surrogate at character {exc.start}: send valid Unicode") from exc
    return v


class FeedbackResponse(BaseModel):
    requestId: str  # noqa: N815
    itemId: str  # noqa: N815
    event: EventKind
    recorded: bool = Field(description="False when this (requestId, itemId, event) was already recorded.")
    position: int = Field(description="The item's rank in the ranked list of that search (1 = first).")


class FeedbackService:
    def __init__(self, store: MongoOutcomeStore, recorder: ExposureRecorder, metrics: SearchMetrics) -> None:
        self.store = store
        self.recorder = recorder
        self.metrics = metrics

    async def record(self, req: FeedbackRequest) -> FeedbackResponse:
        if not self.recorder.enabled:
            raise OutcomesDisabledError(
                "this search service records no outcomes (search.record_outcomes is false): feedback has no search "
                "to belong to"
            )
        exposure = self.recorder.pending(req.requestId) or await self.store.find_exposure(req.requestId)
        if exposure is None or exposure["userId"] != req.userId:
            self.metrics.feedback_rejected.labels("unknown_request").inc()
            # One message for both: a request id of another user is not confirmed to exist.
            raise UnknownRequestError(
                f"no search {req.requestId!r} for user {req.userId!r} (feedback must name the requestId of a "
                "search response; exposures are kept for search.outcomes_ttl_days)"
            )
        position = next((it["position"] for it in exposure["items"] if it["id"] == req.itemId), None)
        if position is None:
            self.metrics.feedback_rejected.labels("item_not_shown").inc()
            raise ItemNotShownError(
                f"item {req.itemId!r} was not among the {len(exposure['items'])} results of search {req.requestId!r}"
            )
        doc: dict[str, Any] = {
            "requestId": req.requestId,
            "userId": req.userId,
            "itemId": req.itemId,
            "event": req.event,
            "position": position,
            "scene": exposure["scene"],
            "time": dt.datetime.now(dt.UTC),
        }
        if req.value is not None:
            doc["value"] = req.value
        recorded = await self.store.insert_event(doc)
        if recorded:
            for layer in exposure["experiments"]:
                self.metrics.feedback_events.labels(
                    exposure["scene"], layer["layer"], layer["experiment"], req.event
                ).inc()
        else:
            self.metrics.feedback_rejected.labels("duplicate").inc()
        return FeedbackResponse(
            requestId=req.requestId, itemId=req.itemId, event=req.event, recorded=recorded, position=position
        )
