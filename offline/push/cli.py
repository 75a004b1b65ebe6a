"""`mmsearch push milvus|mongo`: load vectors into Milvus behind the corpus alias, documents into MongoDB."""

from __future__ import annotations

from pathlib import Path

import click

from mmsearch.settings import mongo_settings
from offline.errors import reported
from offline.push.lexical import Analyzer
from offline.push.live_guard import refuse_live_corpus, refuse_live_corpus_if_reachable
from offline.push.milvus_push import MilvusPushOptions, push_milvus
from offline.push.mongo_push import push_mongo
from offline.push.options import (
    allow_option,
    analyzer_option,
    filter_option,
    index_option,
    lexical_option,
    metric_option,
    milvus_db_option,
    milvus_settings,
    milvus_token_option,
    milvus_uri_option,
    mongo_db_option,
    mongo_uri_option,
    split_fields,
)
from offline.push.schema import IndexType, Metric


@click.group()
def push() -> None:
    """Bulk-load a corpus into Milvus (vectors) or MongoDB (documents)."""


@push.command("milvus")
@click.option(
    "--vectors", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output of `mmsearch index`."
)
@click.option("--corpus", required=True, help="Corpus name = the alias searches use (e.g. faq_qa).")
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Corpus jsonl for the filter fields (default: the one recorded in the vectors).",
)
@filter_option
@lexical_option
@analyzer_option
@index_option
@metric_option
@click.option("--batch-size", default=1000, show_default=True, help="Rows per upsert call (the tail batch too).")
@allow_option
@click.option("--force", is_flag=True, help="Rebuild even if the alias already serves exactly these vectors.")
@milvus_uri_option
@milvus_token_option
@milvus_db_option
@mongo_uri_option
@mongo_db_option
def milvus_command(
    *,
    vectors: Path,
    corpus: str,
    input_path: Path | None,
    filter_fields: str | None,
    lexical_fields: tuple[str, ...],
    analyzer: str,
    index_type: str,
    metric: str,
    batch_size: int,
    allow_model_change: bool,
    force: bool,
    milvus_uri: str | None,
    milvus_token: str | None,
    milvus_db: str | None,
    mongo_uri: str | None,
    mongo_database: str | None,
) -> None:
    """Load vectors into a new collection CORPUS__<timestamp>, verify it, then switch the alias CORPUS to it.

    Steps: create (INT64 id, <field>_emb, filter fields, lexical fields with their BM25 function), upsert in
    batches, flush, build the indexes, load, check the count, that a vector finds itself and that a row's text
    finds it by BM25, record the model key, dimension and lexical fields in the collection properties, switch
    the alias, drop the older physical collections. Re-running with the same input changes
    nothing. Any failure leaves the previous collection serving. A corpus that has taken live writes (the
    documents API; its journal in MongoDB, --mongo-uri) is refused: rebuild it with `mmsearch ingest --merge`.
    """
    opts = MilvusPushOptions(
        vectors=vectors,
        corpus=corpus,
        filter_fields=split_fields(filter_fields),
        input_path=input_path,
        index_type=IndexType(index_type),
        metric=Metric(metric),
        batch_size=batch_size,
        allow_model_change=allow_model_change,
        force=force,
        lexical_fields=list(lexical_fields),
        analyzer=Analyzer(analyzer),
    )
    with reported():
        refuse_live_corpus_if_reachable(mongo_settings(mongo_uri, mongo_database), corpus)
        summary = push_milvus(milvus_settings(milvus_uri, milvus_token, milvus_db), opts)
    click.echo(summary.text())


@push.command("mongo")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Normalised corpus jsonl.",
)
@click.option("--corpus", required=True, help="Corpus name = the MongoDB collection.")
@click.option("--batch-size", default=1000, show_default=True, help="Documents per bulk write.")
@click.option("--prune", is_flag=True, help="Also delete documents whose ids are not in the input.")
@mongo_uri_option
@mongo_db_option
def mongo_command(
    *, input_path: Path, corpus: str, batch_size: int, prune: bool, mongo_uri: str | None, mongo_database: str | None
) -> None:
    """Upsert one document per row (_id = id, queryid = str(id), unique index on queryid) and verify the count."""
    with reported():
        refuse_live_corpus(mongo_settings(mongo_uri, mongo_database), corpus)
        summary = push_mongo(
            mongo_settings(mongo_uri, mongo_database), input_path, corpus, batch_size=batch_size, prune=prune
        )
    click.echo(summary.text())
