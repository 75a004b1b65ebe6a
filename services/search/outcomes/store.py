"""MongoDB access of the online outcomes: exposures written in batches, one exposure looked up, events inserted
once. Blocking pymongo calls on the store's own thread pool (a slow outcome write never takes a thread the
summary stage needs), each bounded and reported as DependencyUnavailableError("mongodb")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmsearch.outcomes_schema import EVENTS, EXPOSURES, ensure_indexes
from services.search.adapters import MongoStore

DUPLICATE_KEY = 11000


class MongoOutcomeStore(MongoStore):
    async def ensure_indexes(self, ttl_days: int) -> None:
        await self.run(lambda client: ensure_indexes(client[self.settings.database], ttl_days))

    async def insert_exposures(self, docs: Sequence[dict[str, Any]]) -> None:
        """Insert every exposure; one already stored (a retried batch whose first try did land) is not an error."""
        from pymongo.errors import BulkWriteError

        # insert_many adds _id to the dicts it is given: copies keep the caller's documents as they were.
        batch = [dict(d) for d in docs]

        def go(client: Any) -> None:
            try:
                client[self.settings.database][EXPOSURES].insert_many(batch, ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                    raise

        await self.run(go)

    async def find_exposure(self, request_id: str) -> dict[str, Any] | None:
        def go(client: Any) -> dict[str, Any] | None:
            doc: dict[str, Any] | None = client[self.settings.database][EXPOSURES].find_one(
                {"requestId": request_id}, {"_id": 0}, max_time_ms=int(self.timeout * 1000)
            )
            return doc

        return await self.run(go)

    async def insert_event(self, doc: dict[str, Any]) -> bool:
        """Store the event; False when the same (requestId, itemId, event) is already there (counted once)."""
        from pymongo.errors import DuplicateKeyError

        def go(client: Any) -> bool:
            try:
                client[self.settings.database][EVENTS].insert_one(dict(doc))
            except DuplicateKeyError:
                return False
            return True

        return await self.run(go)
