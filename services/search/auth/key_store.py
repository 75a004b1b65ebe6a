"""The `keys` collection in MongoDB: the blocking operations `mmsearch keys` runs, and the search service's
async look-up (on the MongoDB store's thread pool, bounded, 503 naming MongoDB when it is down).

Every change is one single-document update, so two services or two operators sharing the collection never see a
half-changed key; a revocation or rotation is seen by every search service within auth.key_cache_seconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from mmsearch.api_keys import ApiKey
from services.search.adapters import MongoStore
from services.search.auth.keys import KeyRecord, StoredSecret

DUPLICATE_KEY = 11000


class KeyNotFoundError(LookupError):
    pass


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ensure_indexes(coll: Any) -> None:
    # `_id` is the key id; names are for people and need not be unique, but `keys list` sorts by creation.
    coll.create_index("createdAt")


def insert(coll: Any, record: KeyRecord) -> None:
    """Store a new key; raises pymongo's DuplicateKeyError when its key id is taken."""
    coll.insert_one(record.document())


def find(coll: Any, key_id: str, *, max_time_ms: int | None = None) -> KeyRecord | None:
    kwargs: dict[str, Any] = {"max_time_ms": max_time_ms} if max_time_ms else {}
    doc = coll.find_one({"_id": key_id}, **kwargs)
    return KeyRecord.model_validate(doc) if doc is not None else None


def list_all(coll: Any) -> list[KeyRecord]:
    return [KeyRecord.model_validate(d) for d in coll.find({}).sort("createdAt", 1)]


def revoke(coll: Any, key_id: str, at: dt.datetime) -> KeyRecord:
    """Revoke (idempotent: a second revoke keeps the first time)."""
    coll.update_one({"_id": key_id, "revokedAt": None}, {"$set": {"revokedAt": at}})
    record = find(coll, key_id)
    if record is None:
        raise KeyNotFoundError(key_id)
    return record


def rotate(coll: Any, key_id: str, grace: dt.timedelta, at: dt.datetime) -> tuple[ApiKey, KeyRecord]:
    """A new secret for the key; its current secrets keep working until `at + grace` (not past their own end)."""
    record = find(coll, key_id)
    if record is None:
        raise KeyNotFoundError(key_id)
    new = ApiKey(key_id, ApiKey.generate().secret)
    until = at + grace
    kept = [
        s.model_copy(update={"expires_at": min(until, s.expires_at) if s.expires_at else until})
        for s in record.secrets
        if s.expires_at is None or s.expires_at > at  # secrets past their grace are dropped for good
    ]
    secrets_ = [*kept, StoredSecret.of(new.secret, at)]
    docs = [s.model_dump(by_alias=True) for s in secrets_]
    # Only if nobody changed the key meanwhile (two rotations at once): one wins, the other is told to retry.
    result = coll.update_one(
        {"_id": key_id, "version": record.version}, {"$set": {"secrets": docs}, "$inc": {"version": 1}}
    )
    if result.matched_count != 1:
        raise RuntimeError(f"key {key_id} changed while it was rotated: run the rotation again")
    updated = find(coll, key_id)
    assert updated is not None
    return new, updated


def set_scopes(coll: Any, key_id: str, scopes: tuple[str, ...]) -> None:
    """Give a stored key these scopes (the local stack's keys, when a release changes what they need)."""
    coll.update_one({"_id": key_id}, {"$set": {"scopes": list(scopes)}, "$inc": {"version": 1}})


def touch(coll: Any, used: Mapping[str, dt.datetime]) -> None:
    """Record when keys were last used ($max: a slower replica never moves the time back)."""
    from pymongo import UpdateOne

    if used:
        coll.bulk_write([UpdateOne({"_id": k}, {"$max": {"lastUsedAt": t}}) for k, t in used.items()], ordered=False)


class MongoKeyStore(MongoStore):
    """The search service's view of the keys: one find per uncached key id, and the last-used writes."""

    def __init__(self, *args: Any, collection: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.collection = collection

    def _coll(self, client: Any) -> Any:
        return client[self.settings.database][self.collection]

    async def find(self, key_id: str) -> KeyRecord | None:
        return await self.run(lambda client: find(self._coll(client), key_id, max_time_ms=int(self.timeout * 1000)))

    async def touch(self, used: Mapping[str, dt.datetime]) -> None:
        await self.run(lambda client: touch(self._coll(client), used))
