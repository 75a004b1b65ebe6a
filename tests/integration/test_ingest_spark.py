"""`--engine spark` on a real local[2] Spark (Java 17, pyspark): the same corpus through both engines gives the same
ids, documents and vectors; a run killed mid-way completes on re-run with exact counts; a failing partition is named.

Milvus is the milvus-lite server (executors cannot open an embedded Milvus Lite file), MongoDB is SecantusDB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from mmsearch import stores
from mmsearch.model_repo import ModelRepository
from mmsearch.settings import MilvusSettings
from offline.encode.cli import index
from offline.encode.manifest import read_manifest
from offline.encode.shards import iter_shards, open_vectors
from offline.ingest.cli import ingest
from offline.preprocess.demo import prepare_demo
from offline.push.milvus_push import count_rows
from tests.fixtures.ir import ir_collection
from tests.fixtures.models import MINILM_KEY, TINY_CLIP_IMAGE

pytestmark = pytest.mark.integration

SPARK = ["--engine", "spark", "--spark-master", "local[2]"]


@pytest.fixture
def database(mongo_uri: str) -> Iterator[str]:
    from pymongo import MongoClient

    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    client.drop_database(name)
    client.close()


def _env(model_repo: ModelRepository, milvus: str, mongo: str, database: str) -> dict[str, str]:
    return {
        "MMSEARCH_MODEL_REPO": str(model_repo.root),
        "MMSEARCH_MILVUS__URI": milvus,
        "MMSEARCH_MONGO__URI": mongo,
        "MMSEARCH_MONGO__DATABASE": database,
    }


def _milvus_rows(uri: str, alias: str, field: str) -> dict[int, np.ndarray[Any, Any]]:
    client = stores.milvus_client(MilvusSettings(uri=uri))
    try:
        rows = client.query(alias, filter="id >= 0", output_fields=["id", field], limit=16_384)
        return {int(r["id"]): np.asarray(r[field], dtype=np.float32) for r in rows}
    finally:
        client.close()


def _documents(mongo_uri: str, database: str, collection: str) -> dict[int, dict[str, Any]]:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        return {d["_id"]: d for d in client[database][collection].find({})}
    finally:
        client.close()


def _assert_same(uri: str, mongo_uri: str, database: str, *, pair: tuple[str, str], work: tuple[Path, Path]) -> None:
    seq, spark = (_milvus_rows(uri, alias, "question_emb") for alias in pair)
    assert sorted(spark) == sorted(seq)
    worst = max(float(np.abs(seq[i] - spark[i]).max()) for i in seq)
    assert worst <= 1e-6, f"vectors differ by {worst}"
    assert _documents(mongo_uri, database, pair[1]) == _documents(mongo_uri, database, pair[0])
    # The vector folders agree too (Milvus stores what they hold).
    folders = [next(w.glob("vectors-*")) for w in work]
    ids_vecs = [list(iter_shards(f, open_vectors(f))) for f in folders]
    a_ids = np.concatenate([i for i, _ in ids_vecs[0]])
    b_ids = np.concatenate([i for i, _ in ids_vecs[1]])
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_allclose(
        np.concatenate([v for _, v in ids_vecs[0]]), np.concatenate([v for _, v in ids_vecs[1]]), atol=1e-6
    )


def test_spark_and_sequential_ingest_agree_and_spark_reruns_change_nothing(
    milvus_lite_server_uri: str, mongo_uri: str, database: str, model_repo: ModelRepository, tmp_path: Path
) -> None:
    env = _env(model_repo, milvus_lite_server_uri, mongo_uri, database)
    seq, spark = f"seq_{uuid.uuid4().hex[:8]}", f"spk_{uuid.uuid4().hex[:8]}"
    common = ["qa", "--demo", "faq", "--model", MINILM_KEY, "--shard-size", "100"]

    first = CliRunner().invoke(ingest, [*common, "--corpus", seq, "--work-dir", str(tmp_path / "seq")], env=env)
    assert first.exit_code == 0, first.output
    res = CliRunner().invoke(
        ingest, [*common, *SPARK, "--corpus", spark, "--work-dir", str(tmp_path / "spark")], env=env
    )
    assert res.exit_code == 0, res.output
    assert "index: encoded 503 of 503 rows" in res.output
    assert "on Spark (6 partitions)" in res.output
    assert "503 documents written by the executors (503 new" in res.output
    assert "503 vectors upserted" in res.output

    work = (tmp_path / "seq", tmp_path / "spark")
    _assert_same(milvus_lite_server_uri, mongo_uri, database, pair=(seq, spark), work=work)

    again = CliRunner().invoke(
        ingest, [*common, *SPARK, "--corpus", spark, "--work-dir", str(tmp_path / "spark")], env=env
    )
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output
    assert "(0 new, 0 updated, 503 unchanged)" in again.output
    assert "already serves these 503 vectors; nothing changed" in again.output


def test_a_spark_rebuild_of_a_live_corpus_merges_its_live_writes(
    milvus_lite_server_uri: str, mongo_uri: str, database: str, model_repo: ModelRepository, tmp_path: Path
) -> None:
    from pymongo import MongoClient

    env = _env(model_repo, milvus_lite_server_uri, mongo_uri, database)
    corpus = f"live_{uuid.uuid4().hex[:8]}"
    common = ["qa", "--demo", "faq", "--model", MINILM_KEY, "--shard-size", "100", "--corpus", corpus]
    first = CliRunner().invoke(ingest, [*common, "--work-dir", str(tmp_path / "first")], env=env)
    assert first.exit_code == 0, first.output
    # Two live writes as the documents API leaves them once applied: a new document, and a file row deleted.
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        db = client[database]
        db[corpus].insert_one(
            {
                "_id": 990001,
                "queryid": "990001",
                "question": "Written live, kept on Spark?",
                "answer": "Yes.",
                "category": [],
            }
        )
        db[corpus].delete_one({"_id": 5})
        db["changes"].insert_many(
            [
                {"_id": 1, "corpus": corpus, "doc_id": 990001, "op": "upsert", "version": None, "state": "applied"},
                {"_id": 2, "corpus": corpus, "doc_id": 5, "op": "delete", "version": None, "state": "applied"},
            ]
        )
    finally:
        client.close()
    work = ["--work-dir", str(tmp_path / "spark")]
    refused = CliRunner().invoke(ingest, [*common, *SPARK, *work], env=env)
    assert refused.exit_code == 1
    assert "--merge" in refused.output
    merged = CliRunner().invoke(ingest, [*common, *SPARK, *work, "--merge"], env=env)
    assert merged.exit_code == 0, merged.output
    assert "live: merged the live writes: 1 live documents added" in merged.output
    assert "1 rows left out (deleted live)" in merged.output
    rows = _milvus_rows(milvus_lite_server_uri, corpus, "question_emb")
    assert 990001 in rows
    assert 5 not in rows  # the file has row 5; it was deleted live and stays deleted
    assert len(rows) == 503
    assert set(_documents(mongo_uri, database, corpus)) == set(rows)


def test_spark_runs_the_clip_image_tower_on_executors(
    milvus_lite_server_uri: str, mongo_uri: str, database: str, model_repo: ModelRepository, tmp_path: Path
) -> None:
    env = _env(model_repo, milvus_lite_server_uri, mongo_uri, database)
    seq, spark = f"seq_{uuid.uuid4().hex[:8]}", f"spk_{uuid.uuid4().hex[:8]}"
    common = ["images", "--demo", "photos", "--base-url", "http://127.0.0.1:8090/images", "--model", TINY_CLIP_IMAGE]
    common += ["--shard-size", "5"]

    for corpus, extra in ((seq, []), (spark, SPARK)):
        res = CliRunner().invoke(
            ingest, [*common, *extra, "--corpus", corpus, "--work-dir", str(tmp_path / corpus)], env=env
        )
        assert res.exit_code == 0, res.output
        assert "16 vectors upserted" in res.output

    # The photos are prepared in each work dir, so the image paths (a document field) differ by that folder.
    docs = [_documents(mongo_uri, database, c) for c in (seq, spark)]
    for d in docs[1].values():
        d["image"] = d["image"].replace(str(tmp_path / spark), str(tmp_path / seq))
    assert docs[1] == docs[0]
    a, b = (_milvus_rows(milvus_lite_server_uri, c, "image_emb") for c in (seq, spark))
    assert sorted(a) == sorted(b)
    assert max(float(np.abs(a[i] - b[i]).max()) for i in a) <= 1e-6


def _count(uri: str, alias: str) -> int:
    client = stores.milvus_client(MilvusSettings(uri=uri))
    try:
        return count_rows(client, alias)  # the push's own count (strong consistency)
    finally:
        client.close()


def test_spark_ingest_killed_mid_way_completes_on_rerun_without_redoing_finished_shards(
    milvus_lite_server_uri: str, mongo_uri: str, database: str, model_repo: ModelRepository, tmp_path: Path
) -> None:
    """The driver, its JVM and its Python workers are killed (SIGKILL, no clean-up) once the first shards are done;
    the same command then encodes only the rest and loads exact counts."""
    full = tmp_path / "chatterbot.jsonl"
    prepare_demo("chatterbot", full)
    raw = tmp_path / "part.jsonl"  # 600 QA rows in 30 shards: enough to stop mid-way
    rows = [json.loads(line) for line in full.read_text(encoding="utf-8").splitlines()[:600]]
    raw.write_text("".join(json.dumps({"q": r["question"], "a": r["answer"]}) + "\n" for r in rows), encoding="utf-8")
    corpus = f"spk_{uuid.uuid4().hex[:8]}"
    work = tmp_path / "w"
    cmd = [
        str(Path(sys.executable).parent / "mmsearch"),
        "ingest",
        "qa",
        "--input",
        str(raw),
        "--map",
        "question=q,answer=a",
        "--ids",
        "sequential",
        "--model",
        MINILM_KEY,
        "--corpus",
        corpus,
        "--work-dir",
        str(work),
        "--shard-size",
        "20",
        *SPARK,
    ]
    env = {**os.environ, **_env(model_repo, milvus_lite_server_uri, mongo_uri, database), "PYTHONUNBUFFERED": "1"}
    vectors = work / f"vectors-{MINILM_KEY}"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while proc.poll() is None and not list(vectors.glob("shard-*.done.json")):
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session: driver, JVM, executor workers
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    done = {
        p.name: p.stat().st_mtime_ns
        for p in vectors.glob("shard-*.vectors.npy")
        if (vectors / p.name.replace(".vectors.npy", ".done.json")).exists()
    }
    manifest = read_manifest(vectors)
    assert manifest is not None, output.decode(errors="replace")
    assert 1 <= len(done) < manifest.shard_count, output.decode(errors="replace")

    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)

    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resumed with {len(done)} shards done" in res.stdout
    assert f"encoded {600 - 20 * len(done)} of 600 rows" in res.stdout
    for name, mtime in done.items():  # finished shards were not encoded again
        assert (vectors / name).stat().st_mtime_ns == mtime
    final = read_manifest(vectors)
    assert final is not None
    assert final.complete
    assert _count(milvus_lite_server_uri, corpus) == 600
    ids = sorted(json.loads(line)["id"] for line in (work / "corpus.jsonl").read_text(encoding="utf-8").splitlines())
    assert len(ids) == 600
    assert sorted(_documents(mongo_uri, database, corpus)) == ids  # each row's document once
    assert sorted(_milvus_rows(milvus_lite_server_uri, corpus, "question_emb")) == ids


def test_a_failing_partition_is_named_with_its_rows(model_repo: ModelRepository, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"id": i, "question": f"question number {i}", "answer": "a"} for i in range(60)]
    rows[47] = {"id": 47, "title": "a row without a question", "answer": "a"}
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    out = tmp_path / "v"
    args = ["-i", str(corpus), "--model", MINILM_KEY, "--field", "question", "-o", str(out), "--shard-size", "20"]

    res = CliRunner().invoke(index, [*args, "--repo", str(model_repo.root), *SPARK])

    assert res.exit_code == 1
    assert "shard 2 (rows 40-59, from line 41 of" in res.output
    assert "line 48: row 47 has no 'question' field" in res.output
    manifest = read_manifest(tmp_path / "v")
    assert manifest is not None
    assert {s.index for s in manifest.shards} <= {0, 1}  # the good shards may be kept for the re-run


def test_embedded_milvus_is_refused_before_any_work(model_repo: ModelRepository, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        ingest,
        ["qa", "--demo", "faq", "--model", MINILM_KEY, "--corpus", "c_x", "--work-dir", str(tmp_path / "w"), *SPARK],
        env={"MMSEARCH_MODEL_REPO": str(model_repo.root), "MMSEARCH_MILVUS__URI": str(tmp_path / "m.db")},
    )
    assert res.exit_code == 1
    assert "cannot open the embedded Milvus Lite file" in res.output
    assert not (tmp_path / "w").exists()


def _index(args: list[str]) -> Any:
    return CliRunner().invoke(index, args, catch_exceptions=False)


def test_index_on_a_standalone_spark_cluster_with_shipped_models(
    spark_cluster: str, model_repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spark://: the executors run in the worker's own JVM and Python workers, and load the model shipped with the
    job (--ship-models) instead of reading the repository path."""
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")  # the driver binds loopback (a real cluster: its own address)
    corpus = tmp_path / "faq.jsonl"
    prepare_demo("faq", corpus)
    common = ["-i", str(corpus), "--model", MINILM_KEY, "--field", "question", "--shard-size", "128"]
    common += ["--repo", str(model_repo.root)]

    here = _index([*common, "-o", str(tmp_path / "seq")])
    there = _index([*common, "-o", str(tmp_path / "cluster"), "--engine", "spark", "--spark-master", spark_cluster])
    shipped = _index(
        [
            *common,
            "-o",
            str(tmp_path / "shipped"),
            "--engine",
            "spark",
            "--spark-master",
            spark_cluster,
            "--ship-models",
        ]
    )

    for res in (here, there, shipped):
        assert res.exit_code == 0, res.output
        assert "encoded 503 of 503 rows" in res.output
    base = [np.concatenate(x) for x in zip(*iter_shards(tmp_path / "seq", open_vectors(tmp_path / "seq")), strict=True)]
    for name in ("cluster", "shipped"):
        got = [
            np.concatenate(x) for x in zip(*iter_shards(tmp_path / name, open_vectors(tmp_path / name)), strict=True)
        ]
        np.testing.assert_array_equal(got[0], base[0])
        np.testing.assert_allclose(got[1], base[1], atol=1e-6)


def test_a_document_corpus_on_spark_matches_the_sequential_engine(
    milvus_lite_server_uri: str, mongo_uri: str, database: str, model_repo: ModelRepository, tmp_path: Path
) -> None:
    """`ingest text --engine spark`: the driver chunks, the executors encode the passages, the driver writes the
    documents; the same passages, vectors and documents as the sequential engine."""
    med = ir_collection("med") / "corpus.jsonl"
    raw = tmp_path / "med.jsonl"
    raw.write_text("".join(med.read_text(encoding="utf-8").splitlines(keepends=True)[:40]), encoding="utf-8")
    env = _env(model_repo, milvus_lite_server_uri, mongo_uri, database)
    seq, spark = f"dseq_{uuid.uuid4().hex[:8]}", f"dspk_{uuid.uuid4().hex[:8]}"
    common = ["text", "--input", str(raw), "--model", MINILM_KEY, "--chunk-tokens", "64", "--shard-size", "40"]
    first = CliRunner().invoke(ingest, [*common, "--corpus", seq, "--work-dir", str(tmp_path / "seq")], env=env)
    assert first.exit_code == 0, first.output
    res = CliRunner().invoke(
        ingest, [*common, *SPARK, "--corpus", spark, "--work-dir", str(tmp_path / "spark")], env=env
    )
    assert res.exit_code == 0, res.output
    assert "40 documents ->" in res.output
    assert "mongo: " in res.output
    a, b = (_milvus_rows(milvus_lite_server_uri, alias, "passage_emb") for alias in (seq, spark))
    assert sorted(a) == sorted(b)
    assert len(a) > 40  # passages, several of some documents
    assert max(float(np.abs(a[i] - b[i]).max()) for i in a) <= 1e-6
    docs = _documents(mongo_uri, database, spark)
    assert docs == _documents(mongo_uri, database, seq)
    assert sorted(docs) == sorted(int(json.loads(line)["id"]) for line in raw.read_text().splitlines())
