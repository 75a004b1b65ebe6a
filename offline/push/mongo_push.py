"""`push mongo`: one document per corpus row, `_id` = id and `queryid` = str(id) (unique index), bulk upserts.

The search side fetches display fields with `{"queryid": {"$in": [...]}}`, as the reference does. Upserts are
idempotent; `prune` then deletes documents whose ids are no longer in the corpus (after a re-index).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Set
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmsearch import stores
from mmsearch.settings import MongoSettings
from offline.preprocess.records import CorpusError, CorpusRow, read_corpus
from offline.push.errors import PushError, StoreUnavailableError
from offline.push.schema import check_corpus_name

log = logging.getLogger(__name__)
URI_HINT = "--mongo-uri or MMSEARCH_MONGO__URI"
QUERYID_INDEX = "queryid_unique"


@dataclass(frozen=True)
class MongoPushSummary:
    database: str
    collection: str
    count: int
    inserted: int
    updated: int
    unchanged: int
    pruned: int
    seconds: float

    def text(self) -> str:
        rate = self.count / self.seconds if self.seconds > 0 else 0.0
        pruned = f", {self.pruned} stale removed" if self.pruned else ""
        return (
            f"{self.database}.{self.collection}: {self.count} documents verified ({self.inserted} new, "
            f"{self.updated} updated, {self.unchanged} unchanged{pruned}) in {self.seconds:.1f}s = {rate:.0f} docs/s"
        )


def document(row: CorpusRow) -> dict[str, Any]:
    return {"_id": row.id, "queryid": str(row.id), **row.fields()}


@contextmanager
def mongo_database(settings: MongoSettings) -> Iterator[Any]:
    from pymongo.errors import PyMongoError

    client: Any = stores.mongo_client(settings, bound_operations=False, appname="mmsearch-push")
    try:
        try:
            client.admin.command("ping")
        except PyMongoError as exc:
            reason = str(exc).split(" (configured timeouts")[0].split(", Timeout:")[0]
            raise StoreUnavailableError(f"cannot reach MongoDB at {settings.uri!r} (set {URI_HINT}): {reason}") from exc
        yield client[settings.database]
    finally:
        client.close()


def push_mongo(
    settings: MongoSettings,
    corpus_path: Path,
    corpus: str,
    *,
    batch_size: int = 1000,
    prune: bool = False,
    progress: bool | None = None,
) -> MongoPushSummary:
    from pymongo.errors import BulkWriteError, PyMongoError

    check_corpus_name(corpus)
    try:
        rows = [row for _, row in read_corpus(corpus_path)]
    except CorpusError as exc:
        raise PushError(str(exc)) from exc
    started = time.perf_counter()
    counts = WriteCounts()
    with mongo_database(settings) as db:
        coll = db[corpus]
        try:
            ensure_queryid_index(coll)
            # An empty collection (a first load) takes plain inserts, cheaper than upserts on every server;
            # otherwise replace-by-_id upserts keep re-runs idempotent.
            fresh = coll.estimated_document_count() == 0
            bar = tqdm(total=len(rows), desc=f"mongo {corpus}", unit="docs", disable=progress is False)
            for s in range(0, len(rows), batch_size):
                batch = rows[s : s + batch_size]
                counts.add(write_documents(coll, batch, fresh=fresh))
                bar.update(len(batch))
            bar.close()
            pruned = _prune(coll, {r.id for r in rows}, batch_size) if prune else 0
            stored = coll.count_documents({})
        except BulkWriteError as exc:
            raise refused(settings, corpus, exc) from exc
        except PyMongoError as exc:
            raise StoreUnavailableError(f"MongoDB at {settings.uri!r} failed during the push: {exc}") from exc
    check_written(settings, corpus, counts, len(rows), stored, exact=prune)
    seconds = time.perf_counter() - started
    return MongoPushSummary(
        settings.database, corpus, len(rows), counts.inserted, counts.updated, counts.unchanged, pruned, seconds
    )


@dataclass
class WriteCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    acknowledged: int = 0

    def add(self, other: WriteCounts) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.acknowledged += other.acknowledged


def ensure_queryid_index(coll: Any) -> None:
    if not _has_unique_queryid_index(coll):
        coll.create_index("queryid", unique=True, name=QUERYID_INDEX)


def write_documents(coll: Any, rows: list[CorpusRow], *, fresh: bool) -> WriteCounts:
    """One bulk write of `rows`' documents: inserts into a collection known to be empty, else upserts by _id."""
    from pymongo import InsertOne, ReplaceOne

    if fresh:
        res = coll.bulk_write([InsertOne(document(r)) for r in rows], ordered=False)
        return WriteCounts(inserted=res.inserted_count, acknowledged=res.inserted_count)
    res = coll.bulk_write([ReplaceOne({"_id": r.id}, document(r), upsert=True) for r in rows], ordered=False)
    # Every replace either matched its _id or inserted it. (Counting the batch back with an $in query costs more
    # than the write on some servers.)
    return WriteCounts(
        inserted=res.upserted_count,
        updated=res.modified_count,
        unchanged=res.matched_count - res.modified_count,
        acknowledged=res.matched_count + res.upserted_count,
    )


def refused(settings: MongoSettings, corpus: str, exc: Any) -> PushError:
    first = (exc.details.get("writeErrors") or [{}])[0]
    return PushError(
        f"MongoDB refused documents of {settings.database}.{corpus}: {first.get('errmsg', exc)} "
        "(a document with the same queryid but another _id? the collection holds foreign data)"
    )


def check_written(
    settings: MongoSettings, corpus: str, counts: WriteCounts, rows: int, stored: int, *, exact: bool
) -> None:
    if counts.acknowledged != rows:
        raise PushError(f"{settings.database}.{corpus}: {counts.acknowledged} of {rows} upserts acknowledged")
    # The collection must now hold at least the corpus (exactly it after pruning; stale ids stay without it).
    if stored < rows or (exact and stored != rows):
        raise PushError(f"{settings.database}.{corpus} holds {stored} documents after the push, expected {rows}")


def prune_mongo(
    settings: MongoSettings,
    corpus_path: Path,
    corpus: str,
    *,
    batch_size: int = 1000,
    also_keep: Set[int] = frozenset(),
) -> int:
    """Only the pruning half of `push_mongo(prune=True)`: delete documents whose ids left the corpus (those in
    `also_keep` stay: written live while a rebuild read the file)."""
    from pymongo.errors import PyMongoError

    try:
        keep = {row.id for _, row in read_corpus(corpus_path)} | also_keep
    except CorpusError as exc:
        raise PushError(str(exc)) from exc
    with mongo_database(settings) as db:
        try:
            return _prune(db[check_corpus_name(corpus)], keep, batch_size)
        except PyMongoError as exc:
            raise StoreUnavailableError(f"MongoDB at {settings.uri!r} failed while pruning: {exc}") from exc


def _prune(coll: Any, keep: set[int], batch_size: int) -> int:
    stale = [d["_id"] for d in coll.find({}, {"_id": 1}) if d["_id"] not in keep]
    for s in range(0, len(stale), batch_size):
        coll.delete_many({"_id": {"$in": stale[s : s + batch_size]}})
    if stale:
        log.info("removed %d documents whose ids are no longer in the corpus", len(stale))
    return len(stale)


def _has_unique_queryid_index(coll: Any) -> bool:
    """A unique index on queryid under another name (e.g. MongoDB's default `queryid_1`, made by hand or by another
    loader) serves as well; creating ours beside it fails with IndexOptionsConflict."""
    return any(
        [(k, int(d)) for k, d in info.get("key", [])] == [("queryid", 1)] and bool(info.get("unique"))
        for info in coll.index_information().values()
    )
