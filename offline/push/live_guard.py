"""Refuse to rebuild a corpus that has taken live writes (the search service's documents API).

A rebuild from a file would silently bring back deleted documents and drop or overwrite documents written live:
the journal (MongoDB `changes`, services/search/documents/journal.py) says whether the corpus has any. Until a
rebuild can merge them (or replace them on purpose), it refuses and says how many there are.
"""

from __future__ import annotations

from mmsearch.settings import MongoSettings, load_settings
from offline.push.errors import PushError
from offline.push.mongo_push import mongo_database


def refuse_live_corpus(mongo: MongoSettings, corpus: str) -> None:
    journal = load_settings().documents.journal_collection
    with mongo_database(mongo) as db:
        counts = {
            op: db[journal].count_documents({"corpus": corpus, "op": op, "state": {"$in": ["pending", "applied"]}})
            for op in ("upsert", "delete")
        }
    if counts["upsert"] or counts["delete"]:
        raise PushError(
            f"corpus {corpus!r} has taken live writes ({counts['upsert']} upserts, {counts['delete']} deletes through "
            "the documents API): a rebuild from a file would undo them (deleted documents back, written ones lost). "
            "Rebuilding a live corpus is not supported yet; change it through the documents API "
            "(`mmsearch documents import FILE`), or ingest the file under a new --corpus"
        )
