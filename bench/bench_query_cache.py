"""Query-embedding cache benchmark: a Zipf-distributed query log through the search service, cache on vs off.

Setup (bounded, about two minutes on 2 cores): the real MiniLM (exported into --repo if missing), a milvus-lite
server and SecantusDB, the demo FAQ ingested by the real ingest, and two search services (each with its own
tokenizer and model server) over the same stores and the demo A/B config:
- off: search.query_cache_size=0, every query tokenized and embedded (the baseline);
- on: the default cache (10,000 entries, 600 s TTL).

The query log: --log-size queries drawn with a fixed seed from the FAQ's 503 questions with Zipf probabilities
(rank k has weight 1 / k^--skew, skew 1.1), replayed in the same order on both sides, alternating which side goes
first round by round, at concurrency 1 and 8, pinned to match.qa.base and the dummy ranker. Reported: p50/p99 and
QPS per side, the ratios on/off, and the hit rate the cache saw (its own counters). Writes
bench/results/query-cache.json.

    .venv/bin/python -m bench.bench_query_cache --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_search import build_repo, median_of, ratio, service_run, start_search_service, start_stores
from bench.machine import machine_info

log = logging.getLogger("bench.query_cache")
CONCURRENCY = (1, 8)
PINS = {"match.qa": "match.qa.base", "rank.qa": "rank.qa.dummy"}


def zipf_log(questions: list[str], size: int, skew: float, seed: int = 7) -> list[str]:
    weights = 1.0 / np.arange(1, len(questions) + 1) ** skew
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(questions))  # which question is popular is arbitrary, not the file's order
    picks = rng.choice(len(questions), size=size, p=weights / weights.sum())
    return [questions[order[k]] for k in picks]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="Measuring time per side, concurrency and round.")
    ap.add_argument("--rounds", type=int, default=3, help="Rounds, sides alternating; medians are reported.")
    ap.add_argument("--skew", type=float, default=1.1, help="Zipf exponent of the query log.")
    ap.add_argument("--log-size", type=int, default=50_000, help="Queries in the log (replayed from the start).")
    ap.add_argument(
        "--repo", type=Path, default=Path("var/bench/models"), help="Model repository (MiniLM exported if missing)."
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results/query-cache.json"))
    ap.add_argument("--contended", action="store_true", help="Other work shares the CPU during this run.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_before = os.getloadavg()[0]

    from tests.fixtures.prometheus import metric_value, scrape
    from tests.fixtures.search import AB_CONFIG, ingest_faq

    repo = build_repo(args.repo)
    sides = ("off", "on")
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {side: {str(c): [] for c in CONCURRENCY} for side in sides}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-query-cache-") as tmp:
        work = Path(tmp)
        stores = start_stores(stack, work)
        faq = ingest_faq(repo, stores.milvus_uri, stores.mongo_uri, work / "ingest")
        queries = zipf_log(sorted(faq.questions.values()), args.log_size, args.skew)
        distinct = len(set(queries))
        config = AB_CONFIG.read_text(encoding="utf-8")
        urls = {
            "off": start_search_service(
                stack, repo, work, stores, config, extra_env={"MMSEARCH_SEARCH__QUERY_CACHE_SIZE": "0"}
            ),
            "on": start_search_service(
                stack, repo, work, stores, config, extra_env={"MMSEARCH_SEARCH__QUERY_CACHE_SIZE": "10000"}
            ),
        }
        for n in range(args.rounds):
            for c in CONCURRENCY:
                for side in sides if n % 2 == 0 else reversed(sides):
                    got = asyncio.run(service_run(urls[side], queries, c, args.seconds, PINS))
                    raw[side][str(c)].append(got)
                    log.info("round %d c=%d %s: p50 %.1f ms, %.1f q/s", n + 1, c, side, got["p50_ms"], got["qps"])
        text = scrape(urls["on"] + "/metrics")
        lookups = "mmsearch_search_query_cache_lookups_total"
        hits, misses = (metric_value(text, lookups, model="minilm", result=r) for r in ("hit", "miss"))
    results = {side: {c: median_of(rounds) for c, rounds in by_c.items()} for side, by_c in raw.items()}
    ratios = {
        f"c{c}_p50_on_over_off": ratio(results["on"][str(c)]["p50_ms"], results["off"][str(c)]["p50_ms"])
        for c in CONCURRENCY
    }
    ratios |= {
        f"c{c}_qps_on_over_off": ratio(results["on"][str(c)]["qps"], results["off"][str(c)]["qps"]) for c in CONCURRENCY
    }
    out = {
        "benchmark": "query-cache",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {
            "corpus": "demo FAQ, 503 questions (HNSW, milvus-lite server), SecantusDB",
            "query_log": {"size": args.log_size, "skew": args.skew, "distinct_queries": distinct},
            "sides": {"off": "search.query_cache_size=0", "on": "the default cache (10000 entries, 600 s TTL)"},
            "pins": PINS,
            "seconds_per_point": args.seconds,
            "rounds": args.rounds,
        },
        "results": results,
        "ratios": ratios,
        "cache": {
            "hits": hits,
            "misses": misses,
            "hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
        },
        "machine": machine_info(contended=args.contended or load_before > 1.0),
        "load_average_before": round(load_before, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "cache": out["cache"]}, indent=2))


if __name__ == "__main__":
    main()
