"""`push mongo` against SecantusDB (MongoDB wire protocol): document shape, unique queryid, idempotence, pruning."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mmsearch.settings import MongoSettings
from offline.preprocess.demo import prepare_demo
from offline.push.cli import push
from offline.push.errors import PushError, StoreUnavailableError
from offline.push.mongo_push import push_mongo
from tests.fixtures.ports import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def faq_corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faq") / "faq.jsonl"
    prepare_demo("faq", out)
    return out


@pytest.fixture
def mongo(mongo_uri: str) -> Iterator[tuple[MongoSettings, Any]]:
    from pymongo import MongoClient

    settings = MongoSettings(uri=mongo_uri, database=f"t_{uuid.uuid4().hex[:10]}")
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        yield settings, client[settings.database]
    finally:
        client.drop_database(settings.database)
        client.close()


def test_documents_carry_id_queryid_and_display_fields(mongo: tuple[MongoSettings, Any], faq_corpus_file: Path) -> None:
    settings, db = mongo

    summary = push_mongo(settings, faq_corpus_file, "faq_qa", batch_size=100, progress=False)

    assert (summary.count, summary.inserted) == (503, 503)
    coll = db["faq_qa"]
    assert coll.count_documents({}) == 503
    doc = coll.find_one({"queryid": "2"})
    assert doc == {
        "_id": 2,
        "queryid": "2",
        "question": "How long does it take to get a building permit?",
        "answer": doc["answer"],
        "category": ["bygglov"],
    }
    assert doc["answer"].startswith("The statutory processing time is 10 weeks")
    fetched = {d["queryid"] for d in coll.find({"queryid": {"$in": ["1", "503", "9999"]}})}
    assert fetched == {"1", "503"}
    index = coll.index_information()["queryid_unique"]
    assert index["key"] == [("queryid", 1)]
    assert index["unique"]


def test_rerun_is_idempotent_and_prune_removes_stale_documents(
    mongo: tuple[MongoSettings, Any], faq_corpus_file: Path, tmp_path: Path
) -> None:
    settings, db = mongo
    push_mongo(settings, faq_corpus_file, "faq_qa", progress=False)

    again = push_mongo(settings, faq_corpus_file, "faq_qa", progress=False)

    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 503)
    assert db["faq_qa"].count_documents({}) == 503

    lines = faq_corpus_file.read_text(encoding="utf-8").splitlines(keepends=True)
    smaller = tmp_path / "smaller.jsonl"
    first = json.loads(lines[0])
    first["answer"] = "changed answer"
    smaller.write_text(json.dumps(first) + "\n" + "".join(lines[1:500]), encoding="utf-8")

    kept = push_mongo(settings, smaller, "faq_qa", progress=False)
    assert db["faq_qa"].count_documents({}) == 503  # without prune, stale documents stay
    assert kept.updated == 1
    pruned = push_mongo(settings, smaller, "faq_qa", prune=True, progress=False)

    assert pruned.pruned == 3
    assert db["faq_qa"].count_documents({}) == 500
    assert db["faq_qa"].find_one({"_id": 1})["answer"] == "changed answer"
    assert db["faq_qa"].find_one({"_id": 503}) is None


def test_foreign_document_with_the_same_queryid_is_a_clear_error(
    mongo: tuple[MongoSettings, Any], faq_corpus_file: Path
) -> None:
    settings, db = mongo
    db["faq_qa"].create_index("queryid", unique=True, name="queryid_unique")
    db["faq_qa"].insert_one({"_id": "foreign", "queryid": "5"})
    with pytest.raises(PushError, match="MongoDB refused documents"):
        push_mongo(settings, faq_corpus_file, "faq_qa", progress=False)


def test_server_down_names_the_setting(faq_corpus_file: Path) -> None:
    uri = f"mongodb://127.0.0.1:{free_port()}"
    with pytest.raises(StoreUnavailableError, match=r"cannot reach MongoDB .*MMSEARCH_MONGO__URI"):
        push_mongo(MongoSettings(uri=uri, timeout_ms=500), faq_corpus_file, "faq_qa", progress=False)
    res = CliRunner().invoke(push, ["mongo", "--input", str(faq_corpus_file), "--corpus", "faq_qa", "--mongo-uri", uri])
    assert res.exit_code == 1
    assert "MMSEARCH_MONGO__URI" in res.output


def test_cli_push_mongo_takes_uri_and_database_from_the_environment(
    mongo: tuple[MongoSettings, Any], faq_corpus_file: Path
) -> None:
    settings, db = mongo
    res = CliRunner().invoke(
        push,
        ["mongo", "--input", str(faq_corpus_file), "--corpus", "faq_qa"],
        env={"MMSEARCH_MONGO__URI": settings.uri, "MMSEARCH_MONGO__DATABASE": settings.database},
    )
    assert res.exit_code == 0, res.output
    assert f"{settings.database}.faq_qa: 503 documents verified" in res.output
    assert db["faq_qa"].count_documents({}) == 503
