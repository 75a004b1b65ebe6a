"""The search service end to end: real tokenizer and model server processes, milvus-lite server, SecantusDB with the
FAQ ingested, the A/B config in the Consul KV test double (read by the real py-consul client)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mmsearch.model_repo import ModelRepository
from tests.doubles.consul_kv import ConsulKVDouble
from tests.fixtures.prometheus import scrape
from tests.fixtures.search import (
    AB_CONFIG,
    CONSUL_KEY,
    FaqCorpus,
    PhotoCorpus,
    RunningSearch,
    Stores,
    http_ok,
    start_search,
    tiny_clip_config,
)

pytestmark = pytest.mark.integration

ITEM_KEYS = {
    "id",
    "originalRetrievalScoreMap",
    "finalRetrievalScore",
    "originalRankingScoreMap",
    "finalRankingScore",
    "score",
    "summary",
}


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    lists = body["searchItemModels"]
    assert isinstance(lists, list)
    assert len(lists) == 1  # one list per query, as the reference
    return lists[0]  # type: ignore[no-any-return]


def _config_with(**rank_ratios: float) -> str:
    doc = yaml.safe_load(AB_CONFIG.read_text())
    rank = next(la for la in doc["scene-config"]["scenes"][0]["layers"] if la["name"] == "rank.qa")
    rank["normalLayerArgs"] = [{"experimentName": k.replace("_", "."), "ratio": v} for k, v in rank_ratios.items()]
    return yaml.safe_dump(doc, sort_keys=False)


def _wait_for(what: str, check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not seen within {timeout}s")


def test_qa_returns_reference_shape_and_the_paraphrased_question_first(
    search_service: RunningSearch, faq_corpus: FaqCorpus
) -> None:
    status, body = search_service.post("/qa/user/10", {"query": "what is a building permit (bygglov)?"})
    assert status == 200, body
    assert body["queryModel"] == {"query": "what is a building permit (bygglov)?"}
    items = _items(body)
    assert 0 < len(items) <= 50
    top = items[0]
    assert set(top) == ITEM_KEYS
    assert faq_corpus.questions[top["id"]] == "What is a bygglov (building permit)?"
    assert set(top["summary"]) == {"question", "answer", "category"}
    assert top["summary"]["question"] == "What is a bygglov (building permit)?"
    assert top["summary"]["category"] == ["bygglov"]
    # The reference's score rule: raw / (max + 0.001) + 3 for the ANN matcher.
    raw = top["originalRetrievalScoreMap"]["ann_matcher"]
    assert top["finalRetrievalScore"] == pytest.approx(raw / (raw + 0.001) + 3, rel=1e-6)
    experiments = body["experiments"]
    assert isinstance(experiments, dict)
    assert set(experiments) == {"qp.qa", "match.qa", "rank.qa", "summary.qa"}
    # rank.qa.dummy scores under "dummy", rank.qa.mmr under "mmr".
    assert set(top["originalRankingScoreMap"]) == {str(experiments["rank.qa"]).rsplit(".", 1)[1]}


def test_debug_pins_an_experiment_and_reports_stage_times(search_service: RunningSearch) -> None:
    body_in = {"query": "How long does a permit take?", "useDebug": True, "topK": 5}
    for exp, key in (("rank.qa.mmr", "mmr"), ("rank.qa.dummy", "dummy")):
        status, body = search_service.post("/qa/user/10", {**body_in, "specifiedLayerAndExperiment": {"rank.qa": exp}})
        assert status == 200, body
        assert body["experiments"]["rank.qa"] == exp  # type: ignore[index]
        items = _items(body)
        assert len(items) == 5
        assert all(set(i["originalRankingScoreMap"]) == {key} for i in items)
        debug = body["debug"]
        assert isinstance(debug, dict)
        assert set(debug["stageMs"]) == {"qp.qa", "match.qa", "rank.qa", "summary.qa"}
        assert all(v >= 0 for v in debug["stageMs"].values())


def test_category_filter_is_applied(search_service: RunningSearch, faq_corpus: FaqCorpus) -> None:
    status, body = search_service.post(
        "/qa/user/3", {"query": "what does it cost?", "filters": {"category": "garantier"}, "topK": 10}
    )
    assert status == 200, body
    items = _items(body)
    assert items
    assert all(faq_corpus.categories[i["id"]] == ["garantier"] for i in items)
    # Hostile values are data, not expression code: nothing matches, nothing breaks.
    status, body = search_service.post(
        "/qa/user/3", {"query": "x", "filters": {"category": 'a") or id > 0 or ARRAY_CONTAINS(category, "b'}}
    )
    assert status == 200, body
    assert _items(body) == []
    status, body = search_service.post("/qa/user/3", {"query": "x", "filters": {"answer": "y"}})
    assert status == 422
    assert "filterable fields are category" in str(body["message"])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "query"),
        ({"query": ""}, "empty"),
        ({"query": "   \n\t"}, "whitespace"),
        ({"query": "x" * 513}, "limit is 512"),
        ({"query": "ok", "useDebug": True, "specifiedLayerAndExperiment": {"rank.qa": "nope"}}, "no experiment"),
    ],
)
def test_bad_queries_are_422_with_the_reason(search_service: RunningSearch, body: dict[str, Any], reason: str) -> None:
    status, out = search_service.post("/qa/user/10", body)
    assert status == 422
    assert reason in str(out)


def test_unknown_and_disabled_scenes(search_service: RunningSearch) -> None:
    status, body = search_service.post("/scene/noSuchScene/user/1", {"query": "x"})
    assert status == 404
    assert "noSuchScene" in str(body["message"])
    # The stack's repository has no "clip-text" model: textToImage is disabled and says how to enable it.
    status, body = search_service.post("/t2i/user/1", {"query": "a cat"})
    assert status == 503
    assert body["error"] == "scene_disabled"
    assert "clip-text" in str(body["message"])
    assert "mmsearch export" in str(body["message"])


def test_ready_health_metrics_and_openapi(search_service: RunningSearch) -> None:
    assert search_service.get("/health") == (200, {"status": "ok"})
    status, ready = search_service.get("/ready")
    assert status == 200, ready
    assert ready["checks"] == {
        "tokenizer": "ok",
        "model server": "ok",
        "milvus": "ok",
        "mongodb": "ok",
        "config": "ok",
    }
    assert search_service.post("/qa/user/77", {"query": "insurance"})[0] == 200
    text = scrape(search_service.url + "/metrics")
    assert (
        'mmsearch_search_stage_seconds_bucket{experiment="match.qa.base",le="0.001",scene="questionAnswer",stage="match"}'
        in text
    )
    assert 'mmsearch_search_requests_total{scene="questionAnswer",status="ok"}' in text
    assert "mmsearch_search_experiment_requests_total" in text
    assert 'mmsearch_search_config_reloads_total{source="consul"}' in text
    status, spec = search_service.get("/openapi.json")
    assert status == 200
    assert "/qa/user/{user_id}" in spec["paths"]  # type: ignore[operator]
    # One exposure line per request: user, experiments, latency.
    exposure = [ln for ln in search_service.log_text().splitlines() if '"event": "exposure"' in ln and '"77"' in ln]
    assert exposure
    assert '"experiments": {"qp.qa": "qp.qa.base"' in exposure[-1]
    assert '"latency_ms"' in exposure[-1]


def test_ab_change_in_consul_applies_under_traffic_without_restart(
    search_service: RunningSearch, consul_kv: ConsulKVDouble
) -> None:
    key = search_service.consul_key
    original = AB_CONFIG.read_text()
    seen: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        u = 0
        while not stop.is_set():
            u += 1
            status, body = search_service.post(f"/qa/user/u{u}", {"query": "building permit", "topK": 3})
            if status != 200:
                errors.append(f"{status} {body}")
            else:
                seen.append(body["experiments"]["rank.qa"])  # type: ignore[index]

    workers = [threading.Thread(target=traffic) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        consul_kv.put(key, _config_with(rank_qa_dummy=1.0))
        _wait_for("every user on rank.qa.dummy", lambda: len(seen) > 20 and set(seen[-20:]) == {"rank.qa.dummy"})
        mark = len(seen)
        consul_kv.put(key, _config_with(rank_qa_mmr=1.0))
        _wait_for("every user on rank.qa.mmr", lambda: len(seen) > mark + 20 and set(seen[-20:]) == {"rank.qa.mmr"})
        # An invalid edit is rejected; the config in force keeps serving.
        mark = len(seen)
        consul_kv.put(key, _config_with(rank_qa_mmr=1.0).replace("rankerName: mmr", "rankerName: xgboost"))
        _wait_for("requests after the bad edit", lambda: len(seen) > mark + 10)
        assert set(seen[mark + 5 :]) == {"rank.qa.mmr"}
        _wait_for("rejection reported", lambda: "xgboost" in str(search_service.get("/ready")[1]["config"]))
    finally:
        stop.set()
        for w in workers:
            w.join()
        consul_kv.put(key, original)
    assert not errors, errors[:3]
    assert search_service.last_good.read_text() != ""


def test_mongodb_down_is_503_naming_it_and_recovers(search_service: RunningSearch, search_stores: Stores) -> None:
    search_stores.stop_mongo()
    try:
        status, body = search_service.post("/qa/user/5", {"query": "building permit"})
        assert status == 503
        assert body["dependency"] == "mongodb"
        status, ready = search_service.get("/ready")
        assert status == 503
        assert ready["notReady"] == ["mongodb"]
    finally:
        search_stores.start_mongo()
    _wait_for("search works again", lambda: search_service.post("/qa/user/5", {"query": "building permit"})[0] == 200)
    assert http_ok(search_service.url + "/ready")


def test_consul_unreachable_at_start_serves_last_good_and_follows_consul_when_back(  # noqa: PLR0917 - fixtures
    model_repo: ModelRepository,
    tokenizer_target: str,
    model_server_target: str,
    search_stores: Stores,
    faq_corpus: FaqCorpus,
    tmp_path: Path,
) -> None:
    down = ConsulKVDouble().start()
    port = down.port
    down.stop()  # nothing listens on this port now
    (tmp_path / "last-good-config.yaml").write_text(_config_with(rank_qa_dummy=1.0))
    with start_search(
        repo=model_repo.root,
        tokenizer_target=tokenizer_target,
        model_server_target=model_server_target,
        milvus_uri=search_stores.milvus_uri,
        mongo_uri=search_stores.mongo_uri,
        consul=down,
        consul_key=CONSUL_KEY,
        work_dir=tmp_path,
    ) as search:
        status, ready = search.get("/ready")
        assert status == 200, ready
        assert str(ready["config"]["origin"]).startswith("last-good:")  # type: ignore[index]
        assert "unreachable" in str(ready["degraded"])
        assert search.post("/qa/user/1", {"query": "permit"})[1]["experiments"]["rank.qa"] == "rank.qa.dummy"  # type: ignore[index]
        back = ConsulKVDouble(port=port).start()
        try:
            back.put(CONSUL_KEY, _config_with(rank_qa_mmr=1.0))
            _wait_for(
                "the Consul config served",
                lambda: search.post("/qa/user/1", {"query": "permit"})[1]["experiments"]["rank.qa"] == "rank.qa.mmr",  # type: ignore[index]
            )
            status, ready = search.get("/ready")
            assert ready["degraded"] == []
            assert ready["config"]["origin"] == f"consul:{CONSUL_KEY}"  # type: ignore[index]
            # The new config is the last good one now.
            assert "rank.qa.mmr" in (tmp_path / "last-good-config.yaml").read_text()
        finally:
            back.stop()


def test_milvus_down_is_503_naming_it_and_recovers(search_service: RunningSearch, search_stores: Stores) -> None:
    search_stores.stop_milvus()
    try:
        status, body = search_service.post("/qa/user/5", {"query": "building permit"})
        assert status == 503
        assert body["dependency"] == "milvus"
        assert "milvus" in search_service.get("/ready")[1]["notReady"]  # type: ignore[operator]
    finally:
        search_stores.start_milvus()
    _wait_for("search works again", lambda: search_service.post("/qa/user/5", {"query": "building permit"})[0] == 200)


def test_image_scenes_with_the_tiny_clip_towers(
    search_service: RunningSearch, consul_kv: ConsulKVDouble, photo_corpus: PhotoCorpus
) -> None:
    """Random-weight CLIP: meanings are noise, but an image searched by itself must come back first."""
    import httpx

    consul_kv.put(search_service.consul_key, tiny_clip_config())
    try:
        _wait_for(
            "image scenes enabled",
            lambda: search_service.get("/ready")[1]["config"]["scenes"]["imageToImage"] == "enabled",  # type: ignore[index]
        )
        pid, path = next(iter(photo_corpus.files.items()))
        with httpx.Client(base_url=search_service.url, timeout=30) as http:
            r = http.post(
                "/i2i/user/10",
                files={"image": (path.name, path.read_bytes(), "image/jpeg")},
                data={"useDebug": "true", "topK": "3"},
            )
            assert r.status_code == 200, r.text
            body = r.json()
            items = _items(body)
            assert len(items) == 3
            assert items[0]["id"] == pid
            assert items[0]["summary"]["name"] == path.name
            assert set(items[0]["summary"]) == {"name", "url"}
            assert set(body["debug"]["stageMs"]) == {"qp.i2i", "match.i2i", "rank.i2i", "summary.i2i"}
            # Not an image: 415; too large: 413 (limit search.max_upload_mb); nothing fetched from URLs.
            r = http.post("/i2i/user/10", files={"image": ("x.txt", b"http://example.com/a.jpg", "text/plain")})
            assert r.status_code == 415
            big = b"\xff\xd8\xff" + b"0" * (8 * 1024 * 1024 + 1)
            r = http.post("/i2i/user/10", files={"image": ("big.jpg", big, "image/jpeg")})
            assert r.status_code == 413
            r = http.post("/i2i/user/10", files={"image": ("bad.jpg", b"\xff\xd8\xff garbage", "image/jpeg")})
            assert r.status_code == 422
            assert "image" in r.json()["message"]
        status, body = search_service.post("/t2i/user/10", {"query": "a cat on a sofa", "topK": 4})
        assert status == 200, body
        items = _items(body)
        assert len(items) == 4
        assert all(i["id"] in photo_corpus.names for i in items)
    finally:
        consul_kv.put(search_service.consul_key, AB_CONFIG.read_text())
