"""`push mongo` refuses a corpus that has taken live writes (the search service's documents API): it would
overwrite documents written live with the file's rows and bring deleted ones back. `mmsearch ingest --merge` or
`--replace` rebuilds such a corpus safely (offline/ingest/live_writes.py)."""

from __future__ import annotations

from mmsearch.change_journal import live_state
from mmsearch.settings import MongoSettings, load_settings
from offline.push.errors import PushError
from offline.push.mongo_push import mongo_database


def refuse_live_corpus(mongo: MongoSettings, corpus: str) -> None:
    with mongo_database(mongo) as db:
        live = live_state(db[load_settings().documents.journal_collection], corpus)
    if live.any:
        raise PushError(
            f"corpus {corpus!r} has taken live writes ({len(live.upserted)} documents written, {len(live.deleted)} "
            f"deleted, {live.pending} pending through the documents API): pushing a file's documents would undo "
            "them. Rebuild it with `mmsearch ingest ... --merge` (keep them) or `--replace` (the file is the corpus)"
        )
