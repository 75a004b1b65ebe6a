"""Hybrid recall benchmark: the cost of adding BM25 (rrf fusion) to vector recall, through the search service.

Setup (bounded, about a minute on 2 cores): the real MiniLM (exported into --repo if missing), the tokenizer and
model server as processes, a milvus-lite server and SecantusDB, the demo FAQ ingested by the real ingest with
`--lexical-field question` (503 documents, HNSW), the search service with the demo A/B config in the Consul KV
test double.

Measured on the same corpus and store, alternating sides round by round, at concurrency 1 and 8: p50/p99 and QPS
of POST /qa/user/{id} pinned (useDebug + specifiedLayerAndExperiment) to
- ann: match.qa.base (ANNMatcher only), and
- hybrid: match.qa.hybrid (ANNMatcher + BM25Matcher, rrf), both with the dummy ranker.
Target: hybrid p50 at concurrency 1 <= 1.5 x ann p50. Writes bench/results/hybrid.json.

    .venv/bin/python -m bench.bench_hybrid --seconds 10 --rounds 3
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

from bench.bench_search import build_repo, median_of, ratio, service_run, start_search_service, start_stores
from bench.machine import machine_info

log = logging.getLogger("bench.hybrid")
CONCURRENCY = (1, 8)
SIDES = {"ann": "match.qa.base", "hybrid": "match.qa.hybrid"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="Measuring time per side, concurrency and round.")
    ap.add_argument("--rounds", type=int, default=3, help="Rounds, sides alternating; medians are reported.")
    ap.add_argument(
        "--repo", type=Path, default=Path("var/bench/models"), help="Model repository (MiniLM exported if missing)."
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results/hybrid.json"))
    ap.add_argument("--contended", action="store_true", help="Other work shares the CPU during this run.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_before = os.getloadavg()[0]

    from tests.fixtures.search import AB_CONFIG, ingest_faq

    repo = build_repo(args.repo)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {side: {str(c): [] for c in CONCURRENCY} for side in SIDES}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-hybrid-") as tmp:
        work = Path(tmp)
        stores = start_stores(stack, work)
        faq = ingest_faq(repo, stores.milvus_uri, stores.mongo_uri, work / "ingest")
        queries = list(faq.questions.values())
        search_url = start_search_service(stack, repo, work, stores, AB_CONFIG.read_text(encoding="utf-8"))
        for n in range(args.rounds):
            for c in CONCURRENCY:
                # Alternate which side goes first, so drift in the machine's speed does not favour one side.
                for side in SIDES if n % 2 == 0 else reversed(SIDES):
                    pins = {"match.qa": SIDES[side], "rank.qa": "rank.qa.dummy"}
                    got = asyncio.run(service_run(search_url, queries, c, args.seconds, pins))
                    raw[side][str(c)].append(got)
                    log.info("round %d c=%d %s: p50 %.1f ms, %.1f q/s", n + 1, c, side, got["p50_ms"], got["qps"])
    results = {side: {c: median_of(rounds, "match.qa") for c, rounds in by_c.items()} for side, by_c in raw.items()}
    ratios = {
        f"c{c}_p50_hybrid_over_ann": ratio(results["hybrid"][str(c)]["p50_ms"], results["ann"][str(c)]["p50_ms"])
        for c in CONCURRENCY
    }
    ratios |= {
        f"c{c}_qps_hybrid_over_ann": ratio(results["hybrid"][str(c)]["qps"], results["ann"][str(c)]["qps"])
        for c in CONCURRENCY
    }
    c1 = ratios["c1_p50_hybrid_over_ann"]
    out = {
        "benchmark": "hybrid",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {
            "corpus": "demo FAQ, 503 questions, ingested with --lexical-field question (HNSW, standard analyzer)",
            "store": "milvus-lite server (Milvus Lite 3.2, Python) on loopback",
            "sides": SIDES,
            "ranker": "dummy (pinned)",
            "top_k": 10,
            "queries": "the 503 FAQ questions, cycled",
            "seconds_per_point": args.seconds,
            "rounds": args.rounds,
        },
        "results": results,
        "ratios": ratios,
        "target": "hybrid p50 at concurrency 1 <= 1.5 x ANN-only p50",
        "target_met": c1 is not None and c1 <= 1.5,
        "machine": machine_info(contended=args.contended or load_before > 1.0),
        "load_average_before": round(load_before, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "target_met": out["target_met"]}, indent=2))


if __name__ == "__main__":
    main()
