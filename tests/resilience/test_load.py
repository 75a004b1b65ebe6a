"""Load on the local stack: 32 concurrent clients for 60 s against /qa/user/{id}; zero errors; p50/p99; every
service's resident memory stable (mean of the last ten seconds within 10% of the mean of the second ten), except
MongoDB's: every search is now an exposure written to it, and a store that is being written grows with its data
(its figures are recorded all the same). Every one of those exposures reaches MongoDB: none lost under this load."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from offline.datasets.faq import load_faq
from tests.fixtures.auth import create_key
from tests.fixtures.ports import wait_until
from tests.fixtures.prometheus import metric_value, scrape
from tests.fixtures.stack import LocalStack, child_pids
from tests.resilience.load import faq_bodies, load, summarize, wait_load_done
from tests.resilience.memory import sample_rss
from tests.resilience.report import record

pytestmark = pytest.mark.resilience

CLIENTS = 32
SECONDS = 60.0
EARLY = (10.0, 20.0)  # the second ten seconds: after warm-up (first connections, ONNX arenas, caches)
LATE = (SECONDS - 10.0, SECONDS)
MAX_GROWTH = 0.10
SERVICES = ("milvus", "mongo", "tokenizer", "model", "search", "web")
WRITTEN_STORES = ("mongo",)  # receives one exposure per search: growth with its data is expected


def _exposures_since(stack: LocalStack, since: dt.datetime) -> int:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(stack.plan.mongo_uri, serverSelectionTimeoutMS=5000)
    try:
        return int(client["mmsearch"].exposures.count_documents({"scene": "questionAnswer", "time": {"$gte": since}}))
    finally:
        client.close()


def _lost_exposures(stack: LocalStack, key: str) -> float:
    return metric_value(scrape(stack.search_url + "/metrics", key), "mmsearch_search_exposures_lost_total")


def test_32_clients_for_60s_no_errors_and_stable_memory(local_stack: LocalStack) -> None:
    # A client's key, as production callers have (the local stack's key-less search is limited per address); its
    # rate limit is above this load, so the run measures serving, not the limiter refusing.
    key = create_key(local_stack.ready.mongo_uri, "load", "search,metrics", "--rate", "100000", "--burst", "100000")
    questions = [e.q for e in load_faq()]
    pids = {name: pid for name, pid in child_pids(local_stack.var_dir).items() if name in SERVICES}
    assert set(pids) == set(SERVICES), f"honcho.log lists {sorted(pids)}; expected every service"
    since = dt.datetime.now(dt.UTC)
    lost_before = _lost_exposures(local_stack, key)

    with (
        sample_rss(pids, every=1.0) as rss,
        load(
            local_stack.search_url,
            clients=CLIENTS,
            seconds=SECONDS,
            body=faq_bodies(questions),
            timeout=30.0,
            headers={"Authorization": f"Bearer {key}"},
        ) as handle,
    ):
        wait_load_done(handle, SECONDS)
    samples = handle.snapshot()
    figures = summarize(samples)
    memory = rss.summary(EARLY, LATE)
    record(
        "load",
        {
            "endpoint": "/qa/user/{id}",
            "clients": CLIENTS,
            "seconds": SECONDS,
            **figures,
            "qps": round(len(samples) / SECONDS, 1),
            "rss": memory,
            "rss_windows_s": {"early": EARLY, "late": LATE},
            "max_growth_pct_allowed": MAX_GROWTH * 100,
        },
    )
    failed = [s for s in samples if not s.ok]
    assert not failed, f"{len(failed)} of {len(samples)} requests failed, first: {failed[:3]}"
    assert len(samples) >= CLIENTS, "the clients made fewer requests than there are clients"
    grown = {
        name: m["growth_pct"]
        for name, m in memory.items()
        if m["growth_pct"] is not None and m["growth_pct"] > MAX_GROWTH * 100 and name not in WRITTEN_STORES
    }
    assert not grown, f"resident memory grew more than {MAX_GROWTH:.0%} under steady load: {grown} ({memory})"
    assert set(memory) == set(SERVICES), f"RSS sampled for {sorted(memory)} only"
    answered = sum(1 for s in samples if s.ok)
    wait_until(
        lambda: _exposures_since(local_stack, since) >= answered,
        what=f"{answered} exposures of the load in MongoDB",
        timeout=120,
    )
    assert _lost_exposures(local_stack, key) == lost_before
