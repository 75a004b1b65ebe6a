"""What the search service's documents journal and a rebuild share: the applier lease of a corpus and the live state
the journal records (services/search/documents/journal.py writes the journal; offline/ingest reads it).

The lease is one document per corpus in `documents.leases_collection`: whoever holds it (a search replica's
applier, or a rebuild) is the only one writing the corpus's live changes into Milvus. A rebuild holds it from the
moment it reads the live state until the alias has switched, so no write is applied to a collection about to be
replaced: writes accepted meanwhile stay pending and are applied to the new collection.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


def now() -> dt.datetime:
    # MongoDB keeps milliseconds: a time read back compares equal to the one written.
    t = dt.datetime.now(dt.UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def take_lease(leases: Any, corpus: str, owner: str, seconds: float) -> bool:
    """Take or renew `corpus`'s lease for `owner` (a pymongo collection); False while another holds it unexpired,
    or while another has reserved it (reserve_lease): then the holder's next renewal fails, so it stops after
    its current batch and the reserver gets the lease when it runs out."""
    from pymongo.errors import DuplicateKeyError

    t = now()
    free = {"$or": [{"owner": owner}, {"until": {"$lt": t}}, {"until": {"$exists": False}}]}
    not_reserved = {"$or": [{"waiting": {"$exists": False}}, {"waiting": owner}, {"waiting_until": {"$lt": t}}]}
    try:
        leases.update_one(
            {"_id": corpus, "$and": [free, not_reserved]},
            {
                "$set": {"owner": owner, "until": t + dt.timedelta(seconds=seconds)},
                "$unset": {"waiting": "", "waiting_until": ""},
            },
            upsert=True,
        )
    except DuplicateKeyError:
        return False  # held or reserved by another: the filter missed, and the upsert found the lease taken
    return True


def reserve_lease(leases: Any, corpus: str, owner: str, seconds: float) -> None:
    """Ask for the lease next (a rebuild): no one else takes or renews it for `seconds` (renew the reservation
    while waiting)."""
    leases.update_one(
        {"_id": corpus},
        {"$set": {"waiting": owner, "waiting_until": now() + dt.timedelta(seconds=seconds)}},
        upsert=True,
    )


def release_lease(leases: Any, corpus: str, owner: str) -> None:
    leases.delete_one({"_id": corpus, "owner": owner})


@dataclass
class LiveState:
    """A corpus's documents as the journal's applied entries leave them: the ids whose last applied write was an
    upsert (their fields are in the corpus's collection) and those whose last was a delete."""

    upserted: set[int] = field(default_factory=set)
    deleted: set[int] = field(default_factory=set)
    pending: int = 0  # accepted, not yet applied

    @property
    def any(self) -> bool:
        return bool(self.upserted or self.deleted or self.pending)


def live_state(journal: Any, corpus: str) -> LiveState:
    last: dict[int, str] = {}
    for d in journal.find({"corpus": corpus, "state": "applied"}, {"doc_id": 1, "op": 1}).sort("_id", 1):
        last[int(d["doc_id"])] = str(d["op"])
    return LiveState(
        upserted={i for i, op in last.items() if op == "upsert"},
        deleted={i for i, op in last.items() if op == "delete"},
        pending=journal.count_documents({"corpus": corpus, "state": "pending"}),
    )


def supersede_applied(journal: Any, corpus: str, reason: str) -> int:
    """After a rebuild that replaced the corpus with a file: its applied live writes no longer describe it (their
    versions included); they become `superseded`. Returns how many."""
    result = journal.update_many(
        {"corpus": corpus, "state": "applied"}, {"$set": {"state": "superseded", "reason": reason}}
    )
    return int(result.modified_count)
