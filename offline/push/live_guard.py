"""`push mongo` and `push milvus` refuse a corpus that has taken live writes (the search service's documents API):
they would overwrite documents written live with the file's rows, drop their vectors and bring deleted ones back.
`mmsearch ingest --merge` or `--replace` rebuilds such a corpus safely (offline/ingest/live_writes.py)."""

from __future__ import annotations

import logging

from mmsearch.change_journal import live_state
from mmsearch.settings import MongoSettings, load_settings
from offline.push.errors import PushError, StoreUnavailableError
from offline.push.mongo_push import mongo_database

log = logging.getLogger(__name__)


def refuse_live_corpus(mongo: MongoSettings, corpus: str) -> None:
    with mongo_database(mongo) as db:
        live = live_state(db[load_settings().documents.journal_collection], corpus)
    if live.any:
        raise PushError(
            f"corpus {corpus!r} has taken live writes ({len(live.upserted)} documents written, {len(live.deleted)} "
            f"deleted, {live.pending} pending through the documents API): pushing a file's documents would undo "
            "them. Rebuild it with `mmsearch ingest ... --merge` (keep them) or `--replace` (the file is the corpus)"
        )


def refuse_live_corpus_if_reachable(mongo: MongoSettings, corpus: str) -> None:
    """`push milvus` needs no MongoDB of its own: where none answers, there is no journal to look at, and it says so
    rather than failing (a stack with live writes always has its MongoDB)."""
    try:
        refuse_live_corpus(mongo, corpus)
    except StoreUnavailableError as exc:
        log.warning(
            "could not look for live writes to %s (%s); if it takes writes through the documents API, rebuild it "
            "with `mmsearch ingest --merge` instead",
            corpus,
            exc,
        )
