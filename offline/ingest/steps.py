"""The ingest sequence: preprocess -> index (resumable), with the MongoDB upserts and the fill of the new Milvus
collection beside it -> Milvus flush, index, verify, alias switch -> prune. With the spark engine, executors encode
the shards, write their documents and fill the collection; the driver does the rest.

Documents go to MongoDB before the alias switch, so every id the new collection can return has its document;
documents of ids that left the corpus are removed only after the switch.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch.change_journal import supersede_applied
from mmsearch.chunking import DOCUMENT_FIELD, PASSAGE_FIELD, POSITION_FIELD, ChunkingError
from mmsearch.model_repo import ModelRepository
from mmsearch.settings import DocumentsSettings, MilvusSettings, MongoSettings, SparkSettings
from offline.encode.manifest import read_manifest
from offline.encode.pipeline import check_model, encode_corpus, encode_rows, fresh_manifest
from offline.ingest.live_writes import LiveMode, LiveRebuild, live_rebuild, merge_live
from offline.ingest.overlap import ShardFeed
from offline.preprocess.chunks import Chunker, chunk_rows, write_chunks
from offline.preprocess.records import CorpusError, CorpusRow, read_corpus
from offline.preprocess.rejects import PreprocessReport
from offline.push.errors import PushError
from offline.push.lexical import Analyzer
from offline.push.milvus_push import FillSpec, MilvusPushOptions, MilvusPushSummary, push_milvus
from offline.push.mongo_push import MongoPushSummary, prune_mongo, push_mongo
from offline.push.schema import IndexType, Metric, check_corpus_name
from offline.spark.jobs import MongoTarget, check_server_uri, encode_corpus_spark, spark_fill
from offline.spark.options import Engine
from offline.spark.session import spark_context

if TYPE_CHECKING:
    from pyspark import SparkContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOptions:
    corpus: str
    model_key: str
    field: str
    repo: ModelRepository
    work_dir: Path
    milvus: MilvusSettings
    mongo: MongoSettings
    batch_size: int = 32
    shard_size: int = 10_000
    filter_fields: list[str] | None = None
    # (`field` is taken by the encoded field's name in this class.)
    lexical_fields: list[str] = dataclasses.field(default_factory=list)
    analyzer: Analyzer = Analyzer.STANDARD
    index_type: IndexType = IndexType.HNSW
    metric: Metric = Metric.IP
    allow_model_change: bool = False
    skip_mongo: bool = False
    providers: list[str] | None = None
    engine: Engine = Engine.SEQUENTIAL
    spark: SparkSettings = dataclasses.field(default_factory=SparkSettings)
    ship_models: bool = False
    # A corpus with live writes: what the file means (None: refuse to rebuild it).
    live: LiveMode | None = None
    documents: DocumentsSettings = dataclasses.field(default_factory=DocumentsSettings)
    # A document corpus: `preprocess` writes document rows, which this splits into the chunk rows Milvus holds
    # (field `passage`); MongoDB keeps the documents. None: the rows are the corpus (QA, images).
    chunker: Chunker | None = None


@dataclass
class IngestReport:
    lines: list[str] = field(default_factory=list)

    def add(self, step: str, text: str) -> None:
        log.info("%s: %s", step, text)
        self.lines.append(f"{step}: {text}")


def default_work_dir(corpus: str) -> Path:
    return Path("var") / "ingest" / corpus


def run_ingest(opts: IngestOptions, preprocess: Callable[[Path], PreprocessReport]) -> IngestReport:
    """`preprocess` writes the normalised corpus to the path it is given and reports what it rejected.

    A corpus that has taken live writes is rebuilt under its applier lease, merged with them or replaced as
    `opts.live` says (offline/ingest/live_writes.py); without one of the two it is refused, before any work."""
    check_corpus_name(opts.corpus)
    check_model(opts.repo, opts.model_key, opts.field)  # a wrong model key fails before any store is touched
    if opts.engine is Engine.SPARK:
        check_server_uri(opts.milvus.uri)  # before any work: the executors write to it
    if opts.skip_mongo:
        return _ingest(opts, preprocess, None)
    with live_rebuild(opts.mongo, opts.documents, opts.corpus) as rebuild:
        live = rebuild.live
        if (live.upserted or live.deleted) and opts.live is None:
            raise PushError(
                f"corpus {opts.corpus!r} has taken live writes ({len(live.upserted)} documents written and "
                f"{len(live.deleted)} deleted through the documents API): say what the file means, --merge (keep "
                "them: live writes win over the file) or --replace (the file is the whole corpus: documents written "
                "live that it lacks are deleted)"
            )
        return _ingest(opts, preprocess, rebuild)


def _ingest(
    opts: IngestOptions,
    preprocess: Callable[[Path], PreprocessReport],
    rebuild: LiveRebuild | None,
) -> IngestReport:
    report = IngestReport()
    corpus_file = opts.work_dir / "corpus.jsonl"
    # What MongoDB gets: the corpus rows themselves, or a document corpus's documents (its chunks go to Milvus).
    documents_file = opts.work_dir / "documents.jsonl" if opts.chunker else corpus_file
    pre = preprocess(documents_file)
    report.add("preprocess", pre.summary())
    if pre.written == 0:
        raise PushError(f"preprocessing kept no rows (see {pre.rejects_file}); nothing to ingest")
    before_switch = None
    if rebuild is not None:
        live = rebuild.live
        if (live.upserted or live.deleted) and opts.live is not None:
            merged = merge_live(documents_file, opts.mongo, opts.corpus, live, opts.live)
            report.add("live", merged.text(opts.live))
        encode = functools.partial(
            encode_rows,
            repo=opts.repo,
            model_key=opts.model_key,
            field=opts.field,
            batch_size=opts.batch_size,
            providers=opts.providers,
        )
        split = functools.partial(_split, opts.chunker, opts.filter_fields or []) if opts.chunker else None
        before_switch = functools.partial(rebuild.replay, encode=encode, split=split)
    if opts.chunker is not None:
        _chunk(opts.chunker, opts, documents_file, corpus_file, report)
    vectors = opts.work_dir / f"vectors-{opts.model_key}"
    push = _push_options(opts, vectors)
    if opts.engine is Engine.SPARK:
        with spark_context(opts.spark, app=f"mmsearch ingest {opts.corpus}") as sc:
            _encode_on_spark(opts, sc, corpus_file, vectors, report, documents_file=documents_file)
            milvus = push_milvus(opts.milvus, push, fill=spark_fill(sc, opts.spark), before_switch=before_switch)
    else:
        milvus = _encode_and_fill(opts, corpus_file, vectors, report, before_switch, documents_file=documents_file)
    if rebuild is not None and rebuild.replayed.seqs:
        report.add("live", rebuild.replayed.text())
    report.add("milvus", milvus.text())
    if not opts.skip_mongo:
        also_keep = rebuild.replayed.upserted if rebuild is not None else frozenset()
        pruned = prune_mongo(opts.mongo, documents_file, opts.corpus, also_keep=also_keep)
        if pruned:
            report.add("mongo", f"removed {pruned} documents no longer in the corpus")
    if rebuild is not None and opts.live is LiveMode.REPLACE:
        gone = supersede_applied(
            rebuild.journal, opts.corpus, "replaced by `mmsearch ingest --replace`", keep=rebuild.replayed.seqs
        )
        report.add("live", f"{gone} applied live writes superseded by the file")
    if rebuild is not None:
        pending = rebuild.journal.count_documents({"corpus": opts.corpus, "state": "pending"})
        if pending:
            report.add("live", f"{pending} live writes pending: the search service applies them to what serves")
    return report


def _split(chunker: Chunker, filter_fields: list[str], row: CorpusRow) -> list[dict[str, Any]]:
    """A live document's passage rows, as the file's documents get theirs (a rebuild's replay)."""
    try:
        parts = chunker.chunks(row.id, row.fields(), where=f"live document {row.id}")
    except ChunkingError as exc:
        raise PushError(f"{exc}: it was accepted under another split; the alias was not switched") from exc
    return chunk_rows(row.id, row.fields(), parts, filter_fields)


def _chunk(
    chunker: Chunker, opts: IngestOptions, documents_file: Path, corpus_file: Path, report: IngestReport
) -> None:
    chunked = write_chunks(documents_file, corpus_file, chunker, opts.filter_fields or [])
    report.add("chunk", chunked.text(chunker))
    if chunked.chunks == 0:
        raise PushError(f"no document could be chunked (see {corpus_file.stem}.rejects.jsonl); nothing to ingest")


def _encode_and_fill(
    opts: IngestOptions,
    corpus_file: Path,
    vectors: Path,
    report: IngestReport,
    before_switch: Callable[[Any, FillSpec], None] | None,
    *,
    documents_file: Path,
) -> MilvusPushSummary:
    """Encode, with the MongoDB upserts and the Milvus fill of the new collection running beside the model: the
    documents need only the corpus, and each finished shard is upserted while the next one encodes. The
    collection is flushed, indexed, verified and switched to only after the last shard."""
    model, _ = check_model(opts.repo, opts.model_key, opts.field)
    try:
        total = sum(1 for _ in read_corpus(corpus_file))
    except CorpusError as exc:
        raise PushError(str(exc)) from exc
    planned = fresh_manifest(corpus_file, opts.repo, model, opts.field, total=total, shard_size=opts.shard_size)
    feed = ShardFeed()
    mongo_job: Future[MongoPushSummary] | None = None

    def documents_first(client: Any, spec: FillSpec) -> None:
        # The alias switches (and a rebuild replays live writes) only once every document is in MongoDB: a hit
        # always has its document, and no document write of the file lands after the replay's.
        if mongo_job is not None:
            mongo_job.result()
        if before_switch is not None:
            before_switch(client, spec)

    def push() -> MilvusPushSummary:
        try:
            return push_milvus(
                opts.milvus,
                _push_options(opts, vectors),
                fill=feed.fill,
                planned=planned,
                before_switch=documents_first,
            )
        finally:
            feed.stopped()

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingest-store") as pool:
        if not opts.skip_mongo:
            mongo_job = pool.submit(push_mongo, opts.mongo, documents_file, opts.corpus, progress=False)
        milvus_job = pool.submit(push)

        def on_shard(index: int) -> None:
            refused = milvus_job.exception() if milvus_job.done() else None
            if refused is not None:  # e.g. vectors of another model for this corpus: stop encoding now
                raise refused
            feed.put(index)

        try:
            enc = encode_corpus(
                corpus_file,
                opts.repo,
                opts.model_key,
                opts.field,
                vectors,
                batch_size=opts.batch_size,
                shard_size=opts.shard_size,
                replace_other_job=True,  # a changed corpus is encoded afresh; an unchanged one resumes
                providers=opts.providers,
                on_shard=on_shard,
            )
        except BaseException:
            feed.abort()
            if mongo_job is not None:
                mongo_job.cancel()
            raise
        done = read_manifest(vectors)
        feed.finish([s.index for s in done.shards] if done else [])
        report.add("index", enc.text())
        if mongo_job is not None:
            report.add("mongo", mongo_job.result().text())
        return milvus_job.result()


def _encode_on_spark(
    opts: IngestOptions,
    sc: SparkContext,
    corpus_file: Path,
    vectors: Path,
    report: IngestReport,
    *,
    documents_file: Path,
) -> None:
    # The executors write each shard's documents right after encoding it (and those of shards a previous run
    # finished), so the documents are in place before the alias switch here too.
    enc = encode_corpus_spark(
        corpus_file,
        opts.repo,
        opts.model_key,
        opts.field,
        vectors,
        sc=sc,
        spark=opts.spark,
        batch_size=opts.batch_size,
        shard_size=opts.shard_size,
        replace_other_job=True,
        ship_models=opts.ship_models,
        mongo=None if opts.skip_mongo or opts.chunker is not None else MongoTarget(opts.mongo, opts.corpus),
    )
    report.add("index", enc.text())
    if enc.documents is not None:
        report.add("mongo", enc.documents_text())
    if opts.chunker is not None and not opts.skip_mongo:
        # The executors encoded chunk rows; the documents are another file, written from here.
        report.add("mongo", push_mongo(opts.mongo, documents_file, opts.corpus, progress=False).text())


def _push_options(opts: IngestOptions, vectors: Path) -> MilvusPushOptions:
    rows = MilvusPushOptions(
        vectors=vectors,
        corpus=opts.corpus,
        filter_fields=opts.filter_fields,
        lexical_fields=opts.lexical_fields,
        analyzer=opts.analyzer,
        index_type=opts.index_type,
        metric=opts.metric,
        allow_model_change=opts.allow_model_change,
    )
    chunker = opts.chunker
    if chunker is None:
        return rows
    # Chunk rows: the document's id and the chunk's position are scalar fields (grouping, deletes); the passage is
    # BM25's text when asked (one passage's words score it, as its vector does), else a plain text field that a
    # hit shows.
    plain = [] if PASSAGE_FIELD in opts.lexical_fields else [PASSAGE_FIELD]
    return dataclasses.replace(
        rows,
        filter_fields=[DOCUMENT_FIELD, POSITION_FIELD, *plain, *(opts.filter_fields or [])],
        encode_template=chunker.template,
        chunk_tokens=chunker.options.tokens if chunker.options else 0,
        chunk_overlap=chunker.options.overlap if chunker.options else 0,
    )
