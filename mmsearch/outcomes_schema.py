"""The two MongoDB collections of online outcomes, shared by their writer (the search service) and their reader
(`mmsearch ab report`).

exposures: one document per answered search request
    {requestId, userId, scene, experiments: [{layer, experiment}], pinnedLayers: [layer], pinned,
     items: [{id, position}], offset, configDigest, time}
events: one document per (requestId, itemId, event), enforced by a unique index
    {requestId, userId, itemId, event, value?, position, scene, time}

Experiments are a list of {layer, experiment} rather than a {layer: experiment} object because layer names hold
dots ("match.qa"), which MongoDB reads as paths. Positions are 1-based ranks in the whole ranked list (offset
included), so a click on the second page's first item is position offset + 1.
"""

from __future__ import annotations

import logging
from typing import Any, Final, Literal

log = logging.getLogger(__name__)

EXPOSURES: Final = "exposures"
EVENTS: Final = "events"
EventKind = Literal["click", "like", "dislike"]
EVENT_KINDS: Final[tuple[EventKind, ...]] = ("click", "like", "dislike")
_TTL_INDEX = "ttl_time"
_INDEX_OPTIONS_CONFLICT = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict


def ensure_indexes(db: Any, ttl_days: int) -> None:
    """Create the indexes both collections rely on: unique request ids and events, the report's scan by scene and
    time, and the TTL on `time`. A changed TTL setting updates the existing TTL index in place."""
    from pymongo import ASCENDING

    db[EXPOSURES].create_index([("requestId", ASCENDING)], unique=True, name="requestId_unique")
    db[EXPOSURES].create_index([("scene", ASCENDING), ("time", ASCENDING)], name="scene_time")
    db[EVENTS].create_index(
        [("requestId", ASCENDING), ("itemId", ASCENDING), ("event", ASCENDING)], unique=True, name="event_unique"
    )
    for name in (EXPOSURES, EVENTS):
        _ensure_ttl(db, name, ttl_days * 86_400)


def _ensure_ttl(db: Any, collection: str, seconds: int) -> None:
    from pymongo.errors import OperationFailure

    try:
        db[collection].create_index("time", expireAfterSeconds=seconds, name=_TTL_INDEX)
    except OperationFailure as exc:
        if exc.code not in _INDEX_OPTIONS_CONFLICT:
            raise
        # The index exists with another expiry (the setting changed): replace it. Documents stay; only their
        # expiry changes.
        log.info("outcomes: %s TTL changes to %d s", collection, seconds)
        db[collection].drop_index(_TTL_INDEX)
        db[collection].create_index("time", expireAfterSeconds=seconds, name=_TTL_INDEX)
