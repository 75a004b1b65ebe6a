"""The query-embedding cache through the real search service, tokenizer service and model server: a miss costs one
Embed call and nothing from the tokenizer service, a repeated query calls neither service and answers the same; a
reloaded model version empties the cache of that model; an experiment with `queryCache: false` bypasses it
(applied from Consul while the service runs)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from mmsearch.model_repo import ModelRepository
from services.model_server.client import ModelServerClient
from tests.doubles.consul_kv import ConsulKVDouble
from tests.fixtures.grpc_services import RunningService, start_service
from tests.fixtures.models import MINILM_KEY
from tests.fixtures.ports import wait_until
from tests.fixtures.prometheus import metric_value, scrape
from tests.fixtures.search import AB_CONFIG, FaqCorpus, RunningSearch, Stores, start_search
from tests.fixtures.stack import model_repo_with_minilm

pytestmark = pytest.mark.integration

KEY = "config/test/query-cache"
PIN = {"match.qa": "match.qa.base", "rank.qa": "rank.qa.dummy"}


@dataclass
class CacheStack:
    search: RunningSearch
    tokenizer: RunningService
    model: RunningService
    repo: ModelRepository


def _config(query_cache: bool) -> str:
    doc = yaml.safe_load(AB_CONFIG.read_text(encoding="utf-8"))
    base = next(e for e in doc["scene-config"]["experiments"] if e["experimentName"] == "match.qa.base")
    base["extraExperimentArgs"]["queryCache"] = query_cache
    return str(yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def cache_stack(
    model_repo: ModelRepository,
    search_stores: Stores,
    faq_corpus: FaqCorpus,
    consul_kv: ConsulKVDouble,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CacheStack]:
    root = model_repo_with_minilm(tmp_path_factory.mktemp("cache-repo"), model_repo)
    logs = tmp_path_factory.mktemp("cache-logs")
    consul_kv.put(KEY, _config(query_cache=True))
    with (
        start_service("tokenizer", root, log_dir=logs, name="qc-tok") as tok,
        start_service("model", root, "--rescan-seconds", "0", log_dir=logs, name="qc-model") as model,
        start_search(
            repo=root,
            tokenizer_target=tok.target,
            model_server_target=model.target,
            milvus_uri=search_stores.milvus_uri,
            mongo_uri=search_stores.mongo_uri,
            consul=consul_kv,
            consul_key=KEY,
            work_dir=logs,
        ) as svc,
    ):
        yield CacheStack(svc, tok, model, ModelRepository(root))


def _search(stack: CacheStack, query: str, user: int = 5) -> list[tuple[str, float]]:
    body = {"query": query, "topK": 5, "useDebug": True, "specifiedLayerAndExperiment": PIN}
    status, reply = stack.search.post(f"/qa/user/{user}", body)
    assert status == 200, reply
    items: list[dict[str, Any]] = reply["searchItemModels"][0]  # type: ignore[index]
    return [(str(i["id"]), float(i["score"])) for i in items]


def _counts(stack: CacheStack) -> dict[str, float]:
    search, tok, model = (
        scrape(u) for u in (stack.search.url + "/metrics", stack.tokenizer.metrics_url, stack.model.metrics_url)
    )
    lookups = "mmsearch_search_query_cache_lookups_total"
    return {
        "hit": metric_value(search, lookups, model=MINILM_KEY, result="hit"),
        "miss": metric_value(search, lookups, model=MINILM_KEY, result="miss"),
        "invalidated": metric_value(search, "mmsearch_search_query_cache_invalidations_total", model=MINILM_KEY),
        "tokenize": metric_value(tok, "mmsearch_tokenizer_requests_total", method="Tokenize", model=MINILM_KEY),
        "predict": metric_value(model, "mmsearch_model_server_requests_total", method="Predict", model=MINILM_KEY),
        # A miss costs one Embed call (the model server tokenizes), never the tokenizer service.
        "embed": metric_value(model, "mmsearch_model_server_requests_total", method="Embed", model=MINILM_KEY),
    }


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


def test_a_repeated_query_skips_tokenizer_and_model_server_and_answers_the_same(cache_stack: CacheStack) -> None:
    before = _counts(cache_stack)
    first = _search(cache_stack, "how long does a building permit take?")
    second = _search(cache_stack, "  how long does a building\tpermit take? ")

    assert first
    assert second == first
    assert _delta(_counts(cache_stack), before) == {
        "hit": 1,
        "miss": 1,
        "invalidated": 0,
        "tokenize": 0,
        "predict": 0,
        "embed": 1,
    }


def test_a_reloaded_model_version_empties_that_models_entries(cache_stack: CacheStack) -> None:
    query = "who inspects the roof?"
    answer = _search(cache_stack, query)
    before = _counts(cache_stack)
    # Re-exporting rewrites the files; the model server reloads on LoadModel (or its rescan) as a new version.
    onnx = cache_stack.repo.onnx_path(MINILM_KEY)
    later = time.time() + 5
    os.utime(onnx, (later, later))

    async def reload() -> Any:
        client = ModelServerClient(cache_stack.model.target, timeout=60)
        try:
            return await client.load_model(MINILM_KEY)
        finally:
            await client.close()

    status = asyncio.run(reload())
    assert status.state == "loaded"
    assert status.version

    _search(cache_stack, "a query the cache has not seen")  # its embedding reports the new version
    again = _search(cache_stack, query)

    delta = _delta(_counts(cache_stack), before)
    assert delta["invalidated"] >= 1  # at least the entry of `query`
    assert delta["hit"] == 0
    assert delta["miss"] == 2
    assert again == answer  # the same weights under a new version: the same answer, computed again


def test_an_experiment_with_query_cache_false_bypasses_it(cache_stack: CacheStack, consul_kv: ConsulKVDouble) -> None:
    reloads = "mmsearch_search_config_reloads_total"
    applied = metric_value(scrape(cache_stack.search.url + "/metrics"), reloads, source="consul")
    consul_kv.put(KEY, _config(query_cache=False))
    wait_until(
        lambda: metric_value(scrape(cache_stack.search.url + "/metrics"), reloads, source="consul") > applied,
        what="the search service applying the new config",
        timeout=60,
    )
    try:
        before = _counts(cache_stack)
        first = _search(cache_stack, "insurance for the works")
        second = _search(cache_stack, "insurance for the works")
        delta = _delta(_counts(cache_stack), before)
        assert second == first
        assert delta == {"hit": 0, "miss": 0, "invalidated": 0, "tokenize": 0, "predict": 0, "embed": 2}
    finally:
        consul_kv.put(KEY, _config(query_cache=True))
