"""What the search service's store calls cost its own process: pymilvus' and pymongo's blocking clients called
from a thread pool (the search path until 2026-12-04) against their asyncio clients on the event loop (the search
path since), same stores, same requests, same run.

A milvus-lite server (or the real Milvus server under scripts/with-milvus-netns) with `--rows` random unit 384-d
vectors (HNSW M 16, efConstruction 200, ef 128, 50 hits, ids only, as the service asks) and SecantusDB with the
same rows as documents (a `queryid $in` of 10 ids, as the summary stage asks). Each side makes `--calls` calls of
each kind from `--concurrency` concurrent callers; rounds alternate the sides. Reported per side: this process's
CPU milliseconds per call (user + system, the figure the service pays on its cores) and calls per second; medians
of the rounds, and each round. Writes bench/results/store-clients.json.

    .venv/bin/python -m bench.bench_store_clients [--rows 20000] [--calls 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_ingest import plain_milvus_load
from bench.bench_search import start_stores
from bench.machine import machine_info

log = logging.getLogger("bench.store_clients")
COLLECTION = "bench_store_clients"
SIDES = ("thread_pool", "asyncio")
KINDS = ("milvus_search", "mongo_find")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def load(milvus_uri: str, mongo_uri: str, rows: int) -> np.ndarray:
    from pymongo import MongoClient

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(rows, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    plain_milvus_load(milvus_uri, COLLECTION, vectors, field="v")
    mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        coll = mongo["mmsearch"][COLLECTION]
        coll.drop()
        for s in range(0, rows, 1000):
            coll.insert_many([{"queryid": str(i), "question": f"q{i}"} for i in range(s, min(rows, s + 1000))])
        coll.create_index("queryid")
    finally:
        mongo.close()
    return vectors


async def measure(calls: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    gate = asyncio.Semaphore(concurrency)

    async def call(i: int) -> None:
        async with gate:
            await one(i)

    await asyncio.gather(*(call(i) for i in range(min(calls, 50))))  # warm: connections, first calls
    cpu, wall = _cpu(), time.perf_counter()
    await asyncio.gather(*(call(i) for i in range(calls)))
    cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    return {"cpu_ms_per_call": round(cpu / calls * 1000, 3), "calls_per_s": round(calls / wall, 1)}


async def one_side(side: str, milvus_uri: str, mongo_uri: str, vectors: np.ndarray, args: Any) -> dict[str, Any]:
    from mmsearch.settings import MilvusSettings, MongoSettings
    from mmsearch.stores import async_milvus_client, async_mongo_client, milvus_client, mongo_client

    search = {
        "anns_field": "v",
        "limit": 50,
        "output_fields": ["id"],
        "search_params": {"metric_type": "IP", "params": {"ef": 128}},
    }
    n = len(vectors)

    def ids(i: int) -> list[str]:
        return [str((i * 7 + k) % n) for k in range(10)]

    if side == "thread_pool":
        milvus = milvus_client(MilvusSettings(uri=milvus_uri))
        mongo = mongo_client(MongoSettings(uri=mongo_uri))
        pool = ThreadPoolExecutor(max_workers=args.concurrency)
        loop = asyncio.get_running_loop()
        coll = mongo["mmsearch"][COLLECTION]

        async def milvus_call(i: int) -> Any:
            v = vectors[i % n].tolist()
            return await loop.run_in_executor(pool, lambda: milvus.search(COLLECTION, data=[v], **search))

        async def mongo_call(i: int) -> Any:
            return await loop.run_in_executor(pool, lambda: list(coll.find({"queryid": {"$in": ids(i)}})))

        try:
            return {
                "milvus_search": await measure(args.calls, args.concurrency, milvus_call),
                "mongo_find": await measure(args.calls, args.concurrency, mongo_call),
            }
        finally:
            pool.shutdown()
            milvus.close()
            mongo.close()
    amilvus = async_milvus_client(MilvusSettings(uri=milvus_uri))
    amongo = async_mongo_client(MongoSettings(uri=mongo_uri))
    acoll = amongo["mmsearch"][COLLECTION]

    async def amilvus_call(i: int) -> Any:
        return await amilvus.search(COLLECTION, data=[vectors[i % n].tolist()], **search)

    async def amongo_call(i: int) -> Any:
        return [d async for d in acoll.find({"queryid": {"$in": ids(i)}})]

    try:
        return {
            "milvus_search": await measure(args.calls, args.concurrency, amilvus_call),
            "mongo_find": await measure(args.calls, args.concurrency, amongo_call),
        }
    finally:
        await amilvus.close()
        await amongo.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--calls", type=int, default=1000, help="Calls of each kind per side and round.")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/results/store-clients.json"))
    ap.add_argument("--contended", action="store_true", help="Other work shares the CPU during this run.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from tests.fixtures.stores import REAL_MILVUS_ENV

    load_before = os.getloadavg()[0]
    server_uri = os.environ.get(REAL_MILVUS_ENV)
    rounds: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-store-clients-") as tmp:
        stores = start_stores(stack, Path(tmp), milvus_uri=server_uri)
        vectors = load(stores.milvus_uri, stores.mongo_uri, args.rows)
        try:
            for r in range(args.rounds):
                for side in SIDES if r % 2 == 0 else tuple(reversed(SIDES)):
                    got = asyncio.run(one_side(side, stores.milvus_uri, stores.mongo_uri, vectors, args))
                    rounds[side].append(got)
                    log.info("round %d %s: %s", r + 1, side, json.dumps(got))
        finally:
            from pymilvus import MilvusClient

            client = MilvusClient(uri=stores.milvus_uri)
            client.drop_collection(COLLECTION)
            client.close()
    medians = {
        side: {
            kind: {m: statistics.median(r[kind][m] for r in got) for m in ("cpu_ms_per_call", "calls_per_s")}
            for kind in KINDS
        }
        for side, got in rounds.items()
    }
    ratios = {
        f"{kind}_cpu_asyncio_over_thread_pool": round(
            medians["asyncio"][kind]["cpu_ms_per_call"] / medians["thread_pool"][kind]["cpu_ms_per_call"], 3
        )
        for kind in KINDS
    }
    out = {
        "benchmark": "store-clients",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {
            "milvus": "the real Milvus server" if server_uri else "milvus-lite server",
            "rows": args.rows,
            "calls_per_kind": args.calls,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "search": "HNSW ef 128, 50 hits, ids only; mongo: queryid $in 10 ids",
        },
        "medians": medians,
        "ratios": ratios,
        "rounds": rounds,
        "machine": machine_info(contended=args.contended or load_before > 1.0),
        "load_average_before": round(load_before, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"medians": medians, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
