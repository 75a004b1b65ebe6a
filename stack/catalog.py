"""What the local stores already hold, so a second `up` skips ingestion that would redo the same work.

A corpus counts as loaded when its Milvus alias exists with mmsearch metadata naming the same model key and
dimension, its vectors were made by the model export now in the repository from the same input (the stamp
records the export's manifest time and the ingest arguments), and MongoDB holds as many documents as Milvus
holds vectors.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from mmsearch import stores
from mmsearch.collection_meta import from_properties
from mmsearch.model_repo import ModelRepository
from mmsearch.settings import MilvusSettings, MongoSettings
from stack.plan import Corpus


class LoadedState(BaseModel):
    corpus: str
    model_key: str
    model_created_at: str
    fingerprint: str  # the ingest arguments that define the content (input, mapping, image URLs)
    count: int


def stamp_path(run_dir: Path, corpus: str) -> Path:
    return run_dir / f"loaded-{corpus}.json"


def write_stamp(run_dir: Path, state: LoadedState) -> None:
    stamp_path(run_dir, state.corpus).write_text(state.model_dump_json() + "\n", encoding="utf-8")


def read_stamp(run_dir: Path, corpus: str) -> LoadedState | None:
    path = stamp_path(run_dir, corpus)
    if not path.is_file():
        return None
    try:
        return LoadedState.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, OSError):
        return None  # a damaged stamp only costs a re-ingest


def milvus_count(uri: str, corpus: Corpus, dim: int) -> int | None:
    """Vectors behind the corpus alias if they were made by corpus.model_key at this dimension, else None."""
    client = stores.milvus_client(MilvusSettings(uri=uri))
    try:
        if not client.has_collection(corpus.name):
            return None
        meta = from_properties(client.describe_collection(corpus.name).get("properties"))
        if meta is None or meta.model_key != corpus.model_key or meta.dim != dim:
            return None
        return int(client.get_collection_stats(corpus.name).get("row_count", 0))
    finally:
        client.close()


def mongo_count(uri: str, database: str, corpus: str) -> int:
    client = stores.mongo_client(MongoSettings(uri=uri, database=database, timeout_ms=5000))
    try:
        return int(client[database][corpus].count_documents({}))
    finally:
        client.close()


def loaded_count(
    *,
    repo: ModelRepository,
    corpus: Corpus,
    fingerprint: str,
    run_dir: Path,
    milvus_uri: str,
    mongo_uri: str,
    database: str,
) -> int | None:
    """Documents of `corpus` already served by the current export of its model; None when it must be ingested."""
    manifest = repo.manifest(corpus.model_key)
    stamp = read_stamp(run_dir, corpus.name)
    if (
        stamp is None
        or stamp.model_key != corpus.model_key
        or stamp.model_created_at != manifest.created_at
        or stamp.fingerprint != fingerprint
    ):
        return None
    vectors = milvus_count(milvus_uri, corpus, manifest.embedding_dim)
    if not vectors:
        return None
    documents = mongo_count(mongo_uri, database, corpus.name)
    return vectors if documents == vectors else None
