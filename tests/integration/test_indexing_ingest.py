"""`mmsearch ingest qa` end to end (FAQ demo -> Milvus + MongoDB) on every Milvus form, and a real interrupted index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mmsearch import stores
from mmsearch.model_repo import ModelRepository
from mmsearch.runtime.encoder import OnnxEncoder
from mmsearch.settings import MilvusSettings
from offline.encode.manifest import read_manifest
from offline.ingest.cli import ingest
from offline.preprocess.demo import prepare_demo
from tests.fixtures.interrupt import interrupt_after_first_shard
from tests.fixtures.models import MINILM_KEY

pytestmark = pytest.mark.integration


def _ingest(args: list[str], env: dict[str, str]) -> Any:
    return CliRunner().invoke(ingest, args, env=env, catch_exceptions=False)


def test_ingest_faq_demo_loads_milvus_and_mongo_and_rerun_changes_nothing(
    milvus_uri: str, mongo_uri: str, corpus_name: str, model_repo: ModelRepository, tmp_path: Path
) -> None:
    from pymongo import MongoClient

    database = f"t_{uuid.uuid4().hex[:10]}"
    args = ["qa", "--demo", "faq", "--model", MINILM_KEY, "--corpus", corpus_name, "--work-dir", str(tmp_path / "w")]
    env = {
        "MMSEARCH_MODEL_REPO": str(model_repo.root),
        "MMSEARCH_MILVUS__URI": milvus_uri,
        "MMSEARCH_MONGO__URI": mongo_uri,
        "MMSEARCH_MONGO__DATABASE": database,
    }

    first = _ingest(args, env)

    assert first.exit_code == 0, first.output
    assert "preprocess: wrote 503 rows" in first.output
    assert "index: encoded 503 of 503 rows" in first.output
    assert "503 documents verified (503 new" in first.output
    assert "503 vectors upserted" in first.output

    second = _ingest(args, env)

    assert second.exit_code == 0, second.output
    assert "index: " in second.output
    assert "nothing to do" in second.output
    assert "(0 new, 0 updated, 503 unchanged)" in second.output
    assert "already serves these 503 vectors; nothing changed" in second.output

    # What the search service does: encode the query, search the alias, fetch the documents by queryid.
    query = OnnxEncoder.from_repo(model_repo, MINILM_KEY).encode_texts(["Do I need a permit to build a garage?"])[0]
    milvus = stores.milvus_client(MilvusSettings(uri=milvus_uri))
    mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        hits = milvus.search(
            corpus_name, data=[query.tolist()], anns_field="question_emb", limit=5, output_fields=["id"]
        )
        ids = [str(h["id"]) for h in hits[0]]
        docs = {d["queryid"]: d for d in mongo[database][corpus_name].find({"queryid": {"$in": ids}})}
        assert set(docs) == set(ids)
        assert any("permit" in docs[i]["question"].lower() or "bygglov" in docs[i]["category"] for i in ids[:3])
    finally:
        milvus.close()
        mongo.drop_database(database)
        mongo.close()


def test_ingest_needs_exactly_one_source(tmp_path: Path) -> None:
    res = CliRunner().invoke(ingest, ["qa", "--model", "m", "--corpus", "c"])
    assert res.exit_code == 2
    assert "exactly one of --demo or --input" in res.output
    res = CliRunner().invoke(ingest, ["images", "--dir", str(tmp_path), "--model", "m", "--corpus", "c"])
    assert res.exit_code == 2
    assert "--base-url is required" in res.output


def test_ingest_bad_model_key_fails_before_touching_the_stores(model_repo: ModelRepository, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        ingest,
        ["qa", "--demo", "faq", "--model", "nope", "--corpus", "c_x", "--work-dir", str(tmp_path / "w")],
        env={"MMSEARCH_MODEL_REPO": str(model_repo.root), "MMSEARCH_MILVUS__URI": str(tmp_path / "never.db")},
    )
    assert res.exit_code == 1
    assert "'nope' is not in the model repository" in res.output
    assert not (tmp_path / "never.db").exists()


def test_interrupted_index_process_resumes(model_repo: ModelRepository, tmp_path: Path) -> None:
    """A real `mmsearch index` process stopped with SIGINT mid-way; the same command then finishes the job."""
    full = tmp_path / "chatterbot.jsonl"
    prepare_demo("chatterbot", full)
    # 2400 rows in shards of 50: a quiet machine encoded 600 in the moment between the first shard and the SIGINT
    # (the run ended 0); 47 shards after the first leave a couple of seconds to stop it mid-way.
    corpus = tmp_path / "part.jsonl"
    corpus.write_text("".join(full.read_text(encoding="utf-8").splitlines(keepends=True)[:2400]), encoding="utf-8")
    total = 2400
    out = tmp_path / "vec"
    cmd = [
        str(Path(sys.executable).parent / "mmsearch"),
        "index",
        "-i",
        str(corpus),
        "--model",
        MINILM_KEY,
        "--field",
        "question",
        "-o",
        str(out),
        "--shard-size",
        "50",
        "--repo",
        str(model_repo.root),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code, output = interrupt_after_first_shard(cmd, env, out)
    partial = read_manifest(out)
    assert partial is not None
    assert code == 130, output
    assert "run the same command again to continue" in output
    assert not partial.complete
    done = len(partial.shards)
    assert 1 <= done < partial.shard_count

    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)

    assert res.returncode == 0, res.stderr
    assert f"resumed with {done} shards done" in res.stdout
    assert f"encoded {total - done * 50} of {total} rows" in res.stdout
    final = read_manifest(out)
    assert final is not None
    assert final.complete
    assert sum(s.count for s in final.shards) == total
    assert json.loads((out / "vectors.json").read_text(encoding="utf-8"))["total"] == total


def test_ingest_photos_demo_with_the_clip_image_tower(
    milvus_uri: str, mongo_uri: str, corpus_name: str, model_repo: ModelRepository, tmp_path: Path
) -> None:
    from pymongo import MongoClient

    from tests.fixtures.models import TINY_CLIP_IMAGE

    database = f"t_{uuid.uuid4().hex[:10]}"
    base_url = "http://127.0.0.1:8090/images"
    args = ["images", "--demo", "photos", "--base-url", base_url, "--model", TINY_CLIP_IMAGE, "--corpus", corpus_name]
    env = {
        "MMSEARCH_MODEL_REPO": str(model_repo.root),
        "MMSEARCH_MILVUS__URI": milvus_uri,
        "MMSEARCH_MONGO__URI": mongo_uri,
        "MMSEARCH_MONGO__DATABASE": database,
    }

    res = _ingest([*args, "--work-dir", str(tmp_path / "w")], env)

    assert res.exit_code == 0, res.output
    assert "16 vectors upserted" in res.output
    photo = tmp_path / "w" / "raw" / "photos" / "cat-chelsea.jpg"
    query = OnnxEncoder.from_repo(model_repo, TINY_CLIP_IMAGE).encode_images([photo.read_bytes()])[0]
    milvus = stores.milvus_client(MilvusSettings(uri=milvus_uri))
    mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        fields = {f["name"] for f in milvus.describe_collection(corpus_name)["fields"]}
        assert fields == {"id", "image_emb"}  # image rows have no category: no filter field
        hits = milvus.search(corpus_name, data=[query.tolist()], anns_field="image_emb", limit=1, output_fields=["id"])
        top = str(hits[0][0]["id"])
        doc = mongo[database][corpus_name].find_one({"queryid": top})
        assert doc is not None
        assert doc["name"] == "cat-chelsea.jpg"
        assert doc["url"] == f"{base_url}/cat-chelsea.jpg"
        assert Path(doc["image"]) == photo.resolve()
    finally:
        milvus.close()
        mongo.drop_database(database)
        mongo.close()


def test_reingest_of_a_smaller_corpus_switches_the_alias_and_prunes_documents(
    milvus_lite_server_uri: str, mongo_uri: str, corpus_name: str, model_repo: ModelRepository, tmp_path: Path
) -> None:
    from pymongo import MongoClient

    from offline.push.milvus_push import alias_target, count_rows

    raw = tmp_path / "qa.jsonl"
    rows = [{"id": i, "question": f"How do I fix problem {i}?", "answer": f"Like this {i}."} for i in range(1, 41)]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    database = f"t_{uuid.uuid4().hex[:10]}"
    env = {
        "MMSEARCH_MODEL_REPO": str(model_repo.root),
        "MMSEARCH_MILVUS__URI": milvus_lite_server_uri,
        "MMSEARCH_MONGO__URI": mongo_uri,
        "MMSEARCH_MONGO__DATABASE": database,
    }
    args = [
        "qa",
        "--input",
        str(raw),
        "--model",
        MINILM_KEY,
        "--corpus",
        corpus_name,
        "--work-dir",
        str(tmp_path / "w"),
    ]
    assert _ingest(args, env).exit_code == 0
    milvus = stores.milvus_client(MilvusSettings(uri=milvus_lite_server_uri))
    first = alias_target(milvus, corpus_name)

    raw.write_text("".join(json.dumps(r) + "\n" for r in rows[:30]), encoding="utf-8")
    res = _ingest(args, env)

    mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        assert res.exit_code == 0, res.output
        assert "removed 10 documents no longer in the corpus" in res.output
        assert alias_target(milvus, corpus_name) != first
        assert first not in milvus.list_collections()
        assert count_rows(milvus, corpus_name) == 30
        assert mongo[database][corpus_name].count_documents({}) == 30
        assert mongo[database][corpus_name].find_one({"_id": 31}) is None
    finally:
        milvus.close()
        mongo.drop_database(database)
        mongo.close()
