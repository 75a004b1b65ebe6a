"""`mmsearch ingest qa|text|images`: every offline step for the common case, resumable and idempotent."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mmsearch.chunking import PASSAGE_FIELD
from mmsearch.model_repo import ModelRepository
from mmsearch.settings import load_settings, mongo_settings
from offline.errors import reported
from offline.ingest.live_writes import LiveMode
from offline.ingest.steps import IngestOptions, default_work_dir, run_ingest
from offline.preprocess.chunks import Chunker
from offline.preprocess.demo import Demo, prepare_demo
from offline.preprocess.documents import DocumentFormat, DocumentOptions, preprocess_documents
from offline.preprocess.images import preprocess_images
from offline.preprocess.qa import QAFormat, QAOptions, parse_field_map, preprocess_qa
from offline.preprocess.rejects import PreprocessReport
from offline.push.lexical import Analyzer
from offline.push.options import (
    allow_option,
    analyzer_option,
    filter_option,
    index_option,
    lexical_option,
    metric_option,
    milvus_settings,
    milvus_uri_option,
    mongo_db_option,
    mongo_uri_option,
    split_fields,
)
from offline.push.schema import IndexType, Metric
from offline.spark.options import Engine, engine_options, spark_settings


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option("--model", "model_key", required=True, help="Model key in the model repository (e.g. minilm)."),
        click.option("--corpus", required=True, help="Corpus name: Milvus alias and MongoDB collection (e.g. faq_qa)."),
        click.option(
            "--work-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Where the normalised corpus and vector shards are kept (default: var/ingest/<corpus>).",
        ),
        click.option(
            "--repo",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Model repository root (default: settings model_repo, env MMSEARCH_MODEL_REPO).",
        ),
        click.option("--batch-size", default=32, show_default=True, help="Rows per ONNX Runtime call."),
        click.option(
            "--shard-size", default=10_000, show_default=True, help="Rows per vector shard (unit of resuming)."
        ),
        filter_option,
        lexical_option,
        analyzer_option,
        index_option,
        metric_option,
        allow_option,
        click.option("--skip-mongo", is_flag=True, help="Load Milvus only."),
        click.option(
            "--merge",
            "live",
            flag_value="merge",
            default=None,
            help="The corpus has taken live writes (documents API): keep them, they win over the file's rows.",
        ),
        click.option(
            "--replace",
            "live",
            flag_value="replace",
            help="The corpus has taken live writes: the file is the whole corpus, documents written live that it "
            "lacks are deleted (counted before anything changes).",
        ),
        milvus_uri_option,
        mongo_uri_option,
        mongo_db_option,
        engine_options,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(
    kw: dict[str, Any],
    field: str,
    preprocess: Callable[[Path], PreprocessReport],
    chunker: Callable[[ModelRepository], Chunker] | None = None,
) -> None:
    corpus = kw["corpus"]
    repo = ModelRepository(kw["repo"] or load_settings().model_repo)
    with reported():
        made = chunker(repo) if chunker is not None else None
    opts = IngestOptions(
        corpus=corpus,
        model_key=kw["model_key"],
        field=field,
        repo=repo,
        work_dir=kw["work_dir"] or default_work_dir(corpus),
        milvus=milvus_settings(kw["milvus_uri"], None, None),
        mongo=mongo_settings(kw["mongo_uri"], kw["mongo_database"]),
        batch_size=kw["batch_size"],
        shard_size=kw["shard_size"],
        filter_fields=split_fields(kw["filter_fields"]),
        lexical_fields=list(kw["lexical_fields"]),
        analyzer=Analyzer(kw["analyzer"]),
        index_type=IndexType(kw["index_type"]),
        metric=Metric(kw["metric"]),
        allow_model_change=kw["allow_model_change"],
        skip_mongo=kw["skip_mongo"],
        engine=Engine(kw["engine"]),
        spark=spark_settings(kw["spark_master"], kw["partitions"], kw["spark_conf"]),
        ship_models=kw["ship_models"],
        live=LiveMode(kw["live"]) if kw["live"] else None,
        documents=load_settings().documents,
        chunker=made,
    )
    try:
        with reported():
            report = run_ingest(opts, preprocess)
    except KeyboardInterrupt:
        click.echo(
            f"interrupted: the encoded shards are kept in {opts.work_dir}; the alias was not switched. "
            "Run the same command again to continue",
            err=True,
        )
        raise SystemExit(130) from None
    for line in report.lines:
        click.echo(line)


@click.group()
def ingest() -> None:
    """Preprocess, encode and load a corpus into Milvus and MongoDB in one command.

    Re-running with the same input changes nothing; an interrupted run continues where the encoding stopped;
    the alias switches to the new collection only after it is verified.

    With --engine spark the shards are encoded, and their documents written, on Spark executors, then the
    executors fill the new Milvus collection: same vectors, same guarantees, on as many machines as the
    cluster has (`--spark-master spark://host:7077`; see deploy/k8s/README.md for Kubernetes).
    """


@ingest.command("qa")
@click.option(
    "--demo",
    type=click.Choice(["faq", "chatterbot"]),
    default=None,
    help="A shipped corpus instead of --input: faq (Zaragoza construction FAQ, CC BY 4.0) or chatterbot.",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Raw QA file (see `mmsearch preprocess qa --help`).",
)
@click.option("--format", "fmt", type=click.Choice([f.value for f in QAFormat]), default="jsonl", show_default=True)
@click.option("--map", "field_map", default="", help="Field mapping, e.g. question=q,answer=a.")
@click.option("--category-sep", default="", help="Split string categories on this (format default if empty).")
@click.option("--ids", type=click.Choice(["field", "sequential"]), default=None, help="Where ids come from.")
@_common
def qa_command(
    *,
    demo: str | None,
    input_path: Path | None,
    fmt: str,
    field_map: str,
    category_sep: str,
    ids: str | None,
    **kw: Any,
) -> None:
    """A QA corpus: questions are encoded (field `question`), documents keep question, answer and category."""
    if (demo is None) == (input_path is None):
        raise click.UsageError("give exactly one of --demo or --input")
    if demo is not None:
        prepare: Callable[[Path], PreprocessReport] = functools.partial(_demo, demo)
    else:
        assert input_path is not None
        with reported():
            opts = QAOptions.for_format(
                fmt,
                parse_field_map(field_map),
                category_sep=category_sep,
                ids="sequential" if ids == "sequential" else ("field" if ids == "field" else None),
            )
        prepare = functools.partial(_qa, input_path, opts)
    _run(kw, "question", prepare)


@ingest.command("text")
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Documents, one JSON object a line (a BEIR corpus.jsonl, or any jsonl with --format jsonl).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice([f.value for f in DocumentFormat]),
    default=DocumentFormat.BEIR.value,
    show_default=True,
    help="beir: rows {_id (or id), title, text, ...}; jsonl: any fields, with --encode and --id-field.",
)
@click.option(
    "--encode",
    "template",
    default=None,
    help="The text to encode, made of the document's fields: '{title}. {body}' (default for beir: '{title}. {text}'; "
    "text between fields is left out where a field is empty).",
)
@click.option("--id-field", default=None, help="The integer id field (default: _id or id for beir, id for jsonl).")
@click.option(
    "--store",
    "store_fields",
    default=None,
    help="Comma-separated fields MongoDB keeps for display (default: every field of the input).",
)
@click.option(
    "--chunk-tokens",
    type=click.IntRange(min=0),
    default=None,
    help="Split each document into chunks of at most this many of the model's word pieces, at sentence boundaries "
    "where one fits (default: the model's window, its maximum length less special tokens and document prompt: "
    "254 for all-MiniLM-L6-v2). 0: no split, one vector per document (the model reads its first window only).",
)
@click.option(
    "--chunk-overlap",
    type=click.IntRange(min=0),
    default=None,
    help="Word pieces two consecutive chunks may share, whole sentences where they fit (default: an eighth of "
    "--chunk-tokens).",
)
@click.option(
    "--bm25/--no-bm25",
    default=True,
    show_default=True,
    help="Make the passages searchable by keywords (BM25 in Milvus, for the BM25Matcher; Milvus Lite or >= 2.5).",
)
@_common
def text_command(
    *,
    input_path: Path,
    fmt: str,
    template: str | None,
    id_field: str | None,
    store_fields: str | None,
    chunk_tokens: int | None,
    chunk_overlap: int | None,
    bm25: bool,
    **kw: Any,
) -> None:
    """A document corpus (articles, abstracts, manuals): each document's encode text is split into passages on the
    model's own tokens, every passage a vector in Milvus (field `passage`) with its document's id; MongoDB keeps
    the documents. Search gives one hit per document with its best passages. --filter-fields copies those
    document fields to every passage (none by default here); --lexical-field does not apply (see --bm25).

    \b
    Example, a BEIR collection:
      mmsearch ingest text --corpus cisi --model minilm --input cisi/corpus.jsonl
    """
    if kw["lexical_fields"]:
        raise click.UsageError("--lexical-field is for row corpora; document corpora index their passages: --bm25")
    with reported():
        opts = DocumentOptions.make(
            fmt,
            template=template,
            id_field=id_field,
            store=split_fields(store_fields) if store_fields is not None else None,
            filter_fields=split_fields(kw["filter_fields"]) or [],
        )
    kw["lexical_fields"] = [PASSAGE_FIELD] if bm25 else []
    chunker = functools.partial(
        _chunker, model_key=kw["model_key"], template=opts.template, tokens=chunk_tokens, overlap=chunk_overlap
    )
    _run(kw, PASSAGE_FIELD, functools.partial(_documents, input_path, opts), chunker)


@ingest.command("images")
@click.option("--demo", type=click.Choice(["photos"]), default=None, help="The scikit-image sample photos.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None, help="Image folder.")
@click.option("--base-url", default=None, help="URL prefix the images are served under (photos demo: file:// URLs).")
@_common
def images_command(*, demo: str | None, folder: Path | None, base_url: str | None, **kw: Any) -> None:
    """An image corpus: images are encoded with an image model (field `image`); documents keep name, url, image."""
    if (demo is None) == (folder is None):
        raise click.UsageError("give exactly one of --demo or --dir")
    if folder is not None and not base_url:
        raise click.UsageError("--base-url is required with --dir")
    if demo is not None:
        work = kw["work_dir"] or default_work_dir(kw["corpus"])
        prepare: Callable[[Path], PreprocessReport] = functools.partial(_photos, work / "raw", base_url)
    else:
        assert folder is not None
        assert base_url is not None
        prepare = functools.partial(_images, folder, base_url)
    _run(kw, "image", prepare)


def _demo(demo: str, out: Path) -> PreprocessReport:
    return prepare_demo(Demo(demo), out)


def _qa(path: Path, opts: QAOptions, out: Path) -> PreprocessReport:
    return preprocess_qa(path, out, opts)


def _documents(path: Path, opts: DocumentOptions, out: Path) -> PreprocessReport:
    return preprocess_documents(path, out, opts)


def _chunker(
    repo: ModelRepository, *, model_key: str, template: str, tokens: int | None, overlap: int | None
) -> Chunker:
    return Chunker.for_model(repo, model_key, template, tokens=tokens, overlap=overlap)


def _photos(work: Path, base_url: str | None, out: Path) -> PreprocessReport:
    return prepare_demo(Demo.PHOTOS, out, work_dir=work, base_url=base_url)


def _images(folder: Path, base_url: str, out: Path) -> PreprocessReport:
    return preprocess_images(folder, base_url, out)
