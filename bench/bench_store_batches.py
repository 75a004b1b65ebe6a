"""Store write batch sizes, measured: how many rows one upsert / bulk write should carry.

`push milvus` and `push mongo` (and so `ingest`) write the corpus in batches (`--batch-size`, default 1000). This
bench loads the same rows with several batch sizes and reports each one's rows per second against the current
default measured in the same run (a ratio), rounds interleaved, medians over rounds:
- Milvus: synthetic L2-normalised 384-d vectors (with the `category` array field) by `push_milvus`' own upserts
  into a fresh collection (FLAT, so index build time stays out of it); upsert time only. Milvus Lite embedded by
  default; under scripts/with-milvus-netns (`--milvus-server`) the real Milvus 2.3.5 server.
- MongoDB (SecantusDB, started here): `push_mongo` into an empty collection (bulk inserts) and its re-run (bulk
  replace-by-_id upserts), each into its own database.

A batch size that does not beat the default by more than the largest spread between rounds does not change it.

    .venv/bin/python -m bench.bench_store_batches [--vectors 20000] [--docs 5000] [--rounds 2]
    scripts/with-milvus-netns .venv/bin/python -m bench.bench_store_batches --milvus-server
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bench_ingest import start_secantus, synthetic_vectors
from bench.machine import machine_info

log = logging.getLogger("bench.store_batches")

DEFAULT_BATCH = 1000  # push milvus / push mongo --batch-size (offline/push/cli.py)
BATCH_SIZES = (250, 500, 1000, 2000, 5000)


def milvus_rate(folder: Path, uri: str, batch: int) -> float:
    from mmsearch.settings import MilvusSettings
    from offline.push.milvus_push import MilvusPushOptions, push_milvus
    from offline.push.schema import IndexType

    corpus = f"batches_{batch}_{uuid.uuid4().hex[:6]}"
    summary = push_milvus(
        MilvusSettings(uri=uri, timeout_seconds=120),
        MilvusPushOptions(vectors=folder, corpus=corpus, index_type=IndexType.FLAT, batch_size=batch, progress=False),
    )
    _drop_corpus(uri, corpus)
    return summary.count / summary.upsert_seconds


def _drop_corpus(uri: str, alias: str) -> None:
    """The bench's collections go once measured (a server keeps them otherwise)."""
    from mmsearch import stores
    from mmsearch.settings import MilvusSettings

    client = stores.milvus_client(MilvusSettings(uri=uri))
    try:
        collection = client.describe_alias(alias)["collection_name"]
        client.drop_alias(alias)
        client.drop_collection(collection)
    finally:
        client.close()


def mongo_rates(corpus: Path, mongo_uri: str, batch: int) -> tuple[float, float]:
    """(first load docs/s, re-run docs/s) of push_mongo at `batch`, in a database of its own."""
    from pymongo import MongoClient

    from mmsearch.settings import MongoSettings
    from offline.push.mongo_push import push_mongo

    database = f"batches_{batch}_{uuid.uuid4().hex[:6]}"
    settings = MongoSettings(uri=mongo_uri, database=database)
    first = push_mongo(settings, corpus, "docs", batch_size=batch, progress=False)
    rerun = push_mongo(settings, corpus, "docs", batch_size=batch, progress=False)
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    client.drop_database(database)
    client.close()
    return first.count / first.seconds, rerun.count / rerun.seconds


def write_mongo_corpus(path: Path, n: int) -> Path:
    # Rows shaped like the FAQ (a question, a ~200-character answer, a category), ids in order.
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            row = {"id": i, "question": f"Question number {i}?", "answer": "An answer " * 20, "category": ["c"]}
            f.write(json.dumps(row) + "\n")
    return path


def summarise(samples: dict[int, list[float]]) -> dict[str, Any]:
    base = statistics.median(samples[DEFAULT_BATCH])
    points = {
        str(b): {
            "rows_per_s": round(statistics.median(v), 1),
            "rows_per_s_per_round": [round(x, 1) for x in v],
            "vs_default": round(statistics.median(v) / base, 3),
        }
        for b, v in samples.items()
    }
    best = max(samples, key=lambda b: statistics.median(samples[b]))
    # The largest spread between rounds of any batch size: a "better" batch size inside it is noise, not a reason
    # to change the default.
    spread = max((max(v) - min(v)) / statistics.median(v) for v in samples.values())
    gain = statistics.median(samples[best]) / base - 1
    return {
        "points": points,
        "best": best,
        "best_vs_default": round(1 + gain, 3),
        "largest_round_spread": round(spread, 3),
        "change_default": bool(best != DEFAULT_BATCH and gain > spread),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=20_000, help="synthetic vectors per Milvus load")
    ap.add_argument("--docs", type=int, default=5000, help="documents per MongoDB load")
    ap.add_argument("--rounds", type=int, default=2, help="every batch size is measured once per round")
    ap.add_argument(
        "--milvus-server",
        action="store_true",
        help="the real Milvus server of scripts/with-milvus-netns (run the command under it); MongoDB is skipped",
    )
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/store-batches[-milvus-server].json")
    ap.add_argument("--contended", action="store_true", help="other work shared the CPU during the run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    server_uri = None
    if args.milvus_server:
        from tests.fixtures.stores import REAL_MILVUS_ENV

        server_uri = os.environ.get(REAL_MILVUS_ENV)
        if not server_uri:
            ap.error(f"--milvus-server runs under scripts/with-milvus-netns ({REAL_MILVUS_ENV} is not set)")
    out = args.out or Path(f"bench/results/store-batches{'-milvus-server' if server_uri else ''}.json")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    milvus: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    mongo_first: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    mongo_rerun: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    with tempfile.TemporaryDirectory(prefix="bench-batches-") as tmp:
        work = Path(tmp)
        folder = synthetic_vectors(work / "vectors", args.vectors, 384)
        uri = server_uri or str(work / "milvus.db")
        mongo_proc, mongo_uri = (None, "") if server_uri else start_secantus(work)
        corpus = write_mongo_corpus(work / "docs.jsonl", args.docs)
        try:
            for r in range(args.rounds):
                for b in BATCH_SIZES:
                    milvus[b].append(milvus_rate(folder, uri, b))
                    log.info("round %d milvus batch %d: %.0f vectors/s", r + 1, b, milvus[b][-1])
                    if mongo_proc is not None:
                        first, rerun = mongo_rates(corpus, mongo_uri, b)
                        mongo_first[b].append(first)
                        mongo_rerun[b].append(rerun)
                        log.info("round %d mongo batch %d: %.0f / %.0f docs/s", r + 1, b, first, rerun)
        finally:
            if mongo_proc is not None:
                mongo_proc.terminate()
                mongo_proc.wait(timeout=30)
    report: dict[str, Any] = {
        "benchmark": "store_batches",
        "started": started,
        "method": "each batch size loads the same rows once per round, rounds interleaved; medians over rounds",
        "default_batch_size": DEFAULT_BATCH,
        "rounds": args.rounds,
        "machine": machine_info(contended=args.contended),
        "load_average_before": [round(x, 2) for x in load_before],
        "milvus": {
            "store": "Milvus 2.3.5 server (scripts/with-milvus-netns)" if server_uri else "Milvus Lite embedded",
            "vectors": args.vectors,
            "dim": 384,
            "what": "push_milvus upserts into a fresh FLAT collection, upsert time only",
            **summarise(milvus),
        },
    }
    if not server_uri:
        report["mongo"] = {
            "store": "SecantusDB on 127.0.0.1",
            "docs": args.docs,
            "first_load_bulk_inserts": summarise(mongo_first),
            "rerun_bulk_upserts": summarise(mongo_rerun),
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
