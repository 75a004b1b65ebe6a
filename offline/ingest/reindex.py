"""`mmsearch reindex --corpus C [--model M]`: rebuild a corpus's vectors from MongoDB, its source of truth.

For a model change, or to put live-written documents back in one indexed segment. The documents are read from the
corpus's MongoDB collection after the rebuild has marked the corpus (offline/ingest/live_writes.py: writes applied
meanwhile are replayed into the new collection, encoded with the new model), and go through `mmsearch ingest`'s steps
with the filter and lexical fields, analyzer, index and metric the serving collection records; the alias switches
once the new collection is verified, as for any ingest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from mmsearch.chunking import CHUNK_FIELDS
from mmsearch.collection_meta import PRIMARY_KEY, CollectionMeta, from_properties, sparse_field
from mmsearch.files import atomic_text_writer
from mmsearch.model_repo import ModelRepository
from mmsearch.settings import MilvusSettings, MongoSettings, load_settings, mongo_settings
from offline.errors import reported
from offline.ingest.live_writes import LiveMode
from offline.ingest.steps import IngestOptions, default_work_dir, run_ingest
from offline.preprocess.chunks import Chunker
from offline.preprocess.rejects import PreprocessReport, default_rejects_path, write_rejects
from offline.push.errors import PushError
from offline.push.lexical import Analyzer
from offline.push.milvus_push import alias_target, milvus_client
from offline.push.mongo_push import mongo_database
from offline.push.options import milvus_settings, milvus_uri_option, mongo_db_option, mongo_uri_option
from offline.push.schema import IndexType, Metric

log = logging.getLogger(__name__)


def serving(settings: MilvusSettings, corpus: str) -> tuple[CollectionMeta, list[str]]:
    """What the corpus's serving collection records, and its filter fields."""
    with milvus_client(settings) as client:
        current = alias_target(client, corpus)
        if current is None:
            raise PushError(f"no corpus {corpus!r} in Milvus at {settings.uri}: ingest it first (`mmsearch ingest`)")
        described: dict[str, Any] = client.describe_collection(current)
    meta = from_properties(described.get("properties"))
    if meta is None:
        raise PushError(f"{current} was not built by mmsearch: nothing says which model and fields it holds")
    skip = {PRIMARY_KEY, meta.vector_field, *meta.lexical_fields, *(sparse_field(f) for f in meta.lexical_fields)}
    filters = [str(f["name"]) for f in described.get("fields", []) if str(f["name"]) not in skip]
    return meta, filters


def dump_documents(mongo: MongoSettings, corpus: str, out: Path) -> PreprocessReport:
    """The corpus's documents as normalised rows (id + fields), in id order."""
    report = PreprocessReport(output=out, rejects_file=default_rejects_path(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    with mongo_database(mongo) as db, atomic_text_writer(out) as f:
        for doc in db[corpus].find({}).sort("_id", 1):
            fields = {k: v for k, v in doc.items() if k not in ("_id", "queryid")}
            f.write(json.dumps({"id": int(doc["_id"]), **fields}, ensure_ascii=False) + "\n")
            report.written += 1
    write_rejects(report.rejects_file, [])
    return report


@click.command()
@click.option("--corpus", required=True, help="The corpus to rebuild (Milvus alias and MongoDB collection).")
@click.option("--model", "model_key", default=None, help="Encode with this model instead of the corpus's own.")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model repository root (default: settings model_repo, env MMSEARCH_MODEL_REPO).",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the copy of the documents and the vector shards are kept (default: var/ingest/<corpus>-reindex).",
)
@click.option("--batch-size", default=32, show_default=True, help="Rows per ONNX Runtime call.")
@milvus_uri_option
@mongo_uri_option
@mongo_db_option
def reindex(  # noqa: PLR0917 - click options
    corpus: str,
    model_key: str | None,
    repo: Path | None,
    work_dir: Path | None,
    batch_size: int,
    milvus_uri: str | None,
    mongo_uri: str | None,
    mongo_database: str | None,
) -> None:
    """Rebuild CORPUS's vectors from its MongoDB documents (the source of truth), e.g. after a model change.

    Keeps what the serving collection records (filter and lexical fields, analyzer, index, metric, and a document
    corpus's encode template and passage size); with --model the
    new vectors come from that model (the search configuration must then name it). Writes through the documents
    API are never lost: those applied while it runs are replayed into the new collection before the switch.
    """
    milvus = milvus_settings(milvus_uri, None, None)
    mongo = mongo_settings(mongo_uri, mongo_database)
    with reported():
        meta, filters = serving(milvus, corpus)
        model = model_key or meta.model_key
        models = ModelRepository(repo or load_settings().model_repo)
        chunker = None
        if meta.documents:  # a document corpus: its documents are split again as the collection records
            chunker = Chunker.for_model(
                models, model, meta.encode_template, tokens=meta.chunk_tokens, overlap=meta.chunk_overlap
            )
            filters = [f for f in filters if f not in CHUNK_FIELDS]
        opts = IngestOptions(
            corpus=corpus,
            model_key=model,
            field=meta.vector_field.removesuffix("_emb"),
            repo=models,
            work_dir=work_dir or default_work_dir(f"{corpus}-reindex"),
            milvus=milvus,
            mongo=mongo,
            batch_size=batch_size,
            filter_fields=filters,
            lexical_fields=list(meta.lexical_fields),
            analyzer=Analyzer(meta.analyzer) if meta.analyzer else Analyzer.STANDARD,
            index_type=IndexType(meta.index_type),
            metric=Metric(meta.metric),
            allow_model_change=model != meta.model_key,
            live=LiveMode.MERGE,  # MongoDB already holds the live writes: merging them again changes nothing
            documents=load_settings().documents,
            chunker=chunker,
        )
        log.info("reindexing %s: %s -> %s", corpus, meta.model_key, model)
        report = run_ingest(opts, lambda out: dump_documents(mongo, corpus, out))
    for line in report.lines:
        click.echo(line)
