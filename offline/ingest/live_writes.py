"""A rebuild of a corpus that takes live writes (the search service's documents API) loses none of them.

At its start the rebuild takes the corpus's applier lease for a moment (mmsearch/change_journal.py): under it, it
marks the corpus as being rebuilt and reads the live state (which journal entries are applied). Then it lets go:
the search replicas keep applying writes to the serving collection, so they stay searchable while the new
collection is built, and, seeing the mark, keep each applied entry's document in the journal. Right before the
alias switches, the rebuild takes the lease again and replays every entry applied since its start into the new
collection (encoded with the rebuild's own model) and into MongoDB (the build's document writes may have landed
after them); it holds the lease through the switch and the prune, so nothing is applied in between. Writes still
pending then are applied to the new collection by the replicas once the lease is released.

What the journal had applied before the start, it merges into the corpus file before encoding, as the user asked:

- `--merge`: live writes win over the file (a document written live replaces the file's row of that id or joins
  it; a document deleted live stays deleted even if the file has it).
- `--replace`: the file is the whole corpus (documents written live that it lacks are deleted; those deleted live
  that it has come back); the counts are logged before anything changes. Writes that arrive during the rebuild
  still stand: they are newer than the file.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsearch.change_journal import (
    LiveState,
    drop_kept_documents,
    last_per_document,
    live_state,
    mark_rebuild,
    note_rebuilt,
    release_lease,
    reserve_lease,
    take_lease,
    unmark_rebuild,
)
from mmsearch.chunking import (
    DOCUMENT_FIELD,
    POSITION_FIELD,
    passages_settled,
    positions_by_document,
    stale_passages,
)
from mmsearch.collection_meta import PRIMARY_KEY
from mmsearch.files import atomic_text_writer
from mmsearch.settings import DocumentsSettings, MongoSettings
from offline.preprocess.records import CorpusRow, read_corpus
from offline.push.errors import PushError
from offline.push.milvus_push import FillSpec, entity_batches
from offline.push.mongo_push import document, mongo_database

log = logging.getLogger(__name__)


class LiveMode(StrEnum):
    MERGE = "merge"
    REPLACE = "replace"


@dataclass(frozen=True)
class Merged:
    added: int  # live documents the file lacked
    replaced: int  # file rows a live write replaced
    dropped: int  # file rows deleted live (merge) / live documents the file lacks, now deleted (replace)

    def text(self, mode: LiveMode) -> str:
        if mode is LiveMode.MERGE:
            return (
                f"merged the live writes: {self.added} live documents added to the file's, {self.replaced} rows "
                f"replaced by their live version, {self.dropped} rows left out (deleted live)"
            )
        return f"replaced: {self.dropped} documents written live and not in the file are deleted"


@dataclass(frozen=True)
class Replayed:
    """The live writes a rebuild carried into its new collection: their journal entries and documents."""

    seqs: list[int] = field(default_factory=list)
    upserted: set[int] = field(default_factory=set)
    deleted: set[int] = field(default_factory=set)

    def text(self) -> str:
        return (
            f"{len(self.seqs)} live writes applied while the collection was built replayed into it "
            f"({len(self.upserted)} documents written, {len(self.deleted)} deleted)"
        )


# Encodes a replay's documents exactly as the rebuild encodes the corpus file (offline/encode/pipeline.encode_rows).
Encode = Callable[[Sequence[CorpusRow]], npt.NDArray[np.float32]]
# A document corpus's document -> its passages' Milvus rows (offline/preprocess/chunks.py: Chunker + chunk_rows).
Split = Callable[[CorpusRow], list[dict[str, Any]]]
FIND_BATCH = 1000  # entries fetched per $in query


class LiveRebuild:
    """One rebuild's hold on a corpus that takes live writes (the module's docstring); `start`, then `replay` right
    before the switch, then `close`."""

    def __init__(self, db: Any, docs: DocumentsSettings, corpus: str) -> None:
        self.db = db
        self.leases = db[docs.leases_collection]
        self.journal = db[docs.journal_collection]
        self.seconds = docs.lease_seconds
        # How long to wait for another holder's lease or mark to run out (a killed holder's lapses in `seconds`).
        self.patience = 2 * docs.lease_seconds + 5
        self.corpus = corpus
        self.owner = f"rebuild-{uuid.uuid4().hex}"
        self.live = LiveState()
        self.replayed = Replayed()
        self._holding = False
        self._lost = ""  # why the mark or the lease was lost, if it was
        self._renewed_at = 0.0  # monotonic time of the last renewal that succeeded
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="rebuild-mark", daemon=True)

    # ---- the lease and the mark ---------------------------------------------------------------------------

    def _take(self) -> None:
        """Reserve the lease (the replica applying the corpus stops renewing it after its batch), then take it once
        it runs out."""
        deadline = time.monotonic() + self.patience
        while True:
            reserve_lease(self.leases, self.corpus, self.owner, self.seconds)
            if take_lease(self.leases, self.corpus, self.owner, self.seconds) is not None:
                break
            if time.monotonic() > deadline:
                raise PushError(
                    f"a search replica is applying live writes to {self.corpus!r} and keeps its lease: try again"
                )
            time.sleep(0.2)
        self._holding = True

    def _let_go(self) -> None:
        if self._holding:
            self._holding = False
            release_lease(self.leases, self.corpus, self.owner)

    def start(self) -> None:
        # Another rebuild's mark: one killed lately leaves it until it lapses (lease_seconds); a live one renews it.
        deadline = time.monotonic() + self.patience
        while True:
            self._take()
            try:
                if mark_rebuild(self.leases, self.corpus, self.owner, self.seconds):
                    self.live = live_state(self.journal, self.corpus)
                    break
            finally:
                self._let_go()  # the replicas apply writes to the serving collection while this one builds
            if time.monotonic() > deadline:
                raise PushError(f"another rebuild of {self.corpus!r} is under way: wait for it to finish")
            log.info("another rebuild of %s holds its mark; waiting for it to finish or lapse", self.corpus)
            time.sleep(1.0)
        self._renewed_at = time.monotonic()
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                if not mark_rebuild(self.leases, self.corpus, self.owner, self.seconds):
                    self._lost = "another rebuild took the corpus"
                elif self._holding and take_lease(self.leases, self.corpus, self.owner, self.seconds) is None:
                    self._lost = "a search replica took the lease"
                else:
                    self._renewed_at = time.monotonic()
            except Exception:
                log.warning("renewing the rebuild's hold on %s failed; retrying", self.corpus, exc_info=True)

    def _check(self) -> None:
        """The mark and the lease were never lost nor lapsed (renewals failing for longer than they last): else a
        replica may have dropped an applied document the replay needs, or applied a write to the old collection."""
        lapsed = time.monotonic() - self._renewed_at > self.seconds
        if self._lost or lapsed:
            why = self._lost or f"MongoDB unreachable for over {self.seconds:g}s?"
            raise PushError(
                f"the rebuild lost its hold on {self.corpus!r} ({why}): live writes may be missing from the new "
                "collection; the alias was not switched, run it again"
            )

    def close(self) -> None:
        """Done (switched or failed): the kept documents go, then the mark and the lease."""
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()
        try:
            drop_kept_documents(self.journal, self.corpus)
            unmark_rebuild(self.leases, self.corpus, self.owner)
        finally:
            self._let_go()

    # ---- the replay ---------------------------------------------------------------------------------------

    def replay(self, client: Any, spec: FillSpec, encode: Encode, split: Split | None = None) -> None:
        """Under the lease (held until `close`): carry every entry applied since `start` into the new collection
        and MongoDB. The last applied write per document decides (last_per_document). `split`: a document corpus's
        documents become their passages' rows, as the ingest's (offline/preprocess/chunks.py)."""
        self._take()
        self._check()
        seqs = self._applied_since_start()
        last = last_per_document(
            d
            for s in range(0, len(seqs), FIND_BATCH)
            for d in self.journal.find({"_id": {"$in": seqs[s : s + FIND_BATCH]}}, {"vector": 0})
        )
        rows: dict[int, CorpusRow] = {}
        for doc_id, d in last.items():
            if d["op"] != "upsert":
                continue
            if "document" not in d:
                raise PushError(
                    f"journal entry {d['_id']} of {self.corpus!r} was applied during the rebuild without its "
                    "document kept: the alias was not switched, run it again"
                )
            rows[doc_id] = CorpusRow(id=doc_id, **d["document"])
        deleted = sorted(doc_id for doc_id, d in last.items() if d["op"] == "delete")
        self._write_mongo(list(rows.values()), deleted)
        if split is None:
            self._write_milvus(client, spec, rows, deleted, encode)
        else:
            self._write_passages(client, spec, rows, deleted, encode, split)
        note_rebuilt(self.leases, self.corpus, spec.collection)
        self._check()
        self.replayed = Replayed(seqs, set(rows), set(deleted))

    def _applied_since_start(self) -> list[int]:
        now_applied = np.asarray(
            [int(d["_id"]) for d in self.journal.find({"corpus": self.corpus, "state": "applied"}, {"_id": 1})],
            dtype=np.int64,
        )
        return [int(s) for s in np.setdiff1d(now_applied, self.live.applied, assume_unique=True)]

    def _write_mongo(self, rows: list[CorpusRow], deleted: list[int]) -> None:
        from pymongo import DeleteOne, ReplaceOne

        ops: list[Any] = [ReplaceOne({"_id": r.id}, document(r), upsert=True) for r in rows]
        ops += [DeleteOne({"_id": doc_id}) for doc_id in deleted]
        if ops:
            self.db[self.corpus].bulk_write(ops, ordered=True)

    @staticmethod
    def _write_passages(  # noqa: PLR0917 - the replay's parts, as _write_milvus
        client: Any, spec: FillSpec, rows: dict[int, CorpusRow], deleted: list[int], encode: Encode, split: Split
    ) -> None:
        """A document corpus: each replayed document's passages upserted, those past its end and every passage
        of a deleted document removed, then checked at Strong consistency."""
        passages: dict[int, CorpusRow] = {}
        counts: dict[int, int] = {}
        for doc_id, row in rows.items():
            parts = split(row)
            counts[doc_id] = len(parts)
            passages.update({int(p["id"]): CorpusRow(**p) for p in parts})
        if passages:
            ids = np.asarray(list(passages), dtype=np.int64)
            vectors = encode(list(passages.values()))
            for batch in entity_batches(spec, ids, vectors, passages):
                client.upsert(spec.collection, batch)
        stale = stale_passages(counts, deleted)
        if not stale:
            return
        client.delete(spec.collection, filter=stale)
        client.flush(spec.collection)
        found = client.query(
            spec.collection,
            filter=f"{DOCUMENT_FIELD} in {[*counts, *deleted]}",
            output_fields=[DOCUMENT_FIELD, POSITION_FIELD],
            consistency_level="Strong",
        )
        if not passages_settled(positions_by_document(found), counts, deleted):
            raise PushError(
                f"{spec.collection}: the replayed live writes are not all visible; the alias was not switched"
            )

    @staticmethod
    def _write_milvus(
        client: Any, spec: FillSpec, rows: dict[int, CorpusRow], deleted: list[int], encode: Encode
    ) -> None:
        if rows:
            ids = np.asarray(list(rows), dtype=np.int64)
            vectors = encode(list(rows.values()))
            for batch in entity_batches(spec, ids, vectors, rows):
                client.upsert(spec.collection, batch)
        if deleted:
            client.delete(spec.collection, ids=deleted)
        if not (rows or deleted):
            return
        client.flush(spec.collection)
        touched = [*rows, *deleted]
        found = client.query(
            spec.collection,
            filter=f"{PRIMARY_KEY} in {touched}",
            output_fields=[PRIMARY_KEY],
            consistency_level="Strong",
        )
        present = {int(r[PRIMARY_KEY]) for r in found}
        if present != set(rows):
            raise PushError(
                f"{spec.collection}: the replayed live writes are not all visible; the alias was not switched"
            )


@contextmanager
def live_rebuild(mongo: MongoSettings, docs: DocumentsSettings, corpus: str) -> Iterator[LiveRebuild]:
    """Hold `corpus` for a rebuild (LiveRebuild: started, closed on the way out, switched or not)."""
    with mongo_database(mongo) as db:
        rebuild = LiveRebuild(db, docs, corpus)
        rebuild.start()
        try:
            yield rebuild
        finally:
            rebuild.close()


def merge_live(corpus_file: Path, mongo: MongoSettings, corpus: str, live: LiveState, mode: LiveMode) -> Merged:
    """Rewrite the normalised corpus file with the live writes merged in (atomically; rows keep the file's order,
    live additions follow in id order)."""
    rows = [row for _, row in read_corpus(corpus_file)]
    ids = {r.id for r in rows}
    if mode is LiveMode.REPLACE:
        gone = live.upserted - ids
        log.warning(
            "--replace on %s: %d documents written live are not in the file and will be deleted; %d deleted live "
            "are in the file and come back",
            corpus,
            len(gone),
            len(live.deleted & ids),
        )
        return Merged(0, 0, len(gone))
    with mongo_database(mongo) as db:
        stored = {int(d["_id"]): d for d in db[corpus].find({"_id": {"$in": sorted(live.upserted)}})}
    missing = live.upserted - set(stored)
    if missing:  # deleted since the live state was read: the delete is replayed or applied after the switch
        log.info("%d live documents of %s were deleted meanwhile; left out of the file", len(missing), corpus)
    kept, replaced = [], 0
    for row in rows:
        if row.id in live.deleted:
            continue
        if row.id in live.upserted:
            replaced += row.id in stored
            continue  # the live version follows
        kept.append(json.dumps({"id": row.id, **row.fields()}, ensure_ascii=False))
    for doc_id in sorted(set(stored)):
        fields = {k: v for k, v in stored[doc_id].items() if k not in ("_id", "queryid")}
        kept.append(json.dumps({"id": doc_id, **fields}, ensure_ascii=False))
    with atomic_text_writer(corpus_file) as out:
        out.write("".join(line + "\n" for line in kept))
    added = len(set(stored) - ids)
    return Merged(added, replaced, len(live.deleted & ids))
