"""Online outcomes through the real search service and a real wire-protocol MongoDB (SecantusDB): every response's
requestId, its exposure document, POST /feedback and its refusals, and `mmsearch ab report` on synthetic traffic
with a known click model."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pymongo import MongoClient

from mmsearch.cli.main import cli
from mmsearch.model_repo import ModelRepository
from services.search.bucketing import pick
from services.search.config.manager import parse_config
from tests.doubles.consul_kv import ConsulKVDouble
from tests.fixtures.ports import wait_until
from tests.fixtures.prometheus import metric_value, scrape
from tests.fixtures.search import (
    AB_CONFIG,
    CONSUL_KEY,
    MONGO_DATABASE,
    FaqCorpus,
    RunningSearch,
    Stores,
    start_search,
)

pytestmark = pytest.mark.integration

LAYER = "match.qa"
BASE, HYBRID = "match.qa.base", "match.qa.hybrid"


@pytest.fixture
def mongo(search_stores: Stores) -> Iterator[Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(search_stores.mongo_uri, serverSelectionTimeoutMS=5000)
    yield client[MONGO_DATABASE]
    client.close()


def _exposure(db: Any, request_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def stored() -> bool:
        doc = db.exposures.find_one({"requestId": request_id}, {"_id": 0})
        if doc:
            found.append(doc)
        return doc is not None

    wait_until(stored, what=f"exposure {request_id} in MongoDB", timeout=30)
    return found[0]


def _search(
    svc: RunningSearch, user: str, query: str = "how do I get a building permit?", **extra: Any
) -> dict[str, Any]:
    status, body = svc.post(f"/qa/user/{user}", {"query": query, **extra})
    assert status == 200, body
    return body


def test_every_answer_carries_a_request_id_and_its_exposure_reaches_mongodb(
    search_service: RunningSearch, faq_corpus: FaqCorpus, mongo: Any
) -> None:
    body = _search(search_service, "outcome-u1", topK=5, offset=2)
    ids = [it["id"] for it in body["searchItemModels"][0]]
    doc = _exposure(mongo, body["requestId"])
    assert doc["userId"] == "outcome-u1"
    assert doc["scene"] == "questionAnswer"
    assert {e["layer"]: e["experiment"] for e in doc["experiments"]} == body["experiments"]
    # Positions are ranks in the whole list: the page starts after offset 2.
    assert doc["items"] == [{"id": i, "position": 3 + n} for n, i in enumerate(ids)]
    assert (doc["pinned"], doc["pinnedLayers"], doc["offset"]) == (False, [], 2)
    assert isinstance(doc["time"], dt.datetime)

    pinned = _search(search_service, "outcome-u1", useDebug=True, specifiedLayerAndExperiment={LAYER: HYBRID})
    assert pinned["requestId"] != body["requestId"]
    doc = _exposure(mongo, pinned["requestId"])
    assert (doc["pinned"], doc["pinnedLayers"]) == (True, [LAYER])
    # The TTL indexes exist (default 30 days) and events are unique per (requestId, itemId, event).
    ttl = {ix["name"]: ix.get("expireAfterSeconds") for ix in mongo.exposures.list_indexes()}
    assert ttl["ttl_time"] == 30 * 86_400
    unique = {ix["name"]: ix for ix in mongo.events.list_indexes()}
    assert unique["event_unique"]["unique"] is True


def test_feedback_is_stored_once_and_refused_for_what_was_not_shown(
    search_service: RunningSearch, faq_corpus: FaqCorpus, mongo: Any
) -> None:
    body = _search(search_service, "outcome-u2", topK=3)
    rid, shown = body["requestId"], [it["id"] for it in body["searchItemModels"][0]]
    other = next(i for i in faq_corpus.questions if i not in shown)
    fb = {"requestId": rid, "userId": "outcome-u2", "itemId": shown[1], "event": "click"}

    status, out = search_service.post("/feedback", fb)
    assert (status, out["recorded"], out["position"]) == (200, True, 2), out
    status, out = search_service.post("/feedback", fb)
    assert (status, out["recorded"]) == (200, False), out

    refusals = [
        ({**fb, "requestId": "f" * 32}, 404, "unknown_request"),
        ({**fb, "userId": "someone-else"}, 404, "unknown_request"),
        ({**fb, "itemId": other}, 422, "item_not_shown"),
        ({**fb, "event": "purchase"}, 422, "invalid_request"),
        ({**fb, "value": "x" * 257}, 422, "invalid_request"),
        ({**fb, "value": 1e300}, 422, "invalid_request"),
        ({**fb, "value": "x\udc00"}, 422, "invalid_request"),  # a lone surrogate: not text MongoDB can store
        ({**fb, "extra": 1}, 422, "invalid_request"),
        ({k: v for k, v in fb.items() if k != "itemId"}, 422, "invalid_request"),
    ]
    for sent, want_status, want_error in refusals:
        status, out = search_service.post("/feedback", sent)
        assert (status, out["error"]) == (want_status, want_error), (sent, out)
        assert out["message"]
    # A body far over the limit is refused before it is parsed.
    status, out = search_service.post("/feedback", {**fb, "value": 1, "pad": "x" * 200_000})
    assert (status, out["error"]) == (413, "body_too_large")

    # A flood: every event kind on every item shown, each sent 20 times, 8 at a time. Each distinct event is
    # stored exactly once (nothing lost, nothing doubled), and every request is answered.
    wanted = [(item, kind) for item in shown for kind in ("click", "like", "dislike")]
    sends = [{**fb, "itemId": item, "event": kind, "value": 1.5} for item, kind in wanted for _ in range(20)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: search_service.post("/feedback", b), sends))
    assert {status for status, _ in answers} == {200}
    assert sum(bool(out["recorded"]) for _, out in answers) == len(wanted) - 1  # the click on shown[1] came before
    stored = list(mongo.events.find({"requestId": rid}, {"_id": 0}))
    assert sorted((e["itemId"], e["event"]) for e in stored) == sorted(wanted)
    assert all(e["scene"] == "questionAnswer" and e["userId"] == "outcome-u2" for e in stored)


def _run_report(svc: RunningSearch, search_stores: Stores, since: dt.datetime, *extra: str) -> Result:
    """`mmsearch ab report` for questionAnswer against the session's service and MongoDB, succeeded."""
    result = CliRunner().invoke(
        cli,
        [
            *("ab", "report", "--scene", "questionAnswer", "--since", since.isoformat()),
            *("--search-url", svc.url, "--mongo-uri", search_stores.mongo_uri, "--database", MONGO_DATABASE),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return result


def _report(svc: RunningSearch, search_stores: Stores, since: dt.datetime) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(_run_report(svc, search_stores, since, "--format", "json").stdout)
    return report


def _settle(db: Any, request_ids: list[str]) -> None:
    wait_until(
        lambda: db.exposures.count_documents({"requestId": {"$in": request_ids}}) == len(request_ids),
        what="every exposure in MongoDB",
        timeout=60,
    )


def test_ab_report_finds_a_known_click_difference_and_a_broken_split(
    search_service: RunningSearch, search_stores: Stores, faq_corpus: FaqCorpus, mongo: Any, tmp_path: Path
) -> None:
    # Users of the hybrid experiment click the first result twice as often (40%) as everyone else (20%).
    rng = random.Random(13)
    click_rate = {HYBRID: 0.4}
    since = dt.datetime.now(dt.UTC)
    users = [f"click-model-{n}" for n in range(900)]

    def visit(user: str) -> tuple[str, dict[str, Any]]:
        body = _search(search_service, user, topK=5)
        return str(body["requestId"]), body

    with ThreadPoolExecutor(8) as pool:
        visits = list(pool.map(visit, users))
    for user, (rid, body) in zip(users, visits, strict=True):
        if rng.random() < click_rate.get(body["experiments"][LAYER], 0.2):
            first = body["searchItemModels"][0][0]["id"]
            status, out = search_service.post(
                "/feedback", {"requestId": rid, "userId": user, "itemId": first, "event": "click"}
            )
            assert status == 200, out
    # Pinned requests (as `mmsearch eval` sends) are left out of the report and counted apart.
    _search(search_service, "click-model-pinned", useDebug=True, specifiedLayerAndExperiment={LAYER: BASE})
    _settle(mongo, [rid for rid, _ in visits])

    report = _report(search_service, search_stores, since)
    assert report["pinned_requests"] >= 1
    rows = report["layers"][LAYER]
    assert list(rows) == [BASE, HYBRID, "match.qa.weighted"]
    assert sum(r["exposures"] for r in rows.values()) == len(users)
    assert all(r["users"] == r["exposures"] for r in rows.values())  # one search per user
    hybrid = rows[HYBRID]
    assert hybrid["diff"]["vs"] == BASE
    lo, hi = hybrid["diff"]["ci"]
    assert 0 < lo <= hybrid["diff"]["ctr"] <= hi, hybrid
    assert rows[HYBRID]["mrr_first_click"] == 1.0  # every click was on the first result
    # A sticky sha256 split of 900 users against 0.34 / 0.33 / 0.33: no mismatch.
    assert report["srm"][LAYER]["flag"] is False, report["srm"]
    assert report["srm"][LAYER]["observed"] == {n: r["users"] for n, r in rows.items()}

    # The same report as a table and as a page.
    page = tmp_path / "ab.html"
    assert _run_report(search_service, search_stores, since, "--format", "html", "--out", str(page)).output.startswith(
        "wrote"
    )
    text = page.read_text()
    assert text.startswith("<!doctype html>")
    assert HYBRID in text
    assert "<script" not in text
    table = _run_report(search_service, search_stores, since, "--format", "table").output
    assert "(baseline)" in table
    assert "SRM" in table

    # A broken split: half of the users the base experiment would get never arrive (as if it crashed for them).
    cfg = parse_config(AB_CONFIG.read_text(encoding="utf-8"), "test")
    layer = cfg.scenes["questionAnswer"].layer(LAYER)
    assert layer is not None
    skew_since = dt.datetime.now(dt.UTC)
    candidates = [f"skewed-{n}" for n in range(600)]
    arriving = [u for n, u in enumerate(candidates) if pick(layer, u)[0].name != BASE or n % 2 == 0]
    with ThreadPoolExecutor(8) as pool:
        skewed = list(pool.map(visit, arriving))
    _settle(mongo, [rid for rid, _ in skewed])
    srm = _report(search_service, search_stores, skew_since)["srm"][LAYER]
    assert srm["flag"] is True, srm
    assert srm["p"] < 0.001


def test_ab_report_errors_name_what_to_fix(search_service: RunningSearch, search_stores: Stores) -> None:
    result = CliRunner().invoke(cli, ["ab", "report", "--scene", "nope", "--search-url", search_service.url])
    assert result.exit_code != 0
    assert "unknown scene 'nope'" in result.output
    assert "questionAnswer" in result.output
    result = CliRunner().invoke(
        cli, ["ab", "report", "--scene", "questionAnswer", "--search-url", "http://127.0.0.1:9"]
    )
    assert result.exit_code != 0
    assert "--config FILE" in result.output
    result = CliRunner().invoke(cli, ["ab", "report", "--scene", "questionAnswer", "--format", "html"])
    assert result.exit_code != 0
    assert "--out" in result.output


OwnSearch = Callable[[dict[str, str]], AbstractContextManager[RunningSearch]]


@pytest.fixture
def own_search(  # noqa: PLR0917 - pytest fixtures take their dependencies as parameters
    model_repo: ModelRepository,
    tokenizer_target: str,
    model_server_target: str,
    search_stores: Stores,
    faq_corpus: FaqCorpus,
    consul_kv: ConsulKVDouble,
    tmp_path: Path,
) -> OwnSearch:
    """One more search process over the session's services and stores, with settings of its own (env)."""

    def start(env: dict[str, str]) -> AbstractContextManager[RunningSearch]:
        return start_search(
            repo=model_repo.root,
            tokenizer_target=tokenizer_target,
            model_server_target=model_server_target,
            milvus_uri=search_stores.milvus_uri,
            mongo_uri=search_stores.mongo_uri,
            consul=consul_kv,
            consul_key=CONSUL_KEY,
            work_dir=tmp_path,
            extra_env=env,
        )

    return start


def test_a_full_exposure_queue_drops_and_counts_while_searches_answer(own_search: OwnSearch, mongo: Any) -> None:
    with own_search({"MMSEARCH_SEARCH__EXPOSURE_QUEUE_SIZE": "1"}) as svc:
        users = [f"burst-{n}" for n in range(80)]
        with ThreadPoolExecutor(16) as pool:
            bodies = list(pool.map(lambda u: _search(svc, u, topK=3), users))
        ids = [b["requestId"] for b in bodies]

        def accounted() -> bool:
            stored = mongo.exposures.count_documents({"requestId": {"$in": ids}})
            lost = metric_value(scrape(svc.url + "/metrics"), "mmsearch_search_exposures_lost_total")
            return bool(stored + lost == len(ids))

        wait_until(accounted, what="every exposure stored or counted as lost", timeout=60)
        text = scrape(svc.url + "/metrics")
        assert metric_value(text, "mmsearch_search_exposures_lost_total", reason="queue_full") > 0
        assert metric_value(text, "mmsearch_search_exposures_total") > 0


def test_outcomes_switched_off_record_nothing_and_say_so_to_feedback(own_search: OwnSearch, mongo: Any) -> None:
    with own_search({"MMSEARCH_SEARCH__RECORD_OUTCOMES": "false"}) as svc:
        body = _search(svc, "outcomes-off", topK=2)
        item = body["searchItemModels"][0][0]["id"]
        fb = {"requestId": body["requestId"], "userId": "outcomes-off", "itemId": item, "event": "click"}
        status, out = svc.post("/feedback", fb)
        assert (status, out["error"]) == (503, "outcomes_disabled")
        assert "record_outcomes" in str(out["message"])
        # The exposure log line is still written, with the request id.
        wait_until(lambda: body["requestId"] in svc.log_text(), what="the exposure log line", timeout=30)
    assert mongo.exposures.count_documents({"userId": "outcomes-off"}) == 0
