"""What the search service's documents journal and a rebuild share: the applier lease of a corpus and the live state
the journal records (services/search/documents/journal.py writes the journal; offline/ingest reads it).

The lease is one document per corpus in `documents.leases_collection`: whoever holds it (a search replica's
applier, or a rebuild) is the only one writing the corpus's live changes into the stores. A rebuild holds it twice,
briefly: while it reads the live state at its start, and from its replay until the alias has switched. In between
the replicas keep applying writes to the serving collection, and the rebuild's mark on the same document (`rebuild`,
`rebuild_until`) tells them to keep each applied entry's document in the journal: the rebuild replays those entries
into the new collection before the switch (offline/ingest/live_writes.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt


def now() -> dt.datetime:
    # MongoDB keeps milliseconds: a time read back compares equal to the one written.
    t = dt.datetime.now(dt.UTC)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def take_lease(leases: Any, corpus: str, owner: str, seconds: float) -> dict[str, Any] | None:
    """Take or renew `corpus`'s lease for `owner` (a pymongo collection): the lease document, or None while
    another holds it unexpired, or while another has reserved it (reserve_lease): then the holder's next renewal
    fails, so it stops after its current batch and the reserver gets the lease when it runs out."""
    from pymongo import ReturnDocument
    from pymongo.errors import DuplicateKeyError

    t = now()
    free = {"$or": [{"owner": owner}, {"until": {"$lt": t}}, {"until": {"$exists": False}}]}
    not_reserved = {"$or": [{"waiting": {"$exists": False}}, {"waiting": owner}, {"waiting_until": {"$lt": t}}]}
    try:
        doc: dict[str, Any] = leases.find_one_and_update(
            {"_id": corpus, "$and": [free, not_reserved]},
            {
                "$set": {"owner": owner, "until": t + dt.timedelta(seconds=seconds)},
                "$unset": {"waiting": "", "waiting_until": ""},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:
        return None  # held or reserved by another: the filter missed, and the upsert found the lease taken
    return doc


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)  # pymongo reads naive UTC by default


def rebuild_running(lease: dict[str, Any]) -> bool:
    """Whether a rebuild of the corpus is under way (its mark unexpired): appliers then keep applied documents."""
    until = lease.get("rebuild_until")
    return isinstance(until, dt.datetime) and _aware(until) > now()


def mark_rebuild(leases: Any, corpus: str, owner: str, seconds: float) -> bool:
    """Set or renew the rebuild's mark for `seconds`; False while another rebuild's mark is unexpired."""
    from pymongo.errors import DuplicateKeyError

    t = now()
    mine = {"$or": [{"rebuild": owner}, {"rebuild": {"$exists": False}}, {"rebuild_until": {"$lt": t}}]}
    try:
        leases.update_one(
            {"_id": corpus, **mine},
            {"$set": {"rebuild": owner, "rebuild_until": t + dt.timedelta(seconds=seconds)}},
            upsert=True,
        )
    except DuplicateKeyError:
        return False
    return True


def note_rebuilt(leases: Any, corpus: str, collection: str) -> None:
    """A rebuild is about to switch the corpus to `collection`: appliers read its schema afresh (a model change
    shows there) instead of trusting their cache."""
    leases.update_one({"_id": corpus}, {"$set": {"rebuilt_to": collection}})


def unmark_rebuild(leases: Any, corpus: str, owner: str) -> None:
    leases.update_one({"_id": corpus, "rebuild": owner}, {"$unset": {"rebuild": "", "rebuild_until": ""}})


def reserve_lease(leases: Any, corpus: str, owner: str, seconds: float) -> None:
    """Ask for the lease next (a rebuild): no one else takes or renews it for `seconds` (renew the reservation
    while waiting)."""
    leases.update_one(
        {"_id": corpus},
        {"$set": {"waiting": owner, "waiting_until": now() + dt.timedelta(seconds=seconds)}},
        upsert=True,
    )


def release_lease(leases: Any, corpus: str, owner: str) -> None:
    # The lease's fields only: the document may carry a rebuild's mark.
    leases.update_one({"_id": corpus, "owner": owner}, {"$unset": {"owner": "", "until": ""}})


@dataclass
class LiveState:
    """A corpus's documents as the journal's applied entries leave them: the ids whose last applied write was an
    upsert (their fields are in the corpus's collection) and those whose last was a delete."""

    upserted: set[int] = field(default_factory=set)
    deleted: set[int] = field(default_factory=set)
    pending: int = 0  # accepted, not yet applied
    # The applied entries' sequence numbers, sorted: a rebuild replays the entries applied after it read these.
    applied: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def any(self) -> bool:
        return bool(self.upserted or self.deleted or self.pending)


def live_state(journal: Any, corpus: str) -> LiveState:
    found = list(journal.find({"corpus": corpus, "state": "applied"}, {"doc_id": 1, "op": 1, "applied_at": 1}))
    last = last_per_document(found)
    return LiveState(
        upserted={i for i, d in last.items() if d["op"] == "upsert"},
        deleted={i for i, d in last.items() if d["op"] == "delete"},
        pending=journal.count_documents({"corpus": corpus, "state": "pending"}),
        applied=np.sort(np.asarray([int(d["_id"]) for d in found], dtype=np.int64)),
    )


def last_per_document(entries: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per document, the one of its applied journal entries (`_id`, `doc_id`, `applied_at`) the stores saw last:
    by the time it was marked applied (one replica holds a corpus at a time), then by sequence within a batch. Not
    by sequence alone: two replicas appending at once may insert a lower sequence number after a higher one was
    applied."""
    last: dict[int, dict[str, Any]] = {}
    for d in entries:
        old = last.get(int(d["doc_id"]))
        if old is None or _applied_order(d) > _applied_order(old):
            last[int(d["doc_id"])] = d
    return last


def _applied_order(d: dict[str, Any]) -> tuple[dt.datetime, int]:
    at = d.get("applied_at")
    return _aware(at if isinstance(at, dt.datetime) else dt.datetime.min), int(d["_id"])


def supersede_applied(journal: Any, corpus: str, reason: str, keep: list[int]) -> int:
    """After a rebuild that replaced the corpus with a file: the live writes applied before it started no longer
    describe it (their versions included); they become `superseded`, all but the sequence numbers in `keep` (those
    it replayed: written during the rebuild, they stand). Returns how many."""
    result = journal.update_many(
        {"corpus": corpus, "state": "applied", "_id": {"$nin": keep}},
        {"$set": {"state": "superseded", "reason": reason}},
    )
    return int(result.modified_count)


def drop_kept_documents(journal: Any, corpus: str) -> None:
    """A rebuild is over: the documents appliers kept in settled entries for its replay go (the journal stays
    small as writes add up)."""
    journal.update_many(
        {"corpus": corpus, "state": {"$ne": "pending"}, "document": {"$exists": True}},
        {"$unset": {"document": "", "vector": ""}},
    )
