"""What runs on a Spark executor: encode one shard and write its documents; fill one shard into Milvus.

Each function takes a picklable context and one unit of work, and raises `partition_failure` with the shard and
its rows named, so the driver can say which part of the corpus failed and why. The encoder is loaded once per
executor Python worker (Spark reuses workers between tasks) from the model repository at the driver's path, or
from the files shipped with the job.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmsearch.model_repo import ModelRepoError, ModelRepository
from mmsearch.runtime.encoder import OnnxEncoder
from mmsearch.settings import MongoSettings
from offline.encode.manifest import ShardInfo, file_sha256
from offline.encode.pipeline import encode_shard_rows, field_value, image_prep, text_prep
from offline.encode.shards import read_shard, write_done_marker, write_shard
from offline.preprocess.records import CorpusSegment, read_segment
from offline.push.milvus_push import FillSpec, entity_batches, milvus_client
from offline.push.mongo_push import WriteCounts, mongo_database, write_documents
from offline.spark.session import is_partition_failure, partition_failure

MONGO_BATCH = 1000


@dataclass(frozen=True)
class EncodeContext:
    corpus: Path
    folder: Path
    repo_root: Path
    shipped: str  # the zip of the model folder sent with the job (SparkFiles); "": the repository at repo_root
    model_key: str
    model_sha256: str
    field: str
    is_image: bool
    batch_size: int
    threads: int  # ONNX Runtime intra-op threads per task (spark.task.cpus)
    job_key: str
    mongo: MongoSettings | None
    mongo_collection: str


@dataclass(frozen=True)
class ShardTask:
    segment: CorpusSegment
    encode: bool  # False: the shard is already encoded; only its documents are written


@dataclass(frozen=True)
class ShardResult:
    index: int
    shard: ShardInfo | None  # the shard written by this task
    documents: WriteCounts
    encode_seconds: float  # this task's encoding (read, tokenize, ONNX, write), for per-partition rates


# One encoder per executor Python worker and model file: loading a session costs far more than a shard of rows.
_ENCODERS: dict[tuple[str, str, str], OnnxEncoder] = {}


def describe(segment: CorpusSegment, corpus: Path) -> str:
    last = segment.first_row + segment.count - 1
    return f"shard {segment.index} (rows {segment.first_row}-{last}, from line {segment.first_line} of {corpus})"


def _repository(ctx: EncodeContext) -> ModelRepository:
    if not ctx.shipped:
        return ModelRepository(ctx.repo_root)
    from pyspark import SparkFiles

    root = Path(SparkFiles.getRootDirectory()) / "models" / Path(ctx.shipped).stem
    if not root.is_dir():  # first task of this executor: unpack beside, then rename (other workers may race)
        staging = Path(tempfile.mkdtemp(dir=root.parent.parent, prefix=".unpack-"))
        with zipfile.ZipFile(SparkFiles.get(ctx.shipped)) as zf:
            zf.extractall(staging)
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(root)
        except OSError:  # another worker finished first
            shutil.rmtree(staging, ignore_errors=True)
    return ModelRepository(root)


def _encoder(ctx: EncodeContext, repo: ModelRepository) -> OnnxEncoder:
    key = (str(repo.root), ctx.model_key, ctx.model_sha256)
    if key not in _ENCODERS:
        host = socket.gethostname()
        try:
            path = repo.onnx_path(ctx.model_key)
            if not path.is_file():
                raise ModelRepoError(f"{path} does not exist")
        except ModelRepoError as exc:
            raise partition_failure(
                f"executor on {host} cannot load model {ctx.model_key!r} from {repo.root}: {exc}. Executors need the "
                "model repository at the driver's path (a shared filesystem), or run with --ship-models"
            ) from exc
        if file_sha256(path) != ctx.model_sha256:
            raise partition_failure(
                f"executor on {host}: {path} is not the model file the driver planned with (sha256 differs); "
                "give every machine the same model repository"
            )
        _ENCODERS[key] = OnnxEncoder.from_repo(
            repo,
            ctx.model_key,
            providers=["auto"],
            intra_op_threads=ctx.threads,
            config_entries={"session.intra_op.allow_spinning": "0"},
        )
    return _ENCODERS[key]


def encode_shard(ctx: EncodeContext, task: ShardTask) -> ShardResult:
    """Encode one shard (unless done) and write its documents; the done marker comes last, so a shard with a
    marker has both its vectors and its documents."""
    seg = task.segment
    try:
        started = time.perf_counter()
        lines = read_segment(ctx.corpus, seg)
        shard = None
        if task.encode:
            values = [field_value(row, ctx.field, ctx.is_image, where=f"{ctx.corpus} line {n}") for n, row in lines]
            repo = _repository(ctx)
            encoder = _encoder(ctx, repo)
            prep = image_prep if ctx.is_image else text_prep
            vectors = encode_shard_rows(
                encoder, prep(repo, ctx.model_key, values), values, batch_size=ctx.batch_size, is_image=ctx.is_image
            )
            ids = np.asarray([row.id for _, row in lines], dtype=np.int64)
            shard = write_shard(ctx.folder, seg.index, seg.first_row, ids, vectors)
        encode_seconds = time.perf_counter() - started if shard is not None else 0.0
        counts = WriteCounts()
        if ctx.mongo is not None:
            rows = [row for _, row in lines]
            with mongo_database(ctx.mongo) as db:
                coll = db[ctx.mongo_collection]
                for s in range(0, len(rows), MONGO_BATCH):
                    counts.add(write_documents(coll, rows[s : s + MONGO_BATCH], fresh=False))
        if shard is not None:
            write_done_marker(ctx.folder, shard, ctx.job_key)
        return ShardResult(seg.index, shard, counts, encode_seconds)
    except Exception as exc:
        if is_partition_failure(exc):
            raise
        raise _failed(exc, seg, ctx.corpus) from exc


def fill_shard(spec: FillSpec, item: tuple[ShardInfo, CorpusSegment]) -> int:
    """Upsert one shard's entities into the collection being built; returns how many."""
    shard, seg = item
    try:
        ids, vectors = read_shard(spec.vectors, shard, spec.manifest.dim)
        rows = {row.id: row for _, row in read_segment(spec.corpus_path, seg)}
        written = 0
        with milvus_client(spec.settings) as client:
            for batch in entity_batches(spec, ids, vectors, rows):
                client.upsert(spec.collection, batch)
                written += len(batch)
        return written
    except Exception as exc:
        if is_partition_failure(exc):
            raise
        raise _failed(exc, seg, spec.corpus_path) from exc


def _failed(exc: Exception, seg: CorpusSegment, corpus: Path) -> RuntimeError:
    where = f"{describe(seg, corpus)} failed on {socket.gethostname()}"
    return partition_failure(f"{where}: {type(exc).__name__}: {exc}")
