"""What API keys cost a search: the same search service with auth off and with keys on (a key sent with every
request, found in the service's key cache, its rate-limit bucket taken), side by side over the same stores. Points
at concurrency 1 (p50: the per-request cost) and 32 (QPS); rounds alternate the sides; each figure is the median of
the rounds, and the JSON keeps every round. Target: keys-on p50 at c=1 at most 1.05x auth off.

Setup as bench_search (its corpus, config and processes) on Milvus Lite's server and SecantusDB:

    .venv/bin/python -m bench.bench_auth [--docs 20000] [--rounds 3] [--seconds 10]
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

log = logging.getLogger("bench.auth")

TARGET_P50_RATIO_C1 = 1.05


def _store_key(mongo_uri: str) -> str:
    """A search key whose rate limit never bites (its bucket is still taken on every request)."""
    from mmsearch.settings import MongoSettings
    from mmsearch.stores import mongo_client
    from services.search.auth import key_store
    from services.search.auth.keys import ApiKey, KeyRecord, StoredSecret

    key = ApiKey.generate()
    now = key_store.now()
    client = mongo_client(MongoSettings(uri=mongo_uri))
    try:
        key_store.insert(
            client["mmsearch"]["keys"],
            KeyRecord(
                key_id=key.key_id,
                name="bench",
                scopes=("search",),
                secrets=(StoredSecret.of(key.secret, now),),
                created_at=now,
                rate=1e9,
                burst=1_000_000_000,
            ),
        )
    finally:
        client.close()
    return str(key)


def _median(points: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "p50_ms": round(statistics.median(p["p50_ms"] for p in points), 2),
        "p99_ms": round(statistics.median(p["p99_ms"] for p in points), 2),
        "qps": round(statistics.median(p["qps"] for p in points), 1),
        "errors": sum(p["errors"] for p in points),
        "p50_ms_per_round": [p["p50_ms"] for p in points],
        "qps_per_round": [p["qps"] for p in points],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--seconds", type=float, default=10.0, help="Measuring time per side, point and round.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repo", type=Path, default=Path("var/bench/models"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/auth.json"))
    ap.add_argument("--contended", action="store_true", help="Other work shares the CPU during this run.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_before = os.getloadavg()[0]

    repo = build_repo(args.repo)
    concurrencies = (1, 32)
    rounds: dict[str, dict[int, list[dict[str, Any]]]] = {
        side: {c: [] for c in concurrencies} for side in ("off", "keys")
    }
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        work = Path(tmp)
        stores = start_stores(stack, work)
        queries, _ = load_corpus(repo, stores.milvus_uri, stores.mongo_uri, args.docs, "HNSW")
        key = _store_key(stores.mongo_uri)
        sides: dict[str, tuple[str, dict[str, str] | None]] = {}
        for side, env in (
            ("off", {"MMSEARCH_AUTH__MODE": "off"}),
            ("keys", {"MMSEARCH_AUTH__MODE": "keys"}),
        ):
            folder = work / side
            folder.mkdir()
            url = start_search_service(stack, repo, folder, stores, bench_config(), extra_env=env)
            sides[side] = (url, {"Authorization": f"Bearer {key}"} if side == "keys" else None)
        for url, headers in sides.values():  # warm-up: connections, the collection's first searches, the key cache
            asyncio.run(service_run(url, queries, 8, 2.0, headers=headers))
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for c in concurrencies:
                for side in order:
                    url, headers = sides[side]
                    point = asyncio.run(service_run(url, queries, c, args.seconds, headers=headers))
                    log.info(
                        "round %d, c=%d, auth %s: %.1f QPS, p50 %.2f ms", r + 1, c, side, point["qps"], point["p50_ms"]
                    )
                    rounds[side][c].append(point)
    result = {side: {f"c{c}": _median(points) for c, points in by_c.items()} for side, by_c in rounds.items()}
    p50_ratio = round(result["keys"]["c1"]["p50_ms"] / result["off"]["c1"]["p50_ms"], 3)
    out = {
        "benchmark": "auth",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {
            "store": "milvus-lite server (HNSW) + SecantusDB, each a process on loopback",
            "docs": args.docs,
            "seconds_per_point": args.seconds,
            "rounds": args.rounds,
            "keys_side": "auth.mode keys, one key (scope search) sent as Authorization: Bearer, cached after the "
            "first request, its token bucket taken on every request",
            "baseline": "auth.mode off",
        },
        "sides": result,
        "ratios": {
            "keys_over_off_p50_c1": p50_ratio,
            "keys_over_off_p50_c32": round(result["keys"]["c32"]["p50_ms"] / result["off"]["c32"]["p50_ms"], 3),
            "keys_over_off_qps_c1": round(result["keys"]["c1"]["qps"] / result["off"]["c1"]["qps"], 3),
            "keys_over_off_qps_c32": round(result["keys"]["c32"]["qps"] / result["off"]["c32"]["qps"], 3),
        },
        "target": {"keys_over_off_p50_c1": TARGET_P50_RATIO_C1, "met": p50_ratio <= TARGET_P50_RATIO_C1},
        "machine": machine_info(contended=args.contended or load_before > 1.0),
        "load_average_before": round(load_before, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("ratios", "target")}, indent=2))


if __name__ == "__main__":
    main()
