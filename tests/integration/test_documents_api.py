"""The documents API end to end: a real search service (`mmsearch serve search`) over the milvus-lite server,
SecantusDB and the real tokenizer and model server (MiniLM), on a small corpus of its own (`live_qa`, 60 FAQ rows
ingested with the real ingest) that the A/B config of this module searches.

Checked: a write is found by search and a delete no longer is; a document written live equals the same document
ingested offline (vector within 1e-6, stored fields, BM25); versions (stale 409, replays, concurrent writers end at
the highest); batches with a status per item; bad input refused precisely with nothing written; Milvus down (writes
accepted and applied when it is back), MongoDB down and the model server down (nothing acknowledged); and a
replica killed while it holds the corpus's lease (another applies every acknowledged write, once).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mmsearch.model_repo import ModelRepository
from tests.doubles.consul_kv import ConsulKVDouble
from tests.fixtures.ports import free_port, wait_until
from tests.fixtures.search import AB_CONFIG, MONGO_DATABASE, FaqCorpus, RunningSearch, Stores, start_search

pytestmark = pytest.mark.integration

CORPUS = "live_qa"
CONSUL_KEY = "config/test/documents"
ROWS = 60
# The plain vector experiment and no re-ranking: what a search returns is what Milvus holds.
PIN = {"match.qa": "match.qa.base", "rank.qa": "rank.qa.dummy"}
ENV = {
    "MMSEARCH_DOCUMENTS__WAIT_SECONDS": "6",
    "MMSEARCH_DOCUMENTS__LEASE_SECONDS": "4",
    "MMSEARCH_DOCUMENTS__POLL_SECONDS": "0.2",
    "MMSEARCH_DOCUMENTS__MAX_BATCH": "50",
}


@pytest.fixture(scope="module")
def live_rows(
    model_repo: ModelRepository, search_stores: Stores, tmp_path_factory: pytest.TempPathFactory
) -> dict[int, dict[str, Any]]:
    """`live_qa`: the first 60 FAQ rows through `mmsearch ingest qa` (filter field category, lexical question)."""
    from mmsearch.settings import MilvusSettings, MongoSettings
    from offline.ingest.steps import IngestOptions, run_ingest
    from offline.preprocess.demo import Demo, prepare_demo
    from offline.preprocess.qa import QAOptions, preprocess_qa

    work = tmp_path_factory.mktemp("live-qa")
    full = work / "faq.jsonl"
    prepare_demo(Demo.FAQ, full)
    raw = work / "raw.jsonl"
    raw.write_text("".join(full.read_text(encoding="utf-8").splitlines(keepends=True)[:ROWS]), encoding="utf-8")
    opts = IngestOptions(
        corpus=CORPUS,
        model_key="minilm",
        field="question",
        repo=model_repo,
        work_dir=work / "ingest",
        milvus=MilvusSettings(uri=search_stores.milvus_uri),
        mongo=MongoSettings(uri=search_stores.mongo_uri, database=MONGO_DATABASE),
        filter_fields=["category"],
        lexical_fields=["question"],
        providers=["CPUExecutionProvider"],
    )
    run_ingest(opts, lambda out: preprocess_qa(raw, out, QAOptions.for_format("jsonl")))
    rows = [json.loads(line) for line in raw.read_text(encoding="utf-8").splitlines()]
    return {int(r["id"]): r for r in rows}


def _config() -> str:
    text = AB_CONFIG.read_text(encoding="utf-8")
    return text.replace("collectionName: faq_qa", f"collectionName: {CORPUS}").replace(
        "mongoCollection: faq_qa", f"mongoCollection: {CORPUS}"
    )


class Live:
    def __init__(self, running: RunningSearch) -> None:
        self.running = running
        self.http = httpx.Client(base_url=running.url, timeout=60)

    def put(self, doc_id: int | str, doc: dict[str, Any], **params: Any) -> httpx.Response:
        return self.http.put(f"/corpora/{CORPUS}/documents/{doc_id}", json=doc, params=_params(params))

    def delete(self, doc_id: int | str, **params: Any) -> httpx.Response:
        return self.http.delete(f"/corpora/{CORPUS}/documents/{doc_id}", params=_params(params))

    def batch(self, items: list[dict[str, Any]], **params: Any) -> httpx.Response:
        return self.http.post(f"/corpora/{CORPUS}/documents:batch", json={"items": items}, params=_params(params))

    def get(self, doc_id: int | str) -> httpx.Response:
        return self.http.get(f"/corpora/{CORPUS}/documents/{doc_id}")

    def search(self, query: str, top_k: int = 5) -> list[str]:
        body = {"query": query, "topK": top_k, "useDebug": True, "specifiedLayerAndExperiment": PIN}
        reply = self.http.post("/qa/user/10", json=body)
        assert reply.status_code == 200, reply.text
        return [hit["id"] for hit in reply.json()["searchItemModels"][0]]


def _params(params: dict[str, Any]) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}


@pytest.fixture(scope="module")
def start_live(  # noqa: PLR0917 - pytest fixtures
    model_repo: ModelRepository,
    tokenizer_target: str,
    model_server_target: str,
    search_stores: Stores,
    faq_corpus: FaqCorpus,
    live_rows: dict[int, dict[str, Any]],
    consul_kv: ConsulKVDouble,
) -> Any:
    consul_kv.put(CONSUL_KEY, _config())

    def start(work_dir: Path, *, wait_ready: bool = True, **env: str) -> Any:
        return start_search(
            repo=model_repo.root,
            tokenizer_target=env.pop("tokenizer_target", tokenizer_target),
            model_server_target=env.pop("model_server_target", model_server_target),
            milvus_uri=search_stores.milvus_uri,
            mongo_uri=search_stores.mongo_uri,
            consul=consul_kv,
            consul_key=CONSUL_KEY,
            work_dir=work_dir,
            wait_ready=wait_ready,
            extra_env={**ENV, **env},
        )

    return start


@pytest.fixture(scope="module")
def live(start_live: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with start_live(tmp_path_factory.mktemp("documents-service")) as running:
        client = Live(running)
        try:
            yield client
        finally:
            client.http.close()


def _mongo(stores: Stores) -> Any:
    from pymongo import MongoClient

    return MongoClient(stores.mongo_uri, tz_aware=True)


def _milvus_rows(stores: Stores, ids: list[int]) -> dict[int, dict[str, Any]]:
    from pymilvus import MilvusClient

    client = MilvusClient(stores.milvus_uri)
    try:
        rows = client.query(
            CORPUS,
            filter=f"id in [{', '.join(map(str, ids))}]",
            output_fields=["id", "question_emb", "category", "question"],
            consistency_level="Strong",
        )
        return {int(r["id"]): r for r in rows}
    finally:
        client.close()


def _bm25(stores: Stores, text: str) -> dict[int, float]:
    from pymilvus import MilvusClient

    client = MilvusClient(stores.milvus_uri)
    try:
        hits = client.search(
            CORPUS,
            data=[text],
            anns_field="question_bm25",
            limit=1000,  # every row that shares a word with the text
            search_params={"metric_type": "BM25"},
            output_fields=["id"],
            consistency_level="Strong",
        )[0]
        return {int(h["id"]): abs(float(h["distance"])) for h in hits}
    finally:
        client.close()


def _journal(stores: Stores, **query: Any) -> list[dict[str, Any]]:
    client = _mongo(stores)
    try:
        return list(client[MONGO_DATABASE]["changes"].find({"corpus": CORPUS, **query}, {"vector": 0}))
    finally:
        client.close()


# ---- writes are searchable, deletes are gone --------------------------------------------------------------


def test_a_written_document_is_found_by_search_and_a_deleted_one_is_not(live: Live) -> None:
    question = "Can I keep a pet tortoise on the balcony of a rented flat?"
    doc: dict[str, Any] = {
        "question": question,
        "answer": "Yes, if the lease allows pets; ask the landlord first.",
        "category": ["pets"],
    }
    put = live.put(900001, doc)
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["state"] == "applied"
    assert body["id"] == "900001"
    assert isinstance(body["change"], int)
    assert live.search(question)[0] == "900001"

    got = live.get(900001).json()
    assert got["document"] == doc
    assert got["searchable"] is True
    assert got["state"] == "applied"

    gone = live.delete(900001)
    assert gone.status_code == 200, gone.text
    assert "900001" not in live.search(question, top_k=20)
    missing = live.get(900001)
    assert missing.status_code == 404
    assert missing.json()["error"] == "unknown_document"
    assert "deleted" in missing.json()["message"]


def test_a_live_document_equals_the_same_document_ingested_offline(
    live: Live, live_rows: dict[int, dict[str, Any]], search_stores: Stores
) -> None:
    source_id = min(live_rows)
    row = live_rows[source_id]
    copy_id = 900100
    doc = {k: v for k, v in row.items() if k != "id"}
    assert live.put(copy_id, doc).status_code == 200

    rows = _milvus_rows(search_stores, [source_id, copy_id])
    offline, online = (np.asarray(rows[i]["question_emb"], dtype=np.float32) for i in (source_id, copy_id))
    assert np.max(np.abs(offline - online)) <= 1e-6
    assert rows[source_id]["category"] == rows[copy_id]["category"]
    assert rows[source_id]["question"] == rows[copy_id]["question"]

    client = _mongo(search_stores)
    try:
        coll = client[MONGO_DATABASE][CORPUS]
        a = coll.find_one({"_id": source_id}, {"_id": 0, "queryid": 0})
        b = coll.find_one({"_id": copy_id}, {"_id": 0, "queryid": 0})
        assert b is not None
        assert coll.find_one({"_id": copy_id})["queryid"] == str(copy_id)
    finally:
        client.close()
    assert a == b

    # Its words are analysed and indexed as the ingest's: its own text finds it by BM25. (Not with the same score:
    # Milvus Lite keeps BM25 statistics per segment, and a live write sits in a newer, smaller segment than the
    # ingested rows; a rebuild puts them back in one.)
    scores = _bm25(search_stores, row["question"])
    assert source_id in scores
    assert copy_id in scores


def test_a_text_longer_than_the_models_window_is_accepted_and_says_it_was_cut(live: Live) -> None:
    long_question = "How do I apply for a permit " + "for the works on my building " * 200
    reply = live.put(900200, {"question": long_question, "answer": "At the town hall."})
    assert reply.status_code == 200, reply.text
    assert reply.json()["truncated"] is True
    assert "truncated" not in live.put(900201, {"question": "Short?", "answer": "Yes."}).json()


def test_wait_false_answers_202_and_the_change_can_be_polled_until_applied(live: Live) -> None:
    reply = live.put(900300, {"question": "Where do I pay the street-stall fee?", "answer": "Online."}, wait=False)
    assert reply.status_code == 202, reply.text
    change = reply.json()["change"]

    def applied() -> bool:
        got = live.http.get(f"/corpora/{CORPUS}/changes/{change}")
        assert got.status_code == 200, got.text
        return bool(got.json()["state"] == "applied")

    wait_until(applied, what=f"change {change} applied", timeout=30)
    assert live.search("Where do I pay the street-stall fee?")[0] == "900300"


def test_the_corpus_says_what_it_holds(live: Live, live_rows: dict[int, dict[str, Any]]) -> None:
    reply = live.http.get(f"/corpora/{CORPUS}")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == "minilm"
    assert body["encodedField"] == "question"
    assert body["lexicalFields"] == ["question"]
    assert body["filterFields"] == [{"name": "category", "type": "array"}]
    assert body["documents"] == body["vectors"] >= len(live_rows)
    assert body["pending"] == 0
    assert body["lastApplied"]["state"] == "applied"


# ---- versions ---------------------------------------------------------------------------------------------


def test_versions_refuse_older_writes_and_make_replays_safe(live: Live) -> None:
    v3 = live.put(900400, {"question": "Version three?", "answer": "Three."}, version=3)
    assert v3.status_code == 200, v3.text
    older = live.put(900400, {"question": "Version two?", "answer": "Two."}, version=2)
    assert older.status_code == 409, older.text
    assert older.json()["error"] == "stale_version"
    assert "version 3" in older.json()["message"]
    replay = live.put(900400, {"question": "Version three?", "answer": "Three."}, version=3)
    assert replay.status_code == 200
    assert replay.json()["change"] == v3.json()["change"]  # the same write, not a second one
    got = live.get(900400).json()
    assert got["version"] == 3
    assert got["document"]["answer"] == "Three."
    old_delete = live.delete(900400, version=1)
    assert old_delete.status_code == 409
    assert live.get(900400).status_code == 200
    deleted = live.delete(900400, version=4)
    assert deleted.status_code == 200
    assert live.put(900400, {"question": "Back?", "answer": "No."}, version=3).status_code == 409
    again = live.put(900400, {"question": "Back?", "answer": "No."}, version=4)  # a replay of the delete's version
    assert again.status_code == 200
    assert again.json()["change"] == deleted.json()["change"]
    assert live.get(900400).status_code == 404  # stays deleted


def test_concurrent_writers_with_versions_end_at_the_highest(live: Live, search_stores: Stores) -> None:
    versions = list(range(1, 25))
    random.Random(7).shuffle(versions)

    def write(v: int) -> int:
        doc = {"question": f"Which version won the race? {v}", "answer": f"version {v}"}
        with httpx.Client(base_url=live.running.url, timeout=60) as http:
            return http.put(
                f"/corpora/{CORPUS}/documents/900500", json=doc, params={"version": str(v), "wait": "false"}
            ).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(write, versions))
    assert set(statuses) <= {200, 202, 409}, statuses

    def settled() -> bool:
        return not _journal(search_stores, doc_id=900500, state="pending")

    wait_until(settled, what="every write of document 900500 settled", timeout=60)
    got = live.get(900500).json()
    assert got["version"] == max(versions)
    assert got["document"]["answer"] == f"version {max(versions)}"
    row = _milvus_rows(search_stores, [900500])[900500]
    assert row["question"] == f"Which version won the race? {max(versions)}"


# ---- batches ----------------------------------------------------------------------------------------------


def test_a_batch_applies_what_it_can_and_says_why_for_the_rest(live: Live) -> None:
    items: list[dict[str, Any]] = [
        {"op": "upsert", "id": "900600", "document": {"question": "Batch one?", "answer": "One."}},
        {"op": "upsert", "id": 900601, "document": {"question": "Batch two?"}},  # no answer
        {"op": "upsert", "id": "900602", "document": {"question": "Batch three?", "answer": "Three.", "category": 5}},
        {"op": "delete", "id": "900600"},  # later in the batch: wins
        {"op": "upsert", "id": "900603", "document": {"question": "Batch four?", "answer": "Four."}},
    ]
    twice = live.batch([*items[:1], items[0]])
    assert twice.status_code == 422
    assert "more than once" in twice.json()["message"]
    items[3]["id"] = "900604"  # (one id twice is refused above: delete another)
    reply = live.batch(items)
    assert reply.status_code == 207, reply.text
    body = reply.json()
    statuses = [i["status"] for i in body["items"]]
    assert statuses == [200, 422, 422, 200, 200], body
    assert "answer" in body["items"][1]["message"]
    assert "category" in body["items"][2]["message"]
    assert body["applied"] == 3
    assert body["failed"] == 2
    assert live.get(900600).status_code == 200
    assert live.get(900603).status_code == 200
    assert live.get(900601).status_code == 404

    over = live.batch([{"op": "delete", "id": str(i)} for i in range(51)])
    assert over.status_code == 422
    assert "at most 50" in over.json()["message"]


# ---- bad input: precise refusals, nothing written ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "doc_id", "doc", "status", "says"),
    [
        ("no question", "900700", {"answer": "a"}, 422, "question"),
        ("category not text", "900700", {"question": "q?", "answer": "a", "category": [1, 2]}, 422, "category"),
        ("unknown field", "900700", {"question": "q?", "answer": "a", "price": 3}, 422, "price"),
        ("not an id", "abc", {"question": "q?", "answer": "a"}, 422, "not an integer"),
        ("id past INT64", str(2**63), {"question": "q?", "answer": "a"}, 422, "outside"),
        ("negative id", "-1", {"question": "q?", "answer": "a"}, 422, "not an integer"),
        ("too large", "900700", {"question": "q?", "answer": "x" * 300_000}, 413, "limit"),
    ],
)
def test_bad_documents_are_refused_precisely_and_nothing_is_written(  # noqa: PLR0917 - parametrized cases
    live: Live, search_stores: Stores, name: str, doc_id: str, doc: dict[str, Any], status: int, says: str
) -> None:
    before = len(_journal(search_stores))
    reply = live.put(doc_id, doc)
    assert reply.status_code == status, f"{name}: {reply.text}"
    body = reply.json()
    assert set(body) == {"error", "message", "dependency"}
    assert says in body["message"], f"{name}: {body}"
    assert len(_journal(search_stores)) == before, f"{name}: a refused write reached the journal"


def test_an_unknown_corpus_is_404_listing_the_corpora(live: Live) -> None:
    reply = live.http.put("/corpora/nope/documents/1", json={"question": "q?", "answer": "a"})
    assert reply.status_code == 404
    assert reply.json()["error"] == "unknown_corpus"
    assert CORPUS in reply.json()["message"]
    assert "faq_qa" in reply.json()["message"]


# ---- faults -----------------------------------------------------------------------------------------------


def test_with_milvus_down_writes_are_kept_and_applied_when_it_is_back(live: Live, search_stores: Stores) -> None:
    from tests.fixtures.prometheus import metric_value, scrape

    doc = {"question": "Is the pool open while Milvus is down?", "answer": "It will be."}
    # The service has read the corpus's schema before Milvus goes: it checks writes against it while Milvus is down.
    assert live.put(900800, doc).status_code == 200
    search_stores.stop_milvus()
    try:
        queued = live.put(900801, {**doc, "answer": "queued"}, wait=False)
        assert queued.status_code == 202, queued.text
        waited = live.put(900802, {**doc, "answer": "waited"})
        assert waited.status_code == 503, waited.text
        assert waited.json()["dependency"] == "milvus"
        assert "stays pending" in waited.json()["message"]
        assert len(_journal(search_stores, state="pending")) >= 2
        pending = metric_value(scrape(live.running.url + "/metrics"), "mmsearch_documents_pending", corpus=CORPUS)
        assert pending >= 2
    finally:
        search_stores.start_milvus()
    wait_until(lambda: not _journal(search_stores, state="pending"), what="the backlog applied", timeout=90)
    assert live.get(900801).json()["document"]["answer"] == "queued"
    assert live.get(900802).json()["searchable"] is True
    rows = _milvus_rows(search_stores, [900801, 900802])
    assert set(rows) == {900801, 900802}


def test_with_mongodb_down_nothing_is_acknowledged(live: Live, search_stores: Stores) -> None:
    search_stores.stop_mongo()
    try:
        reply = live.put(900900, {"question": "Stored while MongoDB is down?", "answer": "No."})
        assert reply.status_code == 503, reply.text
        assert reply.json()["dependency"] == "mongodb"
    finally:
        search_stores.start_mongo()
    assert not _journal(search_stores, doc_id=900900)
    assert live.get(900900).status_code == 404


def test_with_the_model_server_down_nothing_is_written(
    start_live: Any, search_stores: Stores, tmp_path_factory: pytest.TempPathFactory
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    # Not ready without its model server: started, not waited for.
    with start_live(
        tmp_path_factory.mktemp("documents-no-model"), wait_ready=False, model_server_target=dead
    ) as running:
        reply = httpx.put(
            f"{running.url}/corpora/{CORPUS}/documents/901000",
            json={"question": "Encoded without a model server?", "answer": "No."},
            timeout=60,
        )
    assert reply.status_code == 503, reply.text
    assert reply.json()["dependency"] == "model server"
    assert not _journal(search_stores, doc_id=901000)


def test_a_replica_killed_holding_the_lease_hands_its_writes_to_another(
    start_live: Any, search_stores: Stores, tmp_path_factory: pytest.TempPathFactory
) -> None:
    slow = {"MMSEARCH_DOCUMENTS__APPLY_BATCH": "1"}  # one entry per pass: the batch is still being applied when killed
    with start_live(tmp_path_factory.mktemp("documents-b"), **slow) as b:
        with start_live(tmp_path_factory.mktemp("documents-a"), **slow) as a:
            items = [
                {"op": "upsert", "id": str(901100 + i), "document": {"question": f"Handed over {i}?", "answer": f"{i}"}}
                for i in range(40)
            ]
            reply = httpx.post(
                f"{a.url}/corpora/{CORPUS}/documents:batch", json={"items": items}, params={"wait": "false"}, timeout=60
            )
            assert reply.status_code == 202, reply.text
            os.kill(a.proc.pid, signal.SIGKILL)
            a.proc.wait(timeout=30)
        ids = [901100 + i for i in range(40)]
        wait_until(
            lambda: not _journal(search_stores, doc_id={"$in": ids}, state="pending"),
            what="every acknowledged write applied by the other replica",
            timeout=90,
        )
        entries = _journal(search_stores, doc_id={"$in": ids})
        assert len(entries) == 40
        assert {e["state"] for e in entries} == {"applied"}
        assert set(_milvus_rows(search_stores, ids)) == set(ids)
        client = _mongo(search_stores)
        try:
            assert client[MONGO_DATABASE][CORPUS].count_documents({"_id": {"$in": ids}}) == 40
        finally:
            client.close()
        time.sleep(0.5)
        assert "applied" in b.log_text()


def _cli(*args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "mmsearch.cli.main", "documents", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_cli_puts_gets_deletes_and_imports_a_file(live: Live, tmp_path: Path) -> None:
    url = ["--search-url", live.running.url]
    put = _cli("put", CORPUS, "901300", "--json", '{"question": "Put from the CLI?", "answer": "Yes."}', *url)
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["state"] == "applied"
    got = _cli("get", CORPUS, "901300", *url)
    assert json.loads(got.stdout)["document"]["answer"] == "Yes."
    assert _cli("delete", CORPUS, "901300", *url).returncode == 0
    missing = _cli("get", CORPUS, "901300", *url)
    assert missing.returncode == 1
    assert "404 unknown_document" in missing.stderr

    rows = [json.dumps({"id": 901400 + i, "question": f"Imported question {i}?", "answer": f"{i}"}) for i in range(30)]
    rows += ["{not json", json.dumps({"id": 901499, "question": "No answer?"})]
    source = tmp_path / "docs.jsonl"
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = _cli("import", CORPUS, str(source), "--batch-size", "8", *url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{CORPUS}: 30 applied, 0 accepted and pending, 2 failed" in result.stdout
    assert "1 x malformed line: e.g. line 31" in result.stdout
    assert "1 x invalid_document: e.g. id 901499" in result.stdout
    assert live.search("Imported question 17?")[0] == "901417"

    wrong = _cli("import", "no_such_corpus", str(source), *url)
    assert wrong.returncode == 1
    assert "404 unknown_corpus" in wrong.stderr


# ---- rebuilds (last: they rebuild the module's corpus) ----------------------------------------------------


def _ingest_options(
    model_repo: ModelRepository, stores: Stores, work: Path, live: Any, engine: str = "sequential"
) -> Any:
    from mmsearch.settings import DocumentsSettings, MilvusSettings, MongoSettings, SparkSettings
    from offline.ingest.steps import IngestOptions
    from offline.spark.options import Engine

    return IngestOptions(
        corpus=CORPUS,
        model_key="minilm",
        field="question",
        repo=model_repo,
        work_dir=work,
        milvus=MilvusSettings(uri=stores.milvus_uri),
        mongo=MongoSettings(uri=stores.mongo_uri, database=MONGO_DATABASE),
        filter_fields=["category"],
        lexical_fields=["question"],
        providers=["CPUExecutionProvider"],
        live=live,
        documents=DocumentsSettings(lease_seconds=float(ENV["MMSEARCH_DOCUMENTS__LEASE_SECONDS"])),
        engine=Engine(engine),
        spark=SparkSettings(master="local[2]"),
    )


def _raw_file(live_rows: dict[int, dict[str, Any]], tmp_path: Path) -> Path:
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in live_rows.values()), encoding="utf-8")
    return raw


def _alias_target(stores: Stores) -> str:
    from pymilvus import MilvusClient

    client = MilvusClient(stores.milvus_uri)
    try:
        return str(client.describe_alias(CORPUS)["collection_name"])
    finally:
        client.close()


def _stored_ids(stores: Stores) -> tuple[set[int], set[int]]:
    """(ids in Milvus, ids in MongoDB) of the corpus."""
    from pymilvus import MilvusClient

    client = MilvusClient(stores.milvus_uri)
    try:
        rows = client.query(CORPUS, filter="id >= 0", output_fields=["id"], consistency_level="Strong", limit=16384)
        in_milvus = {int(r["id"]) for r in rows}
    finally:
        client.close()
    mongo = _mongo(stores)
    try:
        in_mongo = {int(d["_id"]) for d in mongo[MONGO_DATABASE][CORPUS].find({}, {"_id": 1})}
    finally:
        mongo.close()
    return in_milvus, in_mongo


def test_a_rebuild_refuses_a_live_corpus_unless_told_what_the_file_means(
    live: Live, live_rows: dict[int, dict[str, Any]], model_repo: ModelRepository, search_stores: Stores, tmp_path: Path
) -> None:
    from offline.ingest.steps import run_ingest
    from offline.preprocess.qa import QAOptions, preprocess_qa
    from offline.push.errors import PushError

    assert live.put(902001, {"question": "Written before a rebuild?", "answer": "Yes."}).status_code == 200
    raw = _raw_file(live_rows, tmp_path)
    before = _alias_target(search_stores)
    with pytest.raises(PushError, match=r"has taken live writes .* --merge .* --replace"):
        run_ingest(
            _ingest_options(model_repo, search_stores, tmp_path / "work", None),
            lambda out: preprocess_qa(raw, out, QAOptions.for_format("jsonl")),
        )
    assert _alias_target(search_stores) == before
    # Refused with its lease released: the service applies writes again at once.
    assert live.put(902000, {"question": "Applied after a refused rebuild?", "answer": "Yes."}).status_code == 200


def test_push_refuses_a_live_corpus(live: Live, search_stores: Stores, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from offline.push.cli import push

    assert live.put(902002, {"question": "Written before a push?", "answer": "Yes."}).status_code == 200
    corpus_file = tmp_path / "corpus.jsonl"
    corpus_file.write_text(json.dumps({"id": 1, "question": "q?", "answer": "a."}) + "\n", encoding="utf-8")
    stores = ["--mongo-uri", search_stores.mongo_uri, "--mongo-database", MONGO_DATABASE]
    for args in (
        ["milvus", "--vectors", str(tmp_path), "--corpus", CORPUS, "--milvus-uri", search_stores.milvus_uri, *stores],
        ["mongo", "--input", str(corpus_file), "--corpus", CORPUS, *stores],
    ):
        result = CliRunner().invoke(push, args)
        assert result.exit_code == 1, result.output
        assert "has taken live writes" in result.output
        assert "--merge" in result.output


@pytest.mark.parametrize("engine", ["sequential", "spark"])
def test_a_merge_rebuild_while_a_writer_streams_loses_nothing(  # noqa: PLR0917 - fixtures and the engine
    live: Live,
    live_rows: dict[int, dict[str, Any]],
    model_repo: ModelRepository,
    search_stores: Stores,
    tmp_path: Path,
    engine: str,
) -> None:
    import threading

    from mmsearch.change_journal import live_state
    from offline.ingest.live_writes import LiveMode
    from offline.ingest.steps import run_ingest
    from offline.preprocess.qa import QAOptions, preprocess_qa

    file_ids = sorted(live_rows)
    changed, removed = file_ids[1], file_ids[2]
    changed_doc = {"question": live_rows[changed]["question"], "answer": "Changed live, kept by the rebuild."}
    assert live.put(changed, changed_doc).status_code == 200
    assert live.delete(removed).status_code == 200

    acknowledged: dict[int, str] = {}  # id -> last acknowledged op
    searchable = 0  # upserts answered 200: applied and searchable (wait=true) while the rebuild ran
    stop = threading.Event()

    def writer() -> None:
        nonlocal searchable
        n = 0
        with httpx.Client(base_url=live.running.url, timeout=60) as http:
            while not stop.is_set():
                doc_id = 903000 + n % 40
                if n % 5 == 4:
                    reply = http.delete(f"/corpora/{CORPUS}/documents/{doc_id}", params={"wait": "false"})
                    op = "delete"
                else:
                    body = {"question": f"Streamed during the rebuild {n}?", "answer": str(n)}
                    reply = http.put(f"/corpora/{CORPUS}/documents/{doc_id}", json=body)
                    op = "upsert"
                    searchable += reply.status_code == 200
                if reply.status_code in (200, 202):
                    acknowledged[doc_id] = op
                n += 1
                time.sleep(0.02)

    raw = _raw_file(live_rows, tmp_path)
    before = _alias_target(search_stores)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(1.0)
        report = run_ingest(
            _ingest_options(model_repo, search_stores, tmp_path / "work", LiveMode.MERGE, engine),
            lambda out: preprocess_qa(raw, out, QAOptions.for_format("jsonl")),
        )
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
    assert _alias_target(search_stores) != before, report.lines
    assert any(line.startswith("live: merged the live writes") for line in report.lines), report.lines
    assert acknowledged, "the writer got no write acknowledged"
    assert searchable, "no write became searchable while the rebuild ran"
    # Writes kept being applied to the serving collection during the build, and went into the new one before the
    # switch (replayed from the journal), not only after it.
    replayed = [line for line in report.lines if "replayed into it" in line]
    assert replayed, report.lines
    assert int(replayed[0].split()[1]) > 0, replayed
    wait_until(lambda: not _journal(search_stores, state="pending"), what="writes applied after the switch", timeout=90)

    in_milvus, in_mongo = _stored_ids(search_stores)
    for doc_id, op in acknowledged.items():
        assert (doc_id in in_milvus) == (op == "upsert"), (doc_id, op)
        assert (doc_id in in_mongo) == (op == "upsert"), (doc_id, op)
    assert removed not in in_milvus
    assert removed not in in_mongo  # a rebuild never brings a deleted id back
    assert live.get(changed).json()["document"]["answer"] == changed_doc["answer"]
    client = _mongo(search_stores)
    try:
        state = live_state(client[MONGO_DATABASE]["changes"], CORPUS)
    finally:
        client.close()
    expected = (set(file_ids) | state.upserted) - state.deleted
    assert in_milvus == in_mongo == expected


def test_a_replace_rebuild_makes_the_file_the_whole_corpus(
    live: Live, live_rows: dict[int, dict[str, Any]], model_repo: ModelRepository, search_stores: Stores, tmp_path: Path
) -> None:
    from offline.ingest.live_writes import LiveMode
    from offline.ingest.steps import run_ingest
    from offline.preprocess.qa import QAOptions, preprocess_qa

    raw = _raw_file(live_rows, tmp_path)
    report = run_ingest(
        _ingest_options(model_repo, search_stores, tmp_path / "work", LiveMode.REPLACE),
        lambda out: preprocess_qa(raw, out, QAOptions.for_format("jsonl")),
    )
    assert any("superseded by the file" in line for line in report.lines), report.lines
    in_milvus, in_mongo = _stored_ids(search_stores)
    assert in_milvus == in_mongo == set(live_rows)
    assert not _journal(search_stores, state="applied")
    assert live.get(min(live_rows)).json()["state"] == "ingested"
    # The corpus takes live writes again, versions starting afresh.
    assert live.put(904000, {"question": "After the replace?", "answer": "Yes."}, version=1).status_code == 200


def test_reindex_rebuilds_the_vectors_from_mongodb_keeping_live_documents(
    live: Live, model_repo: ModelRepository, search_stores: Stores, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from offline.ingest.reindex import reindex

    assert live.put(905000, {"question": "Kept by a reindex?", "answer": "Yes."}).status_code == 200
    before = _alias_target(search_stores)
    result = CliRunner().invoke(
        reindex,
        ["--corpus", CORPUS, "--work-dir", str(tmp_path / "w"), "--milvus-uri", search_stores.milvus_uri],
        env={"MMSEARCH_MODEL_REPO": str(model_repo.root), "MMSEARCH_MONGO__URI": search_stores.mongo_uri},
    )
    assert result.exit_code == 0, result.output
    assert _alias_target(search_stores) != before
    in_milvus, in_mongo = _stored_ids(search_stores)
    assert 905000 in in_milvus
    assert in_milvus == in_mongo
    assert live.search("Kept by a reindex?")[0] == "905000"
    assert _bm25(search_stores, "Kept by a reindex?").get(905000)  # the lexical field is rebuilt too


def test_writes_pending_through_a_model_change_are_encoded_again_with_the_new_model(
    live: Live, model_repo: ModelRepository, search_stores: Stores, tmp_path: Path
) -> None:
    """Last: it moves the module's corpus to another model. Writes accepted with the old model's vectors and still
    pending when the reindex switches (those accepted while it held the corpus for its replay) are encoded again
    with the corpus's new model before they are applied: every document ends with the new model's vector."""
    import datetime as dt
    import re
    import threading

    import numpy as np
    from click.testing import CliRunner

    from offline.encode.pipeline import encode_rows
    from offline.ingest.reindex import reindex
    from offline.preprocess.records import CorpusRow

    new_model = "tiny-clip-text"
    last: dict[int, dict[str, Any]] = {}  # id -> last document acknowledged
    stop = threading.Event()

    def writer() -> None:
        n = 0
        with httpx.Client(base_url=live.running.url, timeout=60) as http:
            while not stop.is_set():
                doc_id = 906000 + n % 30
                body = {"question": f"Written across a model change {n}?", "answer": str(n)}
                reply = http.put(f"/corpora/{CORPUS}/documents/{doc_id}", json=body, params={"wait": "false"})
                if reply.status_code in (200, 202):
                    last[doc_id] = body
                n += 1
                time.sleep(0.02)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        result = CliRunner().invoke(
            reindex,
            [
                *("--corpus", CORPUS, "--model", new_model, "--work-dir", str(tmp_path / "w")),
                *("--milvus-uri", search_stores.milvus_uri),
            ],
            env={"MMSEARCH_MODEL_REPO": str(model_repo.root), "MMSEARCH_MONGO__URI": search_stores.mongo_uri},
        )
        switched = dt.datetime.now(dt.UTC)
        time.sleep(1.5)
    finally:
        stop.set()
        thread.join()
    assert result.exit_code == 0, result.output
    wait_until(lambda: not _journal(search_stores, state="pending"), what="writes applied after the switch", timeout=90)
    assert not _journal(search_stores, state="failed", doc_id={"$gte": 906000})

    # Some writes made with MiniLM were applied after the switch: the applier's path, not the rebuild's replay.
    straddled = [
        e
        for e in _journal(search_stores, state="applied", encoded_with=re.compile("^minilm/"), doc_id={"$gte": 906000})
        if e["applied_at"] > switched
    ]
    assert straddled, "no write accepted with the old model was pending through the switch"

    rows = _milvus_rows(search_stores, sorted(last))
    assert set(rows) == set(last)
    expected = encode_rows(
        [CorpusRow(id=i, **d) for i, d in sorted(last.items())], model_repo, new_model, "question", batch_size=1
    )
    for (doc_id, _), want in zip(sorted(last.items()), expected, strict=True):
        got = np.asarray(rows[doc_id]["question_emb"], dtype=np.float32)
        assert got.shape == want.shape, (doc_id, got.shape, want.shape)
        assert np.abs(got - want).max() < 1e-5, doc_id
