"""`push mongo`: one document per corpus row, `_id` = id and `queryid` = str(id) (unique index), bulk upserts.

The search side fetches display fields with `{"queryid": {"$in": [...]}}`, as the reference does. Upserts are
idempotent; `prune` then deletes documents whose ids are no longer in the corpus (after a re-index).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
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
    from pymongo import InsertOne, ReplaceOne
    from pymongo.errors import BulkWriteError, PyMongoError

    check_corpus_name(corpus)
    try:
        rows = [row for _, row in read_corpus(corpus_path)]
    except CorpusError as exc:
        raise PushError(str(exc)) from exc
    started = time.perf_counter()
    inserted = updated = unchanged = acknowledged = 0
    with mongo_database(settings) as db:
        coll = db[corpus]
        try:
            if not _has_unique_queryid_index(coll):
                coll.create_index("queryid", unique=True, name=QUERYID_INDEX)
            # An empty collection (a first load) takes plain inserts, cheaper than upserts on every server;
            # otherwise replace-by-_id upserts keep re-runs idempotent.
            fresh = coll.estimated_document_count() == 0
            bar = tqdm(total=len(rows), desc=f"mongo {corpus}", unit="docs", disable=progress is False)
            for s in range(0, len(rows), batch_size):
                batch = rows[s : s + batch_size]
                if fresh:
                    res = coll.bulk_write([InsertOne(document(r)) for r in batch], ordered=False)
                    inserted += res.inserted_count
                    acknowledged += res.inserted_count
                else:
                    ops = [ReplaceOne({"_id": r.id}, document(r), upsert=True) for r in batch]
                    res = coll.bulk_write(ops, ordered=False)
                    inserted += res.upserted_count
                    updated += res.modified_count
                    unchanged += res.matched_count - res.modified_count
                    # Every replace either matched its _id or inserted it. (Counting the batch back with an $in
                    # query costs more than the write on some servers.)
                    acknowledged += res.matched_count + res.upserted_count
                bar.update(len(batch))
            bar.close()
            pruned = _prune(coll, {r.id for r in rows}, batch_size) if prune else 0
            stored = coll.count_documents({})
        except BulkWriteError as exc:
            first = (exc.details.get("writeErrors") or [{}])[0]
            raise PushError(
                f"MongoDB refused documents of {settings.database}.{corpus}: {first.get('errmsg', exc)} "
                "(a document with the same queryid but another _id? the collection holds foreign data)"
            ) from exc
        except PyMongoError as exc:
            raise StoreUnavailableError(f"MongoDB at {settings.uri!r} failed during the push: {exc}") from exc
    if acknowledged != len(rows):
        raise PushError(f"{settings.database}.{corpus}: {acknowledged} of {len(rows)} upserts acknowledged")
    # The collection must now hold at least the corpus (exactly it after pruning; stale ids stay without it).
    if stored < len(rows) or (prune and stored != len(rows)):
        raise PushError(f"{settings.database}.{corpus} holds {stored} documents after the push, expected {len(rows)}")
    seconds = time.perf_counter() - started
    return MongoPushSummary(settings.database, corpus, len(rows), inserted, updated, unchanged, pruned, seconds)


def prune_mongo(settings: MongoSettings, corpus_path: Path, corpus: str, *, batch_size: int = 1000) -> int:
    """Only the pruning half of `push_mongo(prune=True)`: delete documents whose ids left the corpus."""
    from pymongo.errors import PyMongoError

    try:
        keep = {row.id for _, row in read_corpus(corpus_path)}
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
