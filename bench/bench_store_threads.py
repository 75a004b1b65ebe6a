"""How many threads the search service's store clients need: the same search service with `search.store_threads`
8 (the fixed pool until 2026-12-03) and 32 (the default this measurement chose), side by side over the same stores,
at concurrency 32 (where more searches than threads wait for one). Rounds alternate the sides; QPS and p50 are
medians of the rounds, and the JSON keeps each.

Setup as bench_search (its corpus, config and processes); run it against the real Milvus 2.3.5 server:

    scripts/with-milvus-netns .venv/bin/python -m bench.bench_store_threads [--threads 8 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bench_search import bench_config, build_repo, load_corpus, service_run, start_search_service, start_stores
from bench.machine import machine_info

log = logging.getLogger("bench.store_threads")

CONCURRENCY = 32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[8, 32], help="store_threads of each side")
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10.0, help="Measuring time per side and round.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repo", type=Path, default=Path("var/bench/models"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/store-threads-milvus-server.json"))
    ap.add_argument("--contended", action="store_true", help="Other work shares the CPU during this run.")
    args = ap.parse_args()
    from tests.fixtures.stores import REAL_MILVUS_ENV

    server_uri = os.environ.get(REAL_MILVUS_ENV)
    if not server_uri:
        ap.error(f"run it under scripts/with-milvus-netns ({REAL_MILVUS_ENV} is not set)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_before = os.getloadavg()[0]

    repo = build_repo(args.repo)
    rounds: dict[str, list[dict[str, Any]]] = {str(n): [] for n in args.threads}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-store-threads-") as tmp:
        work = Path(tmp)
        stores = start_stores(stack, work, milvus_uri=server_uri)
        queries, _ = load_corpus(repo, stores.milvus_uri, stores.mongo_uri, args.docs, "HNSW")
        urls = {}
        for n in args.threads:
            side = work / f"threads-{n}"
            side.mkdir()
            env = {"MMSEARCH_SEARCH__STORE_THREADS": str(n)}
            urls[str(n)] = start_search_service(stack, repo, side, stores, bench_config(), extra_env=env)
        for url in urls.values():  # warm-up: connections, the collection's first searches
            asyncio.run(service_run(url, queries, CONCURRENCY, 2.0))
        for r in range(args.rounds):
            for name in list(urls) if r % 2 == 0 else list(reversed(urls)):
                point = asyncio.run(service_run(urls[name], queries, CONCURRENCY, args.seconds))
                log.info("round %d, %s threads: %.1f QPS, p50 %.1f ms", r + 1, name, point["qps"], point["p50_ms"])
                rounds[name].append(point)
    sides = {
        name: {
            "qps": round(statistics.median(p["qps"] for p in points), 1),
            "p50_ms": round(statistics.median(p["p50_ms"] for p in points), 2),
            "qps_per_round": [p["qps"] for p in points],
            "errors": sum(p["errors"] for p in points),
        }
        for name, points in rounds.items()
    }
    base = str(args.threads[0])
    out = {
        "benchmark": "store-threads",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {
            "store": "Milvus 2.3.5 standalone (real server, private network namespace)",
            "docs": args.docs,
            "concurrency": CONCURRENCY,
            "seconds_per_point": args.seconds,
            "rounds": args.rounds,
            "baseline_threads": args.threads[0],
        },
        "sides": sides,
        "ratios": {
            f"qps_{name}_over_{base}": round(sides[name]["qps"] / sides[base]["qps"], 3)
            for name in sides
            if name != base
        },
        "machine": machine_info(contended=args.contended or load_before > 1.0),
        "load_average_before": round(load_before, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("sides", "ratios")}, indent=2))


if __name__ == "__main__":
    main()
