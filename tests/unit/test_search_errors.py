"""Error mapping with the real clients and no servers: a closed port or a silent peer becomes a 503 naming the
dependency within the stage timeout; the app answers /health, reports /ready per dependency, and keeps 422s."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mmsearch.settings import AuthSettings, MilvusSettings, MongoSettings, SearchSettings, Settings
from services.search.adapters import GrpcQueryModels, MilvusVectorStore, MongoDocumentStore
from services.search.app import create_app
from services.search.errors import DependencyUnavailableError
from services.search.ports import AnnSearch
from tests.fixtures.ports import free_port

AB_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ab-config.yaml"


@pytest.fixture
def silent_peer() -> Iterator[str]:
    """A port that accepts connections and never answers (a hung dependency)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def _settings(tmp_path: Path, tokenizer: str, model: str) -> Settings:
    closed = free_port()
    return Settings(
        model_repo=tmp_path / "models",
        milvus=MilvusSettings(uri=f"http://127.0.0.1:{closed}", timeout_seconds=1.0),
        mongo=MongoSettings(uri=f"mongodb://127.0.0.1:{closed}", timeout_ms=500),
        search=SearchSettings(
            tokenizer_target=tokenizer,
            model_server_target=model,
            config_file=AB_CONFIG,
            last_good_config=tmp_path / "last-good.yaml",
            stage_timeout_seconds=0.5,
        ),
        # These tests are about dependencies, not keys (tests/unit/test_search_auth*.py are).
        auth=AuthSettings(mode="off"),
    )


def test_closed_and_silent_dependencies_are_named_503s(tmp_path: Path, silent_peer: str) -> None:
    closed = f"127.0.0.1:{free_port()}"
    settings = _settings(tmp_path, tokenizer=closed, model=silent_peer)

    async def go() -> list[DependencyUnavailableError]:
        models = GrpcQueryModels(settings)
        vectors = MilvusVectorStore(settings)
        docs = MongoDocumentStore(settings)
        errors = []
        calls = [
            models.tokenize("minilm", ["x"]),
            models.embed("minilm", {"input_ids": np.zeros((1, 2), dtype=np.int64)}, "sentence_embedding"),
            vectors.search(AnnSearch("faq_qa", "question_emb", (0.1,), 5, {}, None, "", False)),
            docs.fetch("faq_qa", ["1"], ["question"]),
        ]
        for call in calls:
            with pytest.raises(DependencyUnavailableError) as info:
                await call
            errors.append(info.value)
        await models.close()
        await vectors.aclose()
        await docs.aclose()
        return errors

    errors = asyncio.run(go())
    assert [e.dependency for e in errors] == ["tokenizer", "model server", "milvus", "mongodb"]
    assert all(e.status_code == 503 for e in errors)


def test_app_without_dependencies_is_alive_not_ready_and_still_validates(tmp_path: Path) -> None:
    closed = f"127.0.0.1:{free_port()}"
    app = create_app(_settings(tmp_path, tokenizer=closed, model=closed))
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["notReady"] == ["config", "milvus", "model server", "mongodb", "tokenizer"]
        r = client.post("/qa/user/1", json={"query": "  "})
        assert r.status_code == 422
        assert r.json()["error"] == "invalid_query"
        r = client.post("/qa/user/1", json={"query": "permit"})
        assert r.status_code == 503
        assert r.json()["dependency"] == "config"
        assert "milvus" in r.json()["message"]  # the config waits for Milvus to be validated
        r = client.post("/qa/user/1", json={"useDebug": True})
        assert r.status_code == 422
        assert "query" in r.text
        metrics = client.get("/metrics").text
        assert 'mmsearch_search_requests_total{scene="questionAnswer",status="InvalidQueryError"} 1.0' in metrics


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b"garbage", "application/json", "the body is not valid JSON"),
        (b"[1,2]", "application/json", "the body must be a JSON object such as"),
        (b'"text"', "application/json", "not a JSON string"),
        (b"", "application/json", "the body is empty"),
        (b'{"query": 5}', "application/json", "query: Input should be a valid string (got 5)"),
        (b'{"query": "permit", "topK": -3}', "application/json", "topK: Input should be greater than 0 (got -3)"),
        (b'{"topK": 5}', "application/json", "query is required (in the body)"),
        (
            b'{"query": "a", "filters": {"c": {"x": 1}}}',
            "application/json",
            "filters.c: Input should be a valid string,",
        ),
        (b"query=permit", "application/x-www-form-urlencoded", "the body is not valid JSON"),
    ],
)
def test_every_malformed_body_gets_the_documented_error_shape(
    tmp_path: Path, body: bytes, content_type: str, says: str
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    app = create_app(_settings(tmp_path, tokenizer=closed, model=closed))
    with TestClient(app) as client:
        for path in ("/qa/user/1", "/t2i/user/1", "/scene/questionAnswer/user/1"):
            r = client.post(path, content=body, headers={"Content-Type": content_type})
            assert r.status_code == 422, r.text
            assert set(r.json()) == {"error", "message", "dependency"}, r.json()
            assert r.json()["error"] == "invalid_request"
            assert r.json()["dependency"] is None
            assert says in r.json()["message"]


def test_routing_and_form_errors_get_the_documented_error_shape(tmp_path: Path) -> None:
    closed = f"127.0.0.1:{free_port()}"
    app = create_app(_settings(tmp_path, tokenizer=closed, model=closed))
    with TestClient(app) as client:
        for r, status, kind in [
            (client.post("/nowhere", json={"query": "x"}), 404, "not_found"),
            (client.get("/qa/user/1"), 405, "method_not_allowed"),
            (client.post("/qa/user/" + "u" * 129, json={"query": "x"}), 422, "invalid_request"),
            (client.post("/i2i/user/1", data={"topK": "3"}), 422, "invalid_request"),  # no image part
            (client.post("/i2i/user/1", files={"image": ("a.txt", b"hello", "text/plain")}), 415, "unsupported_image"),
        ]:
            assert r.status_code == status, r.text
            assert set(r.json()) == {"error", "message", "dependency"}, r.json()
            assert r.json()["error"] == kind
        assert "GET /qa/user/1" in client.get("/qa/user/1").json()["message"]
        assert "image is required" in client.post("/i2i/user/1", data={"topK": "3"}).json()["message"]


def test_openapi_documents_one_error_shape(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, tokenizer="127.0.0.1:1", model="127.0.0.1:1"))
    schema = app.openapi()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path in ("/qa/user/{user_id}", "/t2i/user/{user_id}", "/i2i/user/{user_id}", "/scene/{scene}/user/{user_id}"):
        responses = schema["paths"][path]["post"]["responses"]
        for status in ("404", "413", "415", "422", "503"):
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ErrorBody", (path, status)


def test_an_asyncio_client_that_keeps_missing_its_deadline_is_replaced(tmp_path: Path, silent_peer: str) -> None:
    """A silent MongoDB (it accepts, never answers) with pymongo's own waits far longer than the stage timeout: each
    fetch is a 503 at the deadline, and after WEDGED_AFTER_MISSES in a row the client is dropped, so the next
    call reaches MongoDB through a fresh one (pymongo's asyncio client could wedge for good; see adapters.py)."""
    from services.search.adapters import WEDGED_AFTER_MISSES

    settings = _settings(tmp_path, tokenizer=silent_peer, model=silent_peer)
    settings = settings.model_copy(
        update={
            "mongo": MongoSettings(uri=f"mongodb://{silent_peer}", timeout_ms=2_000),
            "search": settings.search.model_copy(update={"stage_timeout_seconds": 0.3}),
        }
    )

    async def go() -> tuple[list[object], list[str]]:
        docs = MongoDocumentStore(settings)
        clients, messages = [], []
        for _ in range(WEDGED_AFTER_MISSES + 1):
            clients.append(docs._aget())
            with pytest.raises(DependencyUnavailableError) as info:
                await docs.fetch("faq_qa", ["1"], ["question"])
            messages.append(info.value.message)
        await docs.aclose()
        return clients, messages

    clients, messages = asyncio.run(go())
    assert all("no answer within 0.3s" in m for m in messages), messages
    assert all(c is clients[0] for c in clients[:WEDGED_AFTER_MISSES])  # kept while it only missed a few
    assert clients[WEDGED_AFTER_MISSES] is not clients[0]  # replaced after the misses in a row


def test_a_failure_inside_pymongo_itself_is_told_apart_from_ours() -> None:
    from pymongo import MongoClient

    from services.search.adapters import raised_in

    try:
        MongoClient(port="not a port")  # type: ignore[arg-type]  # pymongo raises a TypeError of its own
    except TypeError as exc:
        theirs: Exception = exc
    try:
        raise RuntimeError("Lock is not acquired")  # the same kind of error, raised by our code
    except RuntimeError as exc:
        ours: Exception = exc
    assert raised_in(theirs, "pymongo")
    assert not raised_in(ours, "pymongo")
    assert not raised_in(RuntimeError("never raised"), "pymongo")
    settings = Settings(mongo=MongoSettings(uri="mongodb://127.0.0.1:1"))
    store = MongoDocumentStore(settings)
    assert store._is_unavailable(theirs)  # replaced and a 503, not a 500
    assert not store._is_unavailable(ours)
    store.close()
