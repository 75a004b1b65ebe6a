"""Flags and settings that `push` and `ingest` share, so neither command module imports the other."""

from __future__ import annotations

import click
from pydantic import SecretStr

from mmsearch.settings import MilvusSettings, load_settings
from offline.push.lexical import Analyzer
from offline.push.schema import IndexType, Metric


def milvus_settings(uri: str | None, token: str | None, db_name: str | None) -> MilvusSettings:
    """Flags over environment (MMSEARCH_MILVUS__URI, __TOKEN, __DB_NAME) over defaults."""
    base = load_settings().milvus
    update: dict[str, object] = {k: v for k, v in {"uri": uri, "db_name": db_name}.items() if v is not None}
    if token is not None:
        update["token"] = SecretStr(token)
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
    help="Vector index: HNSW (M 16, efConstruction 200), IVF_FLAT (nlist n/39, max 1024) or FLAT. HNSW is the "
    "default by measurement (bench/bench_index.py, Milvus Lite, real MiniLM embeddings): its queries took 0.73x "
    "FLAT's time at 10k vectors and 0.43x at 100k, with recall@10 0.99 and 0.99 against exact search; it costs "
    "a longer build (16 s vs 1 s at 100k on 2 cores). FLAT is exact, for small corpora or recall checks.",
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
    help="Replace a corpus whose vectors came from another model or dimension, or drop its lexical fields (the "
    "search config must follow).",
)
lexical_option = click.option(
    "--lexical-field",
    "lexical_fields",
    multiple=True,
    help="A text field of the corpus to make searchable by keywords (BM25 full-text search in Milvus, for the "
    "BM25Matcher); repeat for several, e.g. --lexical-field question --lexical-field answer. Needs Milvus Lite "
    "or Milvus >= 2.5.",
)
analyzer_option = click.option(
    "--analyzer",
    type=click.Choice([a.value for a in Analyzer]),
    default=Analyzer.STANDARD.value,
    show_default=True,
    help="How lexical fields are cut into terms: standard (words, lower-cased), jieba (Chinese), english "
    "(standard + stemming; Milvus >= 2.5 servers only, Milvus Lite refuses it).",
)
