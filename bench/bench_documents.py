"""What live document writes cost, against baselines measured in the same run:

1. Batch writes (128 documents, `wait=true`) per second through the documents API, against the floor of doing the
   same work with the raw clients in one process: tokenize with the document prompt, Embed on the same model
   server, upsert into Milvus, replace into MongoDB. Target: the API at least 0.7x the floor.
2. Single `wait=true` writes: the time until the document is searchable (the answer comes then), p50 and p99.
3. Search p50 at concurrency 8 while a writer streams 50 writes/s (`wait=false`), against search alone.
   Target: at most 1.3x.

Setup as bench_search (its corpus, config and processes) on Milvus Lite's server and SecantusDB; rounds alternate
nothing (each point is its own measure) and every figure is the median of the rounds, each round kept:

    .venv/bin/python -m bench.bench_documents [--docs 2000] [--rounds 3] [--seconds 10]
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
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.bench_search import (
    CORPUS,
    MINILM,
    bench_config,
    build_repo,
    load_corpus,
    service_run,
    start_model_services,
    start_search_on,
    start_stores,
)
from bench.machine import machine_info

log = logging.getLogger("bench.documents")

BATCH = 128
TARGET_BATCH_RATIO = 0.7
TARGET_SEARCH_RATIO = 1.3
WRITES_PER_SECOND = 50
FIRST_ID = 1_000_000  # above the corpus's ids: every write adds a document


def _docs(texts: list[tuple[str, str]], first: int, n: int) -> list[tuple[int, dict[str, Any]]]:
    return [
        (first + i, {"question": texts[i % len(texts)][0], "answer": texts[i % len(texts)][1], "category": ["bench"]})
        for i in range(n)
    ]


async def api_batches(url: str, docs: list[tuple[int, dict[str, Any]]]) -> float:
    """Documents per second written through POST .../documents:batch (wait=true), batch after batch."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        t0 = time.perf_counter()
        for s in range(0, len(docs), BATCH):
            items = [{"op": "upsert", "id": str(i), "document": d} for i, d in docs[s : s + BATCH]]
            reply = await http.post(f"/corpora/{CORPUS}/documents:batch", json={"items": items})
            if reply.status_code != 200:
                raise RuntimeError(f"batch refused: {reply.status_code} {reply.text[:300]}")
        return len(docs) / (time.perf_counter() - t0)


async def floor_batches(repo: Any, model_target: str, stores: Any, docs: list[tuple[int, dict[str, Any]]]) -> float:
    """The same writes with the raw clients: tokenize (document prompt), Embed, Milvus upsert, MongoDB replace."""
    from pymongo import ReplaceOne

    from mmsearch.runtime.text import TextPreprocessor
    from mmsearch.settings import MilvusSettings, MongoSettings
    from mmsearch.stores import milvus_client, mongo_client
    from services.model_server.client import ModelServerClient

    prep = TextPreprocessor.from_repo(repo, MINILM)
    models = ModelServerClient(model_target, timeout=60)
    milvus = milvus_client(MilvusSettings(uri=stores.milvus_uri))
    mongo = mongo_client(MongoSettings(uri=stores.mongo_uri))
    coll = mongo["mmsearch"][CORPUS]
    try:
        t0 = time.perf_counter()
        for s in range(0, len(docs), BATCH):
            part = docs[s : s + BATCH]
            batch = prep.prep([d["question"] for _, d in part], role="document")
            vectors = (
                await models.embed_versioned(MINILM, batch.tensors, output=prep.manifest.embedding_output)
            ).vectors
            coll.bulk_write([ReplaceOne({"_id": i}, {"_id": i, "queryid": str(i), **d}, upsert=True) for i, d in part])
            milvus.upsert(
                CORPUS,
                [
                    {"id": i, "question_emb": v.tolist(), "category": d["category"]}
                    for (i, d), v in zip(part, vectors, strict=True)
                ],
            )
        rate = len(docs) / (time.perf_counter() - t0)
        milvus.flush(CORPUS)  # not timed: as the applier does, so the search points see sealed segments
        return rate
    finally:
        await models.close()
        milvus.close()
        mongo.close()


async def single_writes(url: str, docs: list[tuple[int, dict[str, Any]]]) -> list[float]:
    """Seconds from sending a PUT (wait=true) to its answer, which comes once the document is searchable."""
    import httpx

    out = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for doc_id, doc in docs:
            t0 = time.perf_counter()
            reply = await http.put(f"/corpora/{CORPUS}/documents/{doc_id}", json=doc)
            if reply.status_code != 200:
                raise RuntimeError(f"write refused: {reply.status_code} {reply.text[:300]}")
            out.append(time.perf_counter() - t0)
    return out


async def search_with_writer(
    url: str, queries: list[str], seconds: float, docs: list[tuple[int, dict[str, Any]]]
) -> tuple[dict[str, Any], int]:
    """Search at c=8 while one client PUTs (wait=false) WRITES_PER_SECOND documents a second; returns the search
    point and the writes acknowledged."""
    import httpx

    written = 0

    async def writer() -> None:
        nonlocal written
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            start = time.perf_counter()
            for n, (doc_id, doc) in enumerate(docs):
                due = start + n / WRITES_PER_SECOND
                if due > start + seconds:
                    return
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                reply = await http.put(f"/corpora/{CORPUS}/documents/{doc_id}", json=doc, params={"wait": "false"})
                written += reply.status_code in (200, 202)

    point, _ = await asyncio.gather(service_run(url, queries, 8, seconds), writer())
    return point, written


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000, help="Corpus size before the writes.")
    ap.add_argument("--batches", type=int, default=8, help="Batches of 128 per round (point 1).")
    ap.add_argument("--singles", type=int, default=40, help="Single writes per round (point 2).")
    ap.add_argument("--seconds", type=float, default=10.0, help="Search time per side and round (point 3).")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repo", type=Path, default=Path("var/bench/models"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/documents.json"))
    ap.add_argument("--contended", action="store_true", help="Other work shares the CPU during this run.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_before = os.getloadavg()[0]

    from offline.datasets.faq import load_faq

    texts = [(e.q, e.a) for e in load_faq()]
    repo = build_repo(args.repo)
    rounds: list[dict[str, Any]] = []
    next_id = FIRST_ID
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-documents-") as tmp:
        work = Path(tmp)
        stores = start_stores(stack, work)
        queries, _ = load_corpus(repo, stores.milvus_uri, stores.mongo_uri, args.docs, "FLAT")
        services = start_model_services(stack, repo, work, bench_config())
        url = start_search_on(stack, repo, work, stores, services)
        asyncio.run(service_run(url, queries, 8, 2.0))  # warm-up
        asyncio.run(single_writes(url, _docs(texts, next_id, 5)))
        next_id += 5
        for r in range(args.rounds):
            n = args.batches * BATCH
            api = asyncio.run(api_batches(url, _docs(texts, next_id, n)))
            next_id += n
            floor = asyncio.run(floor_batches(repo, services.model_server_target, stores, _docs(texts, next_id, n)))
            next_id += n
            singles = asyncio.run(single_writes(url, _docs(texts, next_id, args.singles)))
            next_id += args.singles
            alone = asyncio.run(service_run(url, queries, 8, args.seconds))
            stream = _docs(texts, next_id, int(args.seconds * WRITES_PER_SECOND) + 10)
            busy, written = asyncio.run(search_with_writer(url, queries, args.seconds, stream))
            next_id += len(stream)
            point = {
                "batch_docs_per_s": {"api": round(api, 1), "floor": round(floor, 1), "ratio": round(api / floor, 3)},
                "single_write_ms": {
                    "p50": round(statistics.median(singles) * 1000, 1),
                    "p99": round(_pct(singles, 0.99) * 1000, 1),
                },
                "search_c8": {
                    "alone_p50_ms": alone["p50_ms"],
                    "with_writes_p50_ms": busy["p50_ms"],
                    "ratio": round(busy["p50_ms"] / alone["p50_ms"], 3),
                    "writes_acknowledged": written,
                    "errors": alone["errors"] + busy["errors"],
                    "alone_stage_p50_ms": alone["stage_p50_ms"],
                    "with_writes_stage_p50_ms": busy["stage_p50_ms"],
                },
            }
            log.info("round %d: %s", r + 1, json.dumps(point))
            rounds.append(point)

    def med(path: tuple[str, str]) -> float:
        return round(float(statistics.median(p[path[0]][path[1]] for p in rounds)), 3)

    result = {
        "batch_docs_per_s": {k: med(("batch_docs_per_s", k)) for k in ("api", "floor", "ratio")},
        "single_write_ms": {k: med(("single_write_ms", k)) for k in ("p50", "p99")},
        "search_c8": {k: med(("search_c8", k)) for k in ("alone_p50_ms", "with_writes_p50_ms", "ratio")},
    }
    out = {
        "benchmark": "documents",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {
            "store": "milvus-lite server (FLAT) + SecantusDB, each a process on loopback; one tokenizer and one model "
            "server (one ONNX Runtime thread), one search service",
            "docs": args.docs,
            "batch": BATCH,
            "batches_per_round": args.batches,
            "singles_per_round": args.singles,
            "search_seconds": args.seconds,
            "writes_per_second_during_search": WRITES_PER_SECOND,
            "rounds": args.rounds,
            "floor": "in this process: tokenize (document prompt) + Embed on the same model server + Milvus upsert + "
            "MongoDB bulk replace, batch after batch",
        },
        "machine": machine_info(contended=args.contended or load_before > 1.0),
        "load_average_before": round(load_before, 2),
        "result": result,
        "targets": {
            "batch_ratio_at_least": TARGET_BATCH_RATIO,
            "batch_met": result["batch_docs_per_s"]["ratio"] >= TARGET_BATCH_RATIO,
            "search_ratio_at_most": TARGET_SEARCH_RATIO,
            "search_met": result["search_c8"]["ratio"] <= TARGET_SEARCH_RATIO,
        },
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s: %s", args.out, json.dumps(out["result"]))


if __name__ == "__main__":
    main()
