"""The documents API on the real Milvus 2.3.5 server (the `milvus-server` tier, inside scripts/with-milvus-netns):
a corpus without lexical fields (that Milvus predates BM25), written, replaced, deleted and versioned through a
real search service, checked in Milvus itself (its upsert, delete by primary key, alias and flush)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from mmsearch.model_repo import ModelRepository
from tests.doubles.consul_kv import ConsulKVDouble
from tests.fixtures.search import AB_CONFIG, MONGO_DATABASE, start_search
from tests.fixtures.stores import REAL_MILVUS_ENV

pytestmark = [pytest.mark.integration, pytest.mark.milvus_server]

CORPUS = "live_real"
CONSUL_KEY = "config/test/documents-real"


@pytest.fixture(scope="module")
def real_milvus() -> str:
    uri = os.environ.get(REAL_MILVUS_ENV)
    if not uri:
        pytest.skip(f"the real Milvus 2.3.5 runs only under scripts/with-milvus-netns ({REAL_MILVUS_ENV} unset)")
    return uri


@pytest.fixture(scope="module")
def rows(
    real_milvus: str, mongo_uri: str, model_repo: ModelRepository, tmp_path_factory: pytest.TempPathFactory
) -> dict[int, dict[str, Any]]:
    from mmsearch.settings import MilvusSettings, MongoSettings
    from offline.ingest.steps import IngestOptions, run_ingest
    from offline.preprocess.demo import Demo, prepare_demo
    from offline.preprocess.qa import QAOptions, preprocess_qa

    work = tmp_path_factory.mktemp("live-real")
    full = work / "faq.jsonl"
    prepare_demo(Demo.FAQ, full)
    raw = work / "raw.jsonl"
    raw.write_text("".join(full.read_text(encoding="utf-8").splitlines(keepends=True)[:30]), encoding="utf-8")
    opts = IngestOptions(
        corpus=CORPUS,
        model_key="minilm",
        field="question",
        repo=model_repo,
        work_dir=work / "ingest",
        milvus=MilvusSettings(uri=real_milvus),
        mongo=MongoSettings(uri=mongo_uri, database=MONGO_DATABASE),
        filter_fields=["category"],
        providers=["CPUExecutionProvider"],
        live=None,
    )
    run_ingest(opts, lambda out: preprocess_qa(raw, out, QAOptions.for_format("jsonl")))
    return {int(r["id"]): r for r in map(json.loads, raw.read_text(encoding="utf-8").splitlines())}


@pytest.fixture(scope="module")
def service(  # noqa: PLR0917 - pytest fixtures
    rows: dict[int, dict[str, Any]],
    real_milvus: str,
    mongo_uri: str,
    model_repo: ModelRepository,
    tokenizer_target: str,
    model_server_target: str,
    consul_kv: ConsulKVDouble,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[httpx.Client]:
    consul_kv.put(CONSUL_KEY, AB_CONFIG.read_text(encoding="utf-8"))
    with (
        start_search(
            repo=model_repo.root,
            tokenizer_target=tokenizer_target,
            model_server_target=model_server_target,
            milvus_uri=real_milvus,
            mongo_uri=mongo_uri,
            consul=consul_kv,
            consul_key=CONSUL_KEY,
            work_dir=tmp_path_factory.mktemp("documents-real"),
            wait_ready=False,  # its scenes' corpora are not in this Milvus: the documents API needs none of them
        ) as running,
        httpx.Client(base_url=running.url, timeout=60) as client,
    ):
        yield client


def _rows_in_milvus(uri: str, ids: list[int]) -> dict[int, dict[str, Any]]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    try:
        found = client.query(
            CORPUS,
            filter=f"id in [{', '.join(map(str, ids))}]",
            output_fields=["id", "question_emb", "category"],
            consistency_level="Strong",
        )
        return {int(r["id"]): r for r in found}
    finally:
        client.close()


def test_writes_on_the_real_milvus_server(
    service: httpx.Client, rows: dict[int, dict[str, Any]], real_milvus: str
) -> None:
    source = min(rows)
    doc = {k: v for k, v in rows[source].items() if k != "id"}
    put = service.put(f"/corpora/{CORPUS}/documents/700001", json=doc)
    assert put.status_code == 200, put.text
    found = _rows_in_milvus(real_milvus, [source, 700001])
    assert set(found) == {source, 700001}
    a, b = (np.asarray(found[i]["question_emb"], dtype=np.float32) for i in (source, 700001))
    assert np.max(np.abs(a - b)) <= 1e-6
    assert found[source]["category"] == found[700001]["category"]

    replaced = service.put(
        f"/corpora/{CORPUS}/documents/700001", json={**doc, "category": ["changed"]}, params={"version": "2"}
    )
    assert replaced.status_code == 200, replaced.text
    assert _rows_in_milvus(real_milvus, [700001])[700001]["category"] == ["changed"]
    older = service.put(f"/corpora/{CORPUS}/documents/700001", json=doc, params={"version": "1"})
    assert older.status_code == 409

    batch = service.post(
        f"/corpora/{CORPUS}/documents:batch",
        json={
            "items": [
                {"op": "upsert", "id": "700002", "document": {"question": "Real Milvus?", "answer": "2.3.5."}},
                {"op": "delete", "id": str(source)},
            ]
        },
    )
    assert batch.status_code == 200, batch.text
    assert set(_rows_in_milvus(real_milvus, [source, 700001, 700002])) == {700001, 700002}
    assert service.delete(f"/corpora/{CORPUS}/documents/700001").status_code == 200
    assert set(_rows_in_milvus(real_milvus, [700001, 700002])) == {700002}
    described = service.get(f"/corpora/{CORPUS}").json()
    assert described["lexicalFields"] == []
    assert described["documents"] == described["vectors"] == len(rows)  # 700002 added, the source row deleted
