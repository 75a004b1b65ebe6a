"""A rebuild of a corpus that takes live writes (the search service's documents API) loses none of them.

While it runs, the rebuild holds the corpus's applier lease (mmsearch/change_journal.py): writes accepted meanwhile
stay pending in the journal, durable, and the search replicas apply them to the new collection once the alias has
switched and the lease is released. What the journal had applied before the rebuild started, it merges into the
corpus file before encoding, as the user asked:

- `--merge`: live writes win over the file (a document written live replaces the file's row of that id or joins
  it; a document deleted live stays deleted even if the file has it).
- `--replace`: the file is the whole corpus (documents written live that it lacks are deleted; those deleted live
  that it has come back); the counts are logged before anything changes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from mmsearch.change_journal import LiveState, live_state, release_lease, reserve_lease, take_lease
from mmsearch.files import atomic_text_writer
from mmsearch.settings import DocumentsSettings, MongoSettings
from offline.preprocess.records import read_corpus
from offline.push.errors import PushError
from offline.push.mongo_push import mongo_database

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


class RebuildLease:
    """The corpus's applier lease, held (and renewed) for the rebuild; taken from MongoDB `db`."""

    def __init__(self, db: Any, docs: DocumentsSettings, corpus: str) -> None:
        self.leases = db[docs.leases_collection]
        self.journal = db[docs.journal_collection]
        self.seconds = docs.lease_seconds
        self.corpus = corpus
        self.owner = f"rebuild-{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="rebuild-lease", daemon=True)
        self.lost = False
        self._renewed_at = 0.0  # monotonic time of the last renewal that succeeded

    def take(self, wait_seconds: float) -> None:
        """Reserve the lease (the replica applying the corpus stops renewing it), then take it once it runs out."""
        deadline = time.monotonic() + wait_seconds
        while True:
            reserve_lease(self.leases, self.corpus, self.owner, self.seconds)
            if take_lease(self.leases, self.corpus, self.owner, self.seconds):
                break
            if time.monotonic() > deadline:
                raise PushError(
                    f"a search replica is applying live writes to {self.corpus!r} and keeps its lease: try again"
                )
            time.sleep(0.2)
        self._renewed_at = time.monotonic()
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                if take_lease(self.leases, self.corpus, self.owner, self.seconds):
                    self._renewed_at = time.monotonic()
                else:
                    self.lost = True
            except Exception:
                log.warning("renewing the rebuild's lease on %s failed; retrying", self.corpus, exc_info=True)

    def check(self) -> None:
        """Before the alias switches: the lease was never lost nor lapsed (renewals failing for longer than it
        lasts), so no live write reached the old collection."""
        lapsed = time.monotonic() - self._renewed_at > self.seconds
        if self.lost or lapsed or not take_lease(self.leases, self.corpus, self.owner, self.seconds):
            raise PushError(
                f"the rebuild lost {self.corpus!r}'s lease (MongoDB unreachable for over {self.seconds:g}s?): live "
                "writes may have been applied to the old collection; the alias was not switched, run it again"
            )

    def release(self) -> None:
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()
        release_lease(self.leases, self.corpus, self.owner)


@contextmanager
def rebuild_lease(
    mongo: MongoSettings, docs: DocumentsSettings, corpus: str
) -> Iterator[tuple[RebuildLease, LiveState]]:
    """Hold the corpus's lease for the rebuild; yields it with the live state read under it."""
    with mongo_database(mongo) as db:
        lease = RebuildLease(db, docs, corpus)
        lease.take(wait_seconds=2 * docs.lease_seconds + 5)
        try:
            yield lease, live_state(lease.journal, corpus)
        finally:
            lease.release()


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
    if missing:
        raise PushError(
            f"the journal says {len(missing)} live documents of {corpus!r} exist (e.g. {min(missing)}) but MongoDB "
            "has no document for them: nothing was changed"
        )
    kept, replaced = [], 0
    for row in rows:
        if row.id in live.deleted:
            continue
        if row.id in live.upserted:
            replaced += 1
            continue  # the live version follows
        kept.append(json.dumps({"id": row.id, **row.fields()}, ensure_ascii=False))
    for doc_id in sorted(live.upserted):
        fields = {k: v for k, v in stored[doc_id].items() if k not in ("_id", "queryid")}
        kept.append(json.dumps({"id": doc_id, **fields}, ensure_ascii=False))
    with atomic_text_writer(corpus_file) as out:
        out.write("".join(line + "\n" for line in kept))
    added = len(live.upserted - ids)
    return Merged(added, replaced, len(live.deleted & ids))
