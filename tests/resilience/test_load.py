"""Load on the local stack: 32 concurrent clients for 60 s against /qa/user/{id}; zero errors; p50/p99; every
service's resident memory stable (mean of the last ten seconds within 10% of the mean of the second ten)."""

from __future__ import annotations

import pytest

from offline.datasets.faq import load_faq
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


def test_32_clients_for_60s_no_errors_and_stable_memory(local_stack: LocalStack) -> None:
    questions = [e.q for e in load_faq()]
    pids = {name: pid for name, pid in child_pids(local_stack.var_dir).items() if name in SERVICES}
    assert set(pids) == set(SERVICES), f"honcho.log lists {sorted(pids)}; expected every service"

    with (
        sample_rss(pids, every=1.0) as rss,
        load(
            local_stack.search_url, clients=CLIENTS, seconds=SECONDS, body=faq_bodies(questions), timeout=30.0
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
        if m["growth_pct"] is not None and m["growth_pct"] > MAX_GROWTH * 100
    }
    assert not grown, f"resident memory grew more than {MAX_GROWTH:.0%} under steady load: {grown} ({memory})"
    assert set(memory) == set(SERVICES), f"RSS sampled for {sorted(memory)} only"
