"""Which judged document ids the scene's corpus does not hold.

A judged id missing from the corpus can never be found: the query scores as a miss whatever the search does.
Such ids are counted and reported (a qrels file for another corpus, or a corpus ingested without some rows),
never silently dropped; the queries stay in the scores, as judged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from mmsearch.settings import MongoSettings
from offline.eval.qrels import Judgement

log = logging.getLogger(__name__)
_CHUNK = 1000


def ids_not_in_corpus(mongo: MongoSettings, collections: Sequence[str], judged: Iterable[Judgement]) -> set[str] | None:
    """The judged ids found in none of the scene's document collections; None when MongoDB cannot be read (the
    eval still runs, and says so), or when the scene names no document collection to look in."""
    from pymongo.errors import PyMongoError

    from mmsearch.stores import mongo_client

    if not collections:
        log.warning("the scene names no document collection: judged ids not checked against the corpus")
        return None
    wanted = sorted({doc_id for j in judged for doc_id in j.relevant})
    client = mongo_client(mongo, appname="mmsearch-eval")
    found: set[str] = set()
    try:
        db = client[mongo.database]
        for name in collections:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                found.update(str(d["queryid"]) for d in db[name].find({"queryid": {"$in": chunk}}, {"queryid": 1}))
    except PyMongoError as exc:
        log.warning("cannot check the judged ids against the corpus in MongoDB at %s: %s", mongo.uri, exc)
        return None
    finally:
        client.close()
    return set(wanted) - found
