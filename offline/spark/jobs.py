"""The driver side of the Spark engine: plan shards, run them on executors, record what they finished.

`encode_corpus_spark` keeps every guarantee of the sequential `encode_corpus`: the same vectors folder and
manifest (a later sequential run or `push milvus` reads it), resume after a kill (a shard with a done marker is
not encoded again, even if the driver died before recording it), another job's vectors refused or replaced.
`spark_fill` is the Milvus fill of `push_milvus` run on executors.
"""

from __future__ import annotations

import functools
import logging
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mmsearch.model_repo import ModelRepository
from mmsearch.settings import MongoSettings, SparkSettings
from offline.encode.manifest import file_sha256, write_manifest
from offline.encode.pipeline import EncodeError, EncodeSummary, check_model, fresh_manifest, plan_job
from offline.encode.shards import open_vectors
from offline.preprocess.records import CorpusError, CorpusRow, CorpusSegment, plan_segments
from offline.push.errors import PushError
from offline.push.milvus_push import Fill, FillSpec
from offline.push.mongo_push import WriteCounts, check_written, ensure_queryid_index, mongo_database
from offline.spark.session import partition_count, run_on_executors
from offline.spark.tasks import EncodeContext, ShardTask, encode_shard, fill_shard

if TYPE_CHECKING:
    from pyspark import SparkContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MongoTarget:
    settings: MongoSettings
    collection: str


@dataclass(frozen=True)
class SparkEncodeSummary:
    encode: EncodeSummary
    documents: WriteCounts | None
    mongo: MongoTarget | None
    partitions: int
    task_seconds: float  # summed over the tasks that encoded: rows / task_seconds = one task's (one core's) rate

    @property
    def rows_per_task_second(self) -> float:
        return self.encode.encoded / self.task_seconds if self.task_seconds > 0 else 0.0

    def text(self) -> str:
        return f"{self.encode.text()} on Spark ({self.partitions} partitions)"

    def documents_text(self) -> str:
        if self.documents is None or self.mongo is None:
            return ""
        c = self.documents
        return (
            f"{self.mongo.settings.database}.{self.mongo.collection}: {c.acknowledged} documents written by the "
            f"executors ({c.inserted} new, {c.updated} updated, {c.unchanged} unchanged)"
        )


def segments(corpus: Path, shard_size: int) -> list[CorpusSegment]:
    try:
        return plan_segments(corpus, shard_size)
    except CorpusError as exc:
        raise EncodeError(str(exc)) from exc


def encode_corpus_spark(
    corpus: Path,
    repo: ModelRepository,
    model_key: str,
    field: str,
    folder: Path,
    *,
    sc: SparkContext,
    spark: SparkSettings,
    batch_size: int = 32,
    shard_size: int = 10_000,
    restart: bool = False,
    replace_other_job: bool = False,
    ship_models: bool = False,
    mongo: MongoTarget | None = None,
    progress: bool | None = None,
) -> SparkEncodeSummary:
    """Encode `field` of every row into shards under `folder` on Spark executors; with `mongo`, the executors also
    write every row's document (finished shards included, so the documents are complete after any re-run)."""
    if batch_size < 1 or shard_size < 1:
        raise EncodeError("--batch-size and --shard-size must be at least 1")
    model, is_image = check_model(repo, model_key, field)
    segs = segments(corpus, shard_size)
    if not segs:
        raise EncodeError(f"{corpus} has no rows to encode")
    total = sum(s.count for s in segs)
    folder.mkdir(parents=True, exist_ok=True)
    fresh = fresh_manifest(corpus, repo, model, field, total=total, shard_size=shard_size)
    plan = plan_job(folder, fresh, restart, replace_other_job)
    write_manifest(folder, plan)  # claims the folder for this job before any executor writes into it
    done_before = len(plan.shards)
    missing = set(plan.missing_shards())
    tasks = [ShardTask(s, encode=s.index in missing) for s in segs if mongo is not None or s.index in missing]
    if mongo is not None:
        with mongo_database(mongo.settings) as db:  # reachable, and the unique index exists before the writes
            ensure_queryid_index(db[mongo.collection])
    shipped = ship_model(sc, repo, model_key, folder / ".ship") if ship_models else ""
    ctx = EncodeContext(
        corpus=corpus.resolve(),
        folder=folder.resolve(),
        repo_root=repo.root.resolve(),
        shipped=shipped,
        model_key=model_key,
        model_sha256=plan.model_sha256,
        field=field,
        is_image=is_image,
        batch_size=batch_size,
        threads=int(sc.getConf().get("spark.task.cpus", "1") or "1"),
        job_key=plan.job_key,
        mongo=mongo.settings if mongo else None,
        mongo_collection=mongo.collection if mongo else "",
    )
    started = time.perf_counter()
    partitions = partition_count(spark.partitions, len(tasks))
    results = run_on_executors(
        sc,
        tasks,
        functools.partial(encode_shard, ctx),
        partitions=spark.partitions,
        desc="spark shards",
        progress=progress,
    )
    seconds = time.perf_counter() - started
    for result in results:
        if result.shard is not None:
            plan.add_shard(result.shard)
    write_manifest(folder, plan)
    if not plan.complete:  # every task returned, so this is a bug, not a crash: say so plainly
        raise EncodeError(f"{folder}: {len(plan.missing_shards())} shards are missing after the Spark job")
    encoded = sum(r.shard.count for r in results if r.shard is not None)
    documents = None
    if mongo is not None:
        documents = WriteCounts()
        for result in results:
            documents.add(result.documents)
        with mongo_database(mongo.settings) as db:
            stored = db[mongo.collection].count_documents({})
        check_written(mongo.settings, mongo.collection, documents, total, stored, exact=False)
    summary = EncodeSummary(folder, model_key, plan.dim, total, encoded, done_before, len(plan.shards), seconds)
    task_seconds = sum(r.encode_seconds for r in results)
    return SparkEncodeSummary(summary, documents, mongo, partitions, task_seconds)


def ship_model(sc: SparkContext, repo: ModelRepository, model_key: str, staging: Path) -> str:
    """Send the model's folder with the job, as one zip (Spark ships single files to a cluster, not folders);
    each executor unpacks it once. Returns the zip's name, which the executors look it up by."""
    source = repo.path(model_key)
    staging.mkdir(parents=True, exist_ok=True)
    archive = staging / f"{model_key}-{file_sha256(repo.onnx_path(model_key))[:12]}.zip"
    if not archive.is_file():
        partial = archive.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as zf:
            for path in sorted(source.rglob("*")):
                if path.is_file():
                    zf.write(path, Path(model_key) / path.relative_to(source))
        partial.replace(archive)
    sc.addFile(str(archive))
    log.info("shipping %s (%.0f MB) to the executors", source, archive.stat().st_size / 1e6)
    return archive.name


def spark_fill(sc: SparkContext, spark: SparkSettings, *, progress: bool | None = None) -> Fill:
    """A `push_milvus` fill that upserts each shard from an executor (the collection must be on a Milvus server
    the executors reach: an embedded Milvus Lite file opens in one process only). The driver's parsed rows are
    not used: each executor reads its own segment of the corpus."""

    def fill(spec: FillSpec, rows: Mapping[int, CorpusRow]) -> None:
        manifest = open_vectors(spec.vectors)
        by_index = {s.index: s for s in segments(spec.corpus_path, manifest.shard_size)}
        items = [(shard, by_index[shard.index]) for shard in manifest.shards]
        written = run_on_executors(
            sc,
            items,
            functools.partial(fill_shard, spec),
            partitions=spark.partitions,
            desc="spark milvus",
            progress=progress,
        )
        if sum(written) != manifest.total:
            raise PushError(f"executors upserted {sum(written)} of {manifest.total} vectors into {spec.collection}")

    return fill


def check_server_uri(uri: str) -> None:
    if "://" not in uri:
        raise PushError(
            f"the spark engine writes Milvus from its executors, which cannot open the embedded Milvus Lite file "
            f"{uri!r} (one process only): point --milvus-uri at a Milvus server (http://host:19530; locally "
            "`mmsearch local up` runs one), or use --engine sequential"
        )
