"""Ingest throughput, every figure against a baseline measured in the same run.

1. Encoding: `mmsearch index` (read jsonl, tokenize on the reader thread, ONNX on the main thread, write shards)
   against the raw in-memory `OnnxEncoder.encode_texts` of the same texts with the same model (real MiniLM).
   Target: index >= 0.85x raw, i.e. the I/O is hidden behind the encoding. Timed round-robin, best of
   `--repeats`. Also the full `ingest` (preprocess + index + MongoDB + Milvus Lite build/alias switch) once,
   and once more on `--scale-docs` rows against raw encoding of those texts: the rate between the two sizes is
   the ingest's once its fixed costs are paid (a 2000-row corpus measures mostly those).
2. Milvus: 100k synthetic L2-normalised 384-d vectors loaded by `push milvus` (upserts in batches of 1000,
   FLAT index so the run stays bounded) into Milvus Lite embedded; baseline = a plain pymilvus `insert` loop
   of the same rows (what a hand-written loader does). Reported: upsert vectors/s of both.
3. MongoDB (SecantusDB, started here): `push mongo` into an empty collection (bulk inserts) against one
   `insert_one` per document, and its re-run (bulk replace-by-_id upserts) against one `replace_one(upsert)`
   per document. Target: >= 10x.

4. With `--floor-docs N [N ...]` (written to bench/results/ingest-floor.json instead, nothing else measured): the
   full ingest of N rows into stores that run as their own server processes (a milvus-lite server, SecantusDB),
   against its floor in the same run: raw encoding of the same texts, plus a plain pymilvus load of those vectors
   into the same server (inserts of 1000, flush, the same HNSW index, load), plus plain `insert_many` of the same
   rows into the same MongoDB, one after another. Target: ingest <= 1.15x the floor.

With `--engine spark` (written to bench/results/ingest-spark.json instead): `mmsearch index` on Spark
`local[2]` against the sequential engine on the same corpus in the same run (docs/s, a ratio; warm runs
round-robin, plus the first, cold job), Spark's fixed start-up cost, one task's (one core's) encoding rate, and
from it the executor cores a 100-million-document corpus needs to be encoded in 8 hours.

    .venv/bin/python -m bench.bench_ingest [--repo models] [--docs 2000] [--vectors 100000] [--contended]
    .venv/bin/python -m bench.bench_ingest --engine spark [--docs 3000] [--spark-master local[2]]
    .venv/bin/python -m bench.bench_ingest --floor-docs 20000 100000
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import machine_info
from mmsearch import stores

log = logging.getLogger("bench.ingest")


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else 0.0


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _corpus(folder: Path, docs: int) -> tuple[Path, list[str]]:
    """The FAQ, then chatterbot pairs, up to `docs` rows (real text of varied length). Beyond their 3361 rows
    they repeat under new ids: the encoder and the stores do the same work for a repeated text."""
    from offline.preprocess.demo import prepare_demo

    folder.mkdir(parents=True, exist_ok=True)
    faq, chat = folder / "faq.jsonl", folder / "chat.jsonl"
    prepare_demo("faq", faq)
    prepare_demo("chatterbot", chat)
    real = [json.loads(line) for line in faq.read_text(encoding="utf-8").splitlines()]
    offset = len(real)
    for line in chat.read_text(encoding="utf-8").splitlines():
        row: dict[str, Any] = json.loads(line)
        row["id"] += offset
        real.append(row)
    rows = [{**real[i % len(real)], "id": i + 1} for i in range(docs)]
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path, [r["question"] for r in rows]


def bench_encoding(repo: Any, key: str, corpus: Path, texts: list[str], *, work: Path, repeats: int) -> dict[str, Any]:
    from mmsearch.runtime.encoder import OnnxEncoder
    from offline.encode.pipeline import encode_corpus

    encoder = OnnxEncoder.from_repo(repo, key, providers=["CPUExecutionProvider"])
    # The index pipeline turns ORT's spin-waiting off (its reader thread needs the core); the raw baseline is
    # timed both ways and the ratio taken against the faster one.
    quiet = OnnxEncoder.from_repo(
        repo, key, providers=["CPUExecutionProvider"], config_entries={"session.intra_op.allow_spinning": "0"}
    )

    def raw() -> None:
        encoder.encode_texts(texts, batch_size=32)

    def raw_no_spin() -> None:
        quiet.encode_texts(texts, batch_size=32)

    stream_rates: list[float] = []

    def index() -> None:
        out = work / "vec"
        shutil.rmtree(out, ignore_errors=True)
        summary = encode_corpus(
            corpus,
            repo,
            key,
            "question",
            out,
            batch_size=32,
            providers=["CPUExecutionProvider"],
            progress=False,
        )
        stream_rates.append(summary.docs_per_second)

    engines = {"raw_encode": raw, "raw_encode_no_spin": raw_no_spin, "index": index}
    for fn in engines.values():
        fn()  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, fn in engines.items():  # round-robin: load from other processes falls on all alike
            seconds[name].append(_timed(fn))
    n = len(texts)
    out: dict[str, Any] = {
        name: {
            "docs": n,
            "best_s": round(min(s), 3),
            "median_s": round(statistics.median(s), 3),
            "docs_per_s": _rate(n, min(s)),
        }
        for name, s in seconds.items()
    }
    best_raw = max(out["raw_encode"]["docs_per_s"], out["raw_encode_no_spin"]["docs_per_s"])
    # Wall clock of the whole command (input and model hashing, session creation, shard writes) ...
    out["index_over_raw"] = round(out["index"]["docs_per_s"] / best_raw, 3)
    # ... and the encoding stream alone (reader + ONNX + shard writes, after the model is loaded).
    out["index_stream_docs_per_s"] = round(max(stream_rates[1:]), 2)
    out["index_stream_over_raw"] = round(out["index_stream_docs_per_s"] / best_raw, 3)
    out["target_index_over_raw"] = 0.85
    return out


def bench_full_ingest(
    repo: Any, key: str, corpus: Path, *, work: Path, mongo_uri: str, raw_dps: float, milvus_uri: str | None = None
) -> dict[str, Any]:
    """One full ingest (fresh work dir, fresh database): preprocess + index + MongoDB + Milvus (Milvus Lite embedded
    in this process unless `milvus_uri` names a server)."""
    from mmsearch.settings import MilvusSettings, MongoSettings
    from offline.ingest.steps import IngestOptions, run_ingest
    from offline.preprocess.qa import QAOptions, preprocess_qa

    opts = IngestOptions(
        corpus="bench_qa",
        model_key=key,
        field="question",
        repo=repo,
        work_dir=work / "ingest",
        milvus=MilvusSettings(uri=milvus_uri or str(work / "ingest-milvus.db")),
        mongo=MongoSettings(uri=mongo_uri, database=f"bench_{uuid.uuid4().hex[:8]}"),
        providers=["CPUExecutionProvider"],
    )
    n = sum(1 for _ in corpus.open(encoding="utf-8"))
    seconds = _timed(lambda: run_ingest(opts, lambda out: preprocess_qa(corpus, out, QAOptions.for_format("jsonl"))))
    dps = _rate(n, seconds)
    return {"docs": n, "seconds": round(seconds, 3), "docs_per_s": dps, "over_raw_encode": round(dps / raw_dps, 3)}


def bench_ingest_at_scale(
    repo: Any, key: str, small: dict[str, Any], *, raw_small_s: float, docs: int, work: Path, mongo_uri: str
) -> dict[str, Any]:
    """The full ingest of a `docs`-row corpus against raw encoding of the same texts, and the rate between this
    size and the small run's: what each further document costs once the fixed costs (model loading, Milvus
    Lite's start, flush, index build, load and verification) are paid. That rate is what a large corpus sees."""
    from mmsearch.runtime.encoder import OnnxEncoder

    folder = work / "at-scale"
    corpus, texts = _corpus(folder, docs)
    encoder = OnnxEncoder.from_repo(repo, key, providers=["CPUExecutionProvider"])
    encoder.encode_texts(texts[:256], batch_size=32)  # warm-up
    raw_s = _timed(lambda: encoder.encode_texts(texts, batch_size=32))
    large = bench_full_ingest(repo, key, corpus, work=folder, mongo_uri=mongo_uri, raw_dps=_rate(docs, raw_s))
    extra = docs - int(small["docs"])
    raw_marginal = _rate(extra, raw_s - raw_small_s)
    ingest_marginal = _rate(extra, float(large["seconds"]) - float(small["seconds"]))
    return {
        "docs": docs,
        "raw_encode_s": round(raw_s, 3),
        "raw_encode_docs_per_s": _rate(docs, raw_s),
        "ingest_s": large["seconds"],
        "ingest_docs_per_s": large["docs_per_s"],
        "over_raw_encode": large["over_raw_encode"],
        "marginal_raw_docs_per_s": raw_marginal,
        "marginal_ingest_docs_per_s": ingest_marginal,
        "marginal_over_raw_encode": round(ingest_marginal / raw_marginal, 3) if raw_marginal else 0.0,
        # Where the line through the two ingest points meets zero documents, less raw encoding's own.
        "fixed_cost_s": round(
            float(small["seconds"])
            - int(small["docs"]) / ingest_marginal
            - (raw_small_s - int(small["docs"]) / raw_marginal),
            3,
        )
        if ingest_marginal and raw_marginal
        else None,
    }


def bench_floor(repo: Any, key: str, docs: int, *, work: Path, mongo_uri: str, milvus_uri: str) -> dict[str, Any]:
    """The full ingest of `docs` rows against the sum of its parts done plainly, same stores, same run."""
    from pymongo import MongoClient

    from mmsearch.runtime.encoder import OnnxEncoder

    folder = work / f"floor-{docs}"
    corpus, texts = _corpus(folder, docs)
    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    # As the index pipeline runs ORT: no spin-waiting (the stores and the reader share the cores).
    encoder = OnnxEncoder.from_repo(
        repo, key, providers=["CPUExecutionProvider"], config_entries={"session.intra_op.allow_spinning": "0"}
    )
    encoder.encode_texts(texts[:256], batch_size=32)  # warm-up
    vectors: list[Any] = []
    encode_s = _timed(lambda: vectors.append(encoder.encode_texts(texts, batch_size=32)))
    milvus_s = _timed(lambda: plain_milvus_load(milvus_uri, f"floor_{docs}", vectors[0]))
    mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        coll = mongo[f"floor_{uuid.uuid4().hex[:8]}"]["rows"]

        def plain_mongo() -> None:
            for s in range(0, len(rows), 1000):
                coll.insert_many([dict(r) for r in rows[s : s + 1000]], ordered=False)

        mongo_s = _timed(plain_mongo)
        mongo.drop_database(coll.database.name)
    finally:
        mongo.close()
    floor_s = encode_s + milvus_s + mongo_s
    full = bench_full_ingest(
        repo, key, corpus, work=folder, mongo_uri=mongo_uri, raw_dps=_rate(docs, encode_s), milvus_uri=milvus_uri
    )
    return {
        "docs": docs,
        "raw_encode_s": round(encode_s, 3),
        "plain_milvus_load_s": round(milvus_s, 3),
        "plain_mongo_insert_s": round(mongo_s, 3),
        "floor_s": round(floor_s, 3),
        "ingest_s": full["seconds"],
        "ingest_docs_per_s": full["docs_per_s"],
        "ingest_over_floor": round(float(full["seconds"]) / floor_s, 3),
        "target_ingest_over_floor": 1.15,
    }


def plain_milvus_load(uri: str, name: str, vectors: Any, field: str = "question_emb") -> None:
    """What a hand-written loader does: create, insert in batches of 1000, flush, index (push's HNSW), load."""
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=uri)
    try:
        if client.has_collection(name):
            client.drop_collection(name)
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field(field, DataType.FLOAT_VECTOR, dim=int(vectors.shape[1]))
        client.create_collection(name, schema=schema)
        for s in range(0, len(vectors), 1000):
            batch = vectors[s : s + 1000]
            client.insert(name, [{"id": s + i + 1, field: v.tolist()} for i, v in enumerate(batch)])
        client.flush(name)
        index = client.prepare_index_params()
        index.add_index(field, index_type="HNSW", metric_type="IP", params={"M": 16, "efConstruction": 200})
        client.create_index(name, index)
        client.load_collection(name)
    finally:
        client.close()


def start_milvus_lite_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    from tests.fixtures.ports import free_port, wait_until
    from tests.fixtures.stores import milvus_lite_server_cmd, milvus_reachable

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log_file = (folder / "milvus-lite.log").open("wb")
    proc = subprocess.Popen(milvus_lite_server_cmd(folder / "milvus", port), stdout=log_file, stderr=subprocess.STDOUT)
    wait_until(lambda: milvus_reachable(uri), what="milvus-lite server", timeout=120, proc=proc)
    return proc, uri


def bench_spark(
    repo: Any, key: str, corpus: Path, *, work: Path, repeats: int, master: str, shard_size: int
) -> dict[str, Any]:
    """Sequential vs Spark on the same corpus, index only (the work Spark distributes), one SparkContext."""
    from mmsearch.settings import SparkSettings
    from offline.encode.pipeline import encode_corpus
    from offline.spark.jobs import encode_corpus_spark
    from offline.spark.session import spark_context

    settings = SparkSettings(master=master)
    n = sum(1 for _ in corpus.open(encoding="utf-8"))
    seq_s: list[float] = []
    spark_s: list[float] = []
    task_rates: list[float] = []
    started = time.perf_counter()
    with spark_context(settings, app="bench-ingest") as sc:
        startup_s = time.perf_counter() - started
        for r in range(repeats + 1):  # round 0 is the cold one: model loads in the driver and in every worker
            t0 = time.perf_counter()
            encode_corpus(corpus, repo, key, "question", work / f"seq-{r}", shard_size=shard_size, progress=False)
            seq_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            summary = encode_corpus_spark(
                corpus,
                repo,
                key,
                "question",
                work / f"spark-{r}",
                sc=sc,
                spark=settings,
                shard_size=shard_size,
                progress=False,
            )
            spark_s.append(time.perf_counter() - t0)
            task_rates.append(summary.rows_per_task_second)
            parallelism = sc.defaultParallelism
    seq_dps, spark_dps = _rate(n, min(seq_s[1:])), _rate(n, min(spark_s[1:]))
    per_core = max(task_rates[1:])
    need = 100_000_000 / (8 * 3600)  # docs/s for 100M documents in 8 hours
    efficiency = spark_dps / (parallelism * per_core) if per_core else 0.0
    return {
        "docs": n,
        "shard_size": shard_size,
        "partitions": -(-n // shard_size),
        "master": master,
        "default_parallelism": parallelism,
        "spark_startup_s": round(startup_s, 2),
        "sequential": {"best_s": round(min(seq_s[1:]), 3), "docs_per_s": seq_dps, "cold_s": round(seq_s[0], 3)},
        "spark": {"best_s": round(min(spark_s[1:]), 3), "docs_per_s": spark_dps, "cold_s": round(spark_s[0], 3)},
        "spark_over_sequential": round(spark_dps / seq_dps, 3),
        # What a user sees for one small job: start-up and the cold first job included, against a cold sequential.
        "spark_over_sequential_cold_with_startup": round(seq_s[0] / (startup_s + spark_s[0]), 3),
        "one_task_docs_per_s": round(per_core, 2),
        "parallel_efficiency_here": round(efficiency, 3),
        "estimate_100m_docs_in_8h": {
            "docs_per_s_needed": round(need, 1),
            "executor_cores_at_measured_task_rate": math.ceil(need / per_core) if per_core else None,
            "executor_cores_with_this_efficiency": math.ceil(need / (per_core * efficiency)) if efficiency else None,
            "assumes": "CPU executor cores as fast as this machine's, one ONNX Runtime thread per task "
            "(spark.task.cpus=1), the MiniLM model, encoding only (document and Milvus writes scale with the "
            "stores, not with Spark)",
        },
    }


def synthetic_vectors(folder: Path, n: int, dim: int) -> Path:
    from offline.encode.manifest import IndexManifest, file_sha256, write_manifest
    from offline.encode.shards import write_shard

    folder.mkdir(parents=True)
    corpus = folder / "corpus.jsonl"
    cats = ["alpha", "beta", "gamma", "delta"]
    with corpus.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "question": f"q{i}", "answer": "a", "category": [cats[i % 4]]}) + "\n")
    rng = np.random.default_rng(0)
    shards, shard_size = [], 10_000
    for k, start in enumerate(range(0, n, shard_size)):
        count = min(shard_size, n - start)
        vec = rng.normal(size=(count, dim)).astype(np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        shards.append(write_shard(folder, k, start, np.arange(start, start + count, dtype=np.int64), vec))
    manifest = IndexManifest(
        model_key="synthetic",
        model_kind="text_embedding",
        model_sha256="0" * 64,
        dim=dim,
        field="question",
        vector_field="question_emb",
        input_path=str(corpus),
        input_sha256=file_sha256(corpus),
        total=n,
        shard_size=shard_size,
        shards=shards,
        complete=True,
    )
    write_manifest(folder, manifest)
    return folder


def bench_milvus(work: Path, n: int, dim: int) -> dict[str, Any]:
    from pymilvus import DataType, MilvusClient

    from mmsearch.settings import MilvusSettings
    from offline.encode.shards import iter_shards, open_vectors
    from offline.push.milvus_push import MilvusPushOptions, push_milvus
    from offline.push.schema import IndexType

    folder = synthetic_vectors(work / "synthetic", n, dim)
    uri = str(work / "bench-milvus.db")
    summary = push_milvus(
        MilvusSettings(uri=uri, timeout_seconds=60),
        MilvusPushOptions(vectors=folder, corpus="bench_vectors", index_type=IndexType.FLAT, progress=False),
    )
    ours: dict[str, Any] = {
        "vectors": n,
        "dim": dim,
        "upsert_s": round(summary.upsert_seconds, 3),
        "upsert_vectors_per_s": _rate(n, summary.upsert_seconds),
        "total_s_with_flush_index_load_verify": round(summary.seconds, 3),
        "index": "FLAT",
    }
    # Baseline: plain insert loop, same rows and batch size, into another collection of the same file.
    manifest = open_vectors(folder)
    client = stores.milvus_client(MilvusSettings(uri=uri))
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("question_emb", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("category", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=8, max_length=64)
    client.create_collection("baseline_insert", schema=schema)
    cats = ["alpha", "beta", "gamma", "delta"]
    start = time.perf_counter()
    for ids, vec in iter_shards(folder, manifest):
        for s in range(0, len(ids), 1000):
            client.insert(
                "baseline_insert",
                [
                    {"id": int(i), "question_emb": v.tolist(), "category": [cats[int(i) % 4]]}
                    for i, v in zip(ids[s : s + 1000], vec[s : s + 1000], strict=True)
                ],
            )
    baseline_s = time.perf_counter() - start
    client.close()
    baseline: dict[str, Any] = {
        "vectors": n,
        "insert_s": round(baseline_s, 3),
        "insert_vectors_per_s": _rate(n, baseline_s),
    }
    return {
        "push_milvus_upsert": ours,
        "baseline_plain_insert": baseline,
        "upsert_over_plain_insert": round(ours["upsert_vectors_per_s"] / baseline["insert_vectors_per_s"], 3),
        "server": "Milvus Lite embedded (pymilvus MilvusClient on a local .db)",
    }


def bench_mongo(work: Path, mongo_uri: str, n: int) -> dict[str, Any]:
    from pymongo import MongoClient

    from mmsearch.settings import MongoSettings
    from offline.preprocess.records import read_corpus
    from offline.push.mongo_push import document, push_mongo

    corpus = work / "mongo-corpus.jsonl"
    with corpus.open("w", encoding="utf-8") as f:
        for i in range(n):
            row = {"id": i, "question": f"Question number {i}?", "answer": "An answer " * 20, "category": ["c"]}
            f.write(json.dumps(row) + "\n")
    database = f"bench_{uuid.uuid4().hex[:8]}"
    settings = MongoSettings(uri=mongo_uri, database=database)
    summary = push_mongo(settings, corpus, "bulk", progress=False)  # empty collection: bulk inserts
    rerun = push_mongo(settings, corpus, "bulk", progress=False)  # all present: bulk replace-by-_id upserts
    corpus_rows = [row for _, row in read_corpus(corpus)]
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    coll = client[database]["one_by_one"]
    coll.create_index("queryid", unique=True)
    start = time.perf_counter()
    for corpus_row in corpus_rows:
        coll.insert_one(document(corpus_row))
    single_s = time.perf_counter() - start
    # The idempotent per-row equivalent of what push mongo does: one replace_one(upsert) round trip per row.
    coll = client[database]["one_by_one_upsert"]
    coll.create_index("queryid", unique=True)
    start = time.perf_counter()
    for corpus_row in corpus_rows:
        coll.replace_one({"_id": corpus_row.id}, document(corpus_row), upsert=True)
    single_upsert_s = time.perf_counter() - start
    client.drop_database(database)
    client.close()
    bulk = {"docs": n, "seconds": round(summary.seconds, 3), "docs_per_s": _rate(n, summary.seconds)}
    bulk_rerun = {"docs": n, "seconds": round(rerun.seconds, 3), "docs_per_s": _rate(n, rerun.seconds)}
    single = {"docs": n, "seconds": round(single_s, 3), "docs_per_s": _rate(n, single_s)}
    single_upsert = {"docs": n, "seconds": round(single_upsert_s, 3), "docs_per_s": _rate(n, single_upsert_s)}
    return {
        "push_mongo_first_load_bulk_inserts": bulk,
        "push_mongo_rerun_bulk_upserts": bulk_rerun,
        "baseline_insert_one_per_row": single,
        "baseline_replace_one_upsert_per_row": single_upsert,
        "bulk_over_one_per_row": round(bulk["docs_per_s"] / single["docs_per_s"], 2),
        "rerun_bulk_upserts_over_upsert_per_row": round(bulk_rerun["docs_per_s"] / single_upsert["docs_per_s"], 2),
        "target_bulk_over_one_per_row": 10.0,
        "server": "SecantusDB 0.7.0b3 (MongoDB wire protocol, a Python server) on 127.0.0.1",
    }


def start_secantus(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    from tests.fixtures.ports import free_port, wait_until
    from tests.fixtures.stores import mongo_reachable

    port = free_port()
    uri = f"mongodb://127.0.0.1:{port}"
    log_file = (folder / "secantusd.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "secantusd-py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(folder / "mongo"),
            "--log-level",
            "WARNING",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    wait_until(lambda: mongo_reachable(uri), what="SecantusDB", timeout=60, proc=proc)
    return proc, uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("models"), help="model repository with the text model")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--docs", type=int, default=2000, help="texts for the encoding comparison")
    parser.add_argument(
        "--scale-docs", type=int, default=20_000, help="texts for the full ingest at scale (2 shards by default)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vectors", type=int, default=100_000, help="synthetic vectors for the Milvus load")
    parser.add_argument("--mongo-docs", type=int, default=5000)
    parser.add_argument("--contended", action="store_true", help="other work shared the CPU during the run")
    parser.add_argument("--engine", choices=["sequential", "spark"], default="sequential")
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--shard-size", type=int, default=250, help="rows per shard (one Spark task each)")
    parser.add_argument(
        "--floor-docs",
        type=int,
        nargs="+",
        default=None,
        help="only the full ingest of these sizes against raw encode + plain store writes (separate store servers)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/ingest[-spark|-floor].json")
    args = parser.parse_args()
    if args.out is None:
        name = "ingest-spark" if args.engine == "spark" else "ingest-floor" if args.floor_docs else "ingest"
        args.out = Path(f"bench/results/{name}.json")
    # TERM (timeout, a stopped job) unwinds like Ctrl-C, so the SecantusDB started here is stopped by PID.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("offline").setLevel(logging.WARNING)

    from mmsearch.model_repo import ModelRepository
    from tests.fixtures.ports import stop_process

    repo = ModelRepository(args.repo)
    if args.model not in repo:
        sys.exit(f"model {args.model!r} is not in {args.repo}: export it first (mmsearch export sbert ...)")
    load_before = os.getloadavg()
    if args.engine == "spark":
        with tempfile.TemporaryDirectory(prefix="bench-ingest-spark-") as tmp:
            corpus, _ = _corpus(Path(tmp), args.docs)
            spark = bench_spark(
                repo,
                args.model,
                corpus,
                work=Path(tmp),
                repeats=args.repeats,
                master=args.spark_master,
                shard_size=args.shard_size,
            )
        _write(
            args.out,
            {
                "benchmark": "ingest-spark",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine_info(contended=args.contended),
                "load_average_at_start": list(load_before),
                "model": args.model,
                "spark": spark,
            },
        )
        return
    if args.floor_docs:
        _write(args.out, _floor_run(repo, args.model, args.floor_docs, contended=args.contended, load=load_before))
        return
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        proc, mongo_uri = start_secantus(work)
        try:
            corpus, texts = _corpus(work, args.docs)
            log.info("encoding: %d texts, %d repeats", len(texts), args.repeats)
            encoding = bench_encoding(repo, args.model, corpus, texts, work=work, repeats=args.repeats)
            log.info("full ingest")
            raw_dps = max(
                float(encoding["raw_encode"]["docs_per_s"]), float(encoding["raw_encode_no_spin"]["docs_per_s"])
            )
            full = bench_full_ingest(repo, args.model, corpus, work=work, mongo_uri=mongo_uri, raw_dps=raw_dps)
            log.info("full ingest at scale: %d texts", args.scale_docs)
            full["at_scale"] = bench_ingest_at_scale(
                repo,
                args.model,
                full,
                raw_small_s=float(encoding["raw_encode"]["best_s"]),
                docs=args.scale_docs,
                work=work,
                mongo_uri=mongo_uri,
            )
            log.info("milvus: %d vectors", args.vectors)
            milvus = bench_milvus(work, args.vectors, 384)
            log.info("mongo: %d documents", args.mongo_docs)
            mongo = bench_mongo(work, mongo_uri, args.mongo_docs)
        finally:
            stop_process(proc)
    result = {
        "benchmark": "ingest",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(contended=args.contended),
        "load_average_at_start": list(load_before),
        "model": args.model,
        "encoding": encoding,
        "full_ingest": full,
        "milvus": milvus,
        "mongo": mongo,
    }
    _write(args.out, result)


def _floor_run(repo: Any, key: str, sizes: list[int], *, contended: bool, load: tuple[float, ...]) -> dict[str, Any]:
    from tests.fixtures.ports import stop_process

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-floor-") as tmp:
        work = Path(tmp)
        mongo_proc, mongo_uri = start_secantus(work)
        milvus_proc, milvus_uri = start_milvus_lite_server(work)
        try:
            for n in sizes:
                log.info("floor: %d rows", n)
                results.append(bench_floor(repo, key, n, work=work, mongo_uri=mongo_uri, milvus_uri=milvus_uri))
                log.info("floor: %s", json.dumps(results[-1]))
        finally:
            stop_process(milvus_proc)
            stop_process(mongo_proc)
    return {
        "benchmark": "ingest-floor",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(contended=contended),
        "load_average_at_start": list(load),
        "model": key,
        "stores": "milvus-lite server and SecantusDB, each its own process on this machine",
        "results": results,
    }


def _write(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
