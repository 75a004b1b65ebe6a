"""`mmsearch push milvus|mongo`: load vectors into Milvus behind the corpus alias, documents into MongoDB."""

from __future__ import annotations

from pathlib import Path

import click

from mmsearch.settings import MilvusSettings, MongoSettings, load_settings
from offline.encode.manifest import ManifestError
from offline.push.errors import PushError
from offline.push.milvus_push import MilvusPushOptions, push_milvus
from offline.push.mongo_push import push_mongo
from offline.push.schema import IndexType, Metric


def milvus_settings(uri: str | None, token: str | None, db_name: str | None) -> MilvusSettings:
    """Flags over environment (MMSEARCH_MILVUS__URI, __TOKEN, __DB_NAME) over defaults."""
    base = load_settings().milvus
    update = {k: v for k, v in {"uri": uri, "token": token, "db_name": db_name}.items() if v is not None}
    return base.model_copy(update=update)


def mongo_settings(uri: str | None, database: str | None) -> MongoSettings:
    """Flags over environment (MMSEARCH_MONGO__URI, __DATABASE) over defaults."""
    base = load_settings().mongo
    update = {k: v for k, v in {"uri": uri, "database": database}.items() if v is not None}
    return base.model_copy(update=update)


def split_fields(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [f.strip() for f in text.split(",") if f.strip()]


milvus_uri_option = click.option(
    "--milvus-uri",
    default=None,
    help="Milvus Lite file (e.g. var/milvus.db) or server URI http://host:19530 (env MMSEARCH_MILVUS__URI).",
)
milvus_token_option = click.option(
    "--milvus-token", default=None, help="user:password or API token (env MMSEARCH_MILVUS__TOKEN)."
)
milvus_db_option = click.option("--milvus-db", default=None, help="Milvus database (env MMSEARCH_MILVUS__DB_NAME).")
mongo_uri_option = click.option("--mongo-uri", default=None, help="MongoDB URI (env MMSEARCH_MONGO__URI).")
mongo_db_option = click.option(
    "--mongo-database", default=None, help="MongoDB database (env MMSEARCH_MONGO__DATABASE)."
)
index_option = click.option(
    "--index",
    "index_type",
    type=click.Choice([i.value for i in IndexType]),
    default=IndexType.HNSW.value,
    show_default=True,
    help="Vector index: HNSW (M 16, efConstruction 200), IVF_FLAT (nlist n/39, max 1024) or FLAT.",
)
metric_option = click.option(
    "--metric",
    type=click.Choice([m.value for m in Metric]),
    default=Metric.IP.value,
    show_default=True,
    help="IP equals cosine on our unit vectors.",
)
filter_option = click.option(
    "--filter-fields",
    default=None,
    help="Comma-separated corpus fields stored as scalar fields for filtering (default: category when present; "
    "'' for none). Lists of text become ARRAY<VARCHAR>.",
)
allow_option = click.option(
    "--allow-model-change",
    is_flag=True,
    help="Replace a corpus whose vectors came from another model or dimension (the search config must follow).",
)


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
@index_option
@metric_option
@click.option("--batch-size", default=1000, show_default=True, help="Rows per upsert call (the tail batch too).")
@allow_option
@click.option("--force", is_flag=True, help="Rebuild even if the alias already serves exactly these vectors.")
@milvus_uri_option
@milvus_token_option
@milvus_db_option
def milvus_command(
    *,
    vectors: Path,
    corpus: str,
    input_path: Path | None,
    filter_fields: str | None,
    index_type: str,
    metric: str,
    batch_size: int,
    allow_model_change: bool,
    force: bool,
    milvus_uri: str | None,
    milvus_token: str | None,
    milvus_db: str | None,
) -> None:
    """Load vectors into a new collection CORPUS__<timestamp>, verify it, then switch the alias CORPUS to it.

    Steps: create (INT64 id, <field>_emb, filter fields), upsert in batches, flush, build the index, load,
    check the count and that a vector finds itself, record the model key and dimension in the collection
    properties, switch the alias, drop the older physical collections. Re-running with the same input changes
    nothing. Any failure leaves the previous collection serving.
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
    )
    try:
        summary = push_milvus(milvus_settings(milvus_uri, milvus_token, milvus_db), opts)
    except (PushError, ManifestError) as exc:
        raise click.ClickException(str(exc)) from exc
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
    try:
        summary = push_mongo(
            mongo_settings(mongo_uri, mongo_database), input_path, corpus, batch_size=batch_size, prune=prune
        )
    except PushError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summary.text())
