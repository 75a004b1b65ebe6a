"""MongoDB's change journal: one entry per accepted write, the truth that Milvus is derived from.

An entry (`changes` collection, `_id` = its sequence number from the `counters` collection):
`{corpus, doc_id, op: upsert|delete, version, document, vector (float32 bytes), encoded_with (model/field/dim of the
vector), truncated, state, reason, accepted_at, applied_at}`.
`state` is pending until the applier has written it to both stores, then `applied`, or `stale` (a higher version of
the document was applied first; nothing written) or `failed` (Milvus refused it; the reason says why); a rebuild
with `--replace` turns applied entries `superseded` (the file became the whole corpus). A write is
acknowledged once its entry is inserted with write concern majority + journal: from then on it cannot be lost.

The corpus's MongoDB collection keeps the documents exactly as the ingest writes them (`_id`, `queryid`, fields);
versions live in the journal, so a delete's version is remembered after its document is gone.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mmsearch.change_journal import now, release_lease, take_lease
from mmsearch.settings import Settings
from services.search.adapters import MongoStore
from services.search.metrics import SearchMetrics

Op = Literal["upsert", "delete"]
State = Literal["pending", "applied", "stale", "failed", "superseded"]
SEQUENCE_ID = "changes"
MAX_APPENDED = 20_000  # entries kept in memory for the applier; older ones are read back from MongoDB


@dataclass(frozen=True)
class Entry:
    seq: int
    corpus: str
    doc_id: int
    op: Op
    version: int | None
    state: State
    document: dict[str, Any] | None = None
    vector: list[float] | None = None
    truncated: bool = False
    reason: str = ""
    accepted_at: dt.datetime | None = None
    applied_at: dt.datetime | None = None
    encoded_with: str = ""  # CorpusSchema.encoding of the vector (empty in entries of older versions)

    @classmethod
    def from_mongo(cls, d: dict[str, Any]) -> Entry:
        return cls(
            seq=int(d["_id"]),
            corpus=d["corpus"],
            doc_id=int(d["doc_id"]),
            op=d["op"],
            version=d.get("version"),
            state=d["state"],
            document=d.get("document"),
            vector=_floats(d.get("vector")),
            truncated=bool(d.get("truncated", False)),
            reason=d.get("reason", ""),
            accepted_at=d.get("accepted_at"),
            applied_at=d.get("applied_at"),
            encoded_with=d.get("encoded_with", ""),
        )

    def to_mongo(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "_id": self.seq,
            "corpus": self.corpus,
            "doc_id": self.doc_id,
            "op": self.op,
            "version": self.version,
            "state": self.state,
            "truncated": self.truncated,
            "accepted_at": self.accepted_at,
        }
        if self.op == "upsert":
            d["document"] = self.document
            d["encoded_with"] = self.encoded_with
            # float32 bytes, not a BSON array: a quarter of the size, and no per-number encoding either way.
            d["vector"] = None if self.vector is None else np.asarray(self.vector, dtype=np.float32).tobytes()
        return d


def _floats(stored: bytes | None) -> list[float] | None:
    return None if stored is None else np.frombuffer(stored, dtype=np.float32).tolist()


@dataclass(frozen=True)
class NewWrite:
    doc_id: int
    op: Op
    version: int | None
    document: dict[str, Any] | None = None
    vector: list[float] | None = None
    truncated: bool = False
    encoded_with: str = ""


@dataclass
class CorpusProgress:
    pending: int = 0
    last_applied: Entry | None = None
    by_state: dict[str, int] = field(default_factory=dict)


class Journal(MongoStore):
    """The journal's MongoDB operations, each on the store's thread pool with its time-out (503 naming mongodb)."""

    def __init__(self, settings: Settings, metrics: SearchMetrics | None = None) -> None:
        super().__init__(settings, metrics, workers=8, appname="mmsearch-search-documents")
        self.docs = settings.documents
        self._indexed = False
        # Entries this process appended and has not seen settled (seq -> entry, payload included), oldest first.
        self._appended: OrderedDict[int, Entry] = OrderedDict()
        self._appended_lock = threading.Lock()  # appends run on the store's threads, marks on the event loop

    def _db(self, client: Any) -> Any:
        return client[self.settings.database]

    def _changes(self, client: Any) -> Any:
        from pymongo import WriteConcern

        # Majority + on-disk journal: an acknowledged write survives the primary's crash and a failover.
        return self._db(client).get_collection(
            self.docs.journal_collection, write_concern=WriteConcern(w="majority", j=True)
        )

    def _ensure_indexes(self, client: Any) -> None:
        if self._indexed:
            return
        from pymongo import ASCENDING

        changes = self._changes(client)
        # The applier's look for work every poll (state first: pending entries are few among many applied).
        changes.create_index([("state", ASCENDING), ("corpus", ASCENDING), ("_id", ASCENDING)], name="by_state")
        changes.create_index([("corpus", ASCENDING), ("doc_id", ASCENDING), ("_id", ASCENDING)], name="by_document")
        self._indexed = True

    # ---- writing ------------------------------------------------------------------------------------------

    async def append(self, corpus: str, writes: Sequence[NewWrite]) -> list[Entry]:
        """Durably add `writes` (in order) as pending entries; returns them with their sequence numbers."""
        from pymongo import ReturnDocument

        def go(client: Any) -> list[Entry]:
            self._ensure_indexes(client)
            counters = self._db(client)[self.docs.counters_collection]
            top = counters.find_one_and_update(
                {"_id": SEQUENCE_ID},
                {"$inc": {"seq": len(writes)}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            first = int(top["seq"]) - len(writes) + 1
            at = now()
            entries = [
                Entry(
                    first + i,
                    corpus,
                    w.doc_id,
                    w.op,
                    w.version,
                    "pending",
                    w.document,
                    w.vector,
                    w.truncated,
                    accepted_at=at,
                    encoded_with=w.encoded_with,
                )
                for i, w in enumerate(writes)
            ]
            self._changes(client).insert_many([e.to_mongo() for e in entries], ordered=True)
            with self._appended_lock:
                for e in entries:
                    self._appended[e.seq] = e
                while len(self._appended) > MAX_APPENDED:
                    self._appended.popitem(last=False)
            return entries

        return await self.run(go)

    async def mark(self, seqs: Sequence[int], state: State, reason: str = "", *, keep_document: bool = False) -> None:
        """Settle pending entries. A settled entry keeps what versions and history need; its document now lives in
        the corpus's collection (or was refused), so the payload goes, the journal staying small as writes add up,
        unless `keep_document`: a rebuild under way replays it into the collection it builds."""
        if not seqs:
            return

        with self._appended_lock:
            for seq in seqs:
                self._appended.pop(seq, None)

        def go(client: Any) -> None:
            update: dict[str, Any] = {"state": state, "applied_at": now()}
            if reason:
                update["reason"] = reason
            dropped = {"vector": ""} if keep_document else {"document": "", "vector": ""}
            self._changes(client).update_many(
                {"_id": {"$in": list(seqs)}, "state": "pending"}, {"$set": update, "$unset": dropped}
            )

        await self.run(go)

    # ---- reading ------------------------------------------------------------------------------------------

    async def get(self, seqs: Sequence[int], *, light: bool = True) -> dict[int, Entry]:
        projection = {"vector": 0, "document": 0} if light else None

        def go(client: Any) -> dict[int, Entry]:
            found = self._changes(client).find({"_id": {"$in": list(seqs)}}, projection)
            return {int(d["_id"]): Entry.from_mongo(d) for d in found}

        return await self.run(go)

    async def latest(self, corpus: str, doc_ids: Sequence[int], *, versioned: bool) -> dict[int, Entry]:
        """Per document, its newest entry that is pending or applied (with `versioned`: its highest version)."""

        def go(client: Any) -> dict[int, Entry]:
            query: dict[str, Any] = {"corpus": corpus, "doc_id": {"$in": list(doc_ids)}}
            query["state"] = {"$in": ["pending", "applied"]}
            if versioned:
                query["version"] = {"$ne": None}
            best: dict[int, Entry] = {}
            for d in self._changes(client).find(query, {"vector": 0, "document": 0}):
                e = Entry.from_mongo(d)
                old = best.get(e.doc_id)
                key = (e.version or 0, e.seq) if versioned else (e.seq,)
                if old is None or key > ((old.version or 0, old.seq) if versioned else (old.seq,)):
                    best[e.doc_id] = e
            return best

        return await self.run(go)

    async def applied_versions(self, corpus: str, doc_ids: Sequence[int]) -> dict[int, int]:
        """The highest version applied per document (documents never written with a version are absent)."""

        def go(client: Any) -> dict[int, int]:
            out: dict[int, int] = {}
            query = {"corpus": corpus, "doc_id": {"$in": list(doc_ids)}, "state": "applied", "version": {"$ne": None}}
            for d in self._changes(client).find(query, {"doc_id": 1, "version": 1}):
                out[int(d["doc_id"])] = max(out.get(int(d["doc_id"]), -1), int(d["version"]))
            return out

        return await self.run(go)

    async def pending(self, corpus: str, limit: int) -> list[Entry]:
        """The corpus's oldest pending entries, with their payloads. Those this process appended come from memory
        (a payload never changes once written): reading a batch's vectors back from MongoDB cost the applier about
        as much as writing them."""

        def go(client: Any) -> list[Entry]:
            query = {"corpus": corpus, "state": "pending"}
            light = self._changes(client).find(query, {"vector": 0, "document": 0}).sort("_id", 1).limit(limit)
            with self._appended_lock:
                entries = [self._appended.get(int(d["_id"])) or Entry.from_mongo(d) for d in light]
            missing = [e.seq for e in entries if e.op == "upsert" and e.document is None]
            if missing:  # appended by another replica, or before this process started
                found = self._changes(client).find({"_id": {"$in": missing}})
                full = {int(d["_id"]): Entry.from_mongo(d) for d in found}
                entries = [full.get(e.seq, e) for e in entries]
            return entries

        return await self.run(go)

    async def pending_corpora(self) -> dict[str, int]:
        """Corpus -> entries pending."""

        def go(client: Any) -> dict[str, int]:
            self._ensure_indexes(client)
            counts: dict[str, int] = {}
            for d in self._changes(client).find({"state": "pending"}, {"corpus": 1, "_id": 0}):
                counts[d["corpus"]] = counts.get(d["corpus"], 0) + 1
            return counts

        return await self.run(go)

    async def progress(self, corpus: str) -> CorpusProgress:
        def go(client: Any) -> CorpusProgress:
            changes = self._changes(client)
            out = CorpusProgress()
            for state in ("pending", "applied", "stale", "failed", "superseded"):
                out.by_state[state] = changes.count_documents({"corpus": corpus, "state": state})
            out.pending = out.by_state["pending"]
            last = changes.find_one(
                {"corpus": corpus, "state": "applied"}, {"vector": 0, "document": 0}, sort=[("_id", -1)]
            )
            out.last_applied = Entry.from_mongo(last) if last else None
            return out

        return await self.run(go)

    # ---- the applier's lease ------------------------------------------------------------------------------

    async def lease(self, corpus: str, owner: str, seconds: float) -> dict[str, Any] | None:
        """Take or renew the corpus's applier lease (its document); None while another replica (or a rebuild)
        holds it."""
        leases = self.docs.leases_collection
        return await self.run(lambda client: take_lease(self._db(client)[leases], corpus, owner, seconds))

    async def release(self, corpus: str, owner: str) -> None:
        leases = self.docs.leases_collection
        await self.run(lambda client: release_lease(self._db(client)[leases], corpus, owner))

    # ---- the corpus's documents ---------------------------------------------------------------------------

    async def write_documents(self, corpus: str, upserts: Sequence[Entry], deletes: Sequence[int]) -> None:
        from pymongo import DeleteOne, ReplaceOne

        ops: list[Any] = [
            ReplaceOne(
                {"_id": e.doc_id}, {"_id": e.doc_id, "queryid": str(e.doc_id), **(e.document or {})}, upsert=True
            )
            for e in upserts
        ]
        ops += [DeleteOne({"_id": doc_id}) for doc_id in deletes]
        if not ops:
            return

        def go(client: Any) -> None:
            from pymongo import WriteConcern

            coll = self._db(client).get_collection(corpus, write_concern=WriteConcern(w="majority", j=True))
            coll.bulk_write(ops, ordered=True)

        await self.run(go)

    async def document(self, corpus: str, doc_id: int) -> dict[str, Any] | None:
        def go(client: Any) -> dict[str, Any] | None:
            found: dict[str, Any] | None = self._db(client)[corpus].find_one({"_id": doc_id}, {"_id": 0, "queryid": 0})
            return found

        return await self.run(go)

    async def count_documents(self, corpus: str) -> int:
        def go(client: Any) -> int:
            return int(self._db(client)[corpus].count_documents({}))

        return await self.run(go)
