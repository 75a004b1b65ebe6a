"""FLAT vs HNSW on Milvus Lite (the local stack's store) at 10k and 100k vectors: query latency, recall@10 against
exact search, and build time, to choose `mmsearch ingest`'s default index by measurement.

Vectors: real all-MiniLM-L6-v2 embeddings of every FAQ and chatterbot question and answer (3,751 distinct texts),
each repeated with Gaussian noise (sigma --noise per dimension, then unit length) up to the corpus size, so the
corpus keeps the clustered geometry of real text embeddings (random vectors make HNSW look worse than it is on
text). Queries: --queries of those real embeddings with fresh noise. Exact neighbours by numpy (inner product on
unit vectors). Each index is built by the same parameters `mmsearch ingest` uses (offline.push.schema) in Milvus
Lite embedded, and searched one query at a time with the demo config's ef 128. Writes bench/results/index.json.

    .venv/bin/python -m bench.bench_index [--sizes 10000 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_search import build_repo
from bench.machine import machine_info

log = logging.getLogger("bench.index")
K = 10
EF = 128


def real_embeddings(repo: Any) -> np.ndarray:
    from mmsearch.runtime.encoder import OnnxEncoder

    encoder = OnnxEncoder.from_repo(repo, "minilm", providers=["CPUExecutionProvider"])
    return encoder.encode_texts(real_texts(), batch_size=64)


def real_texts() -> list[str]:
    """The distinct FAQ and chatterbot questions and answers, sorted (3,751): the texts the vectors come from."""
    from offline.datasets.faq import load_faq
    from offline.preprocess.demo import prepare_demo

    texts = [t for e in load_faq() for t in (e.q, e.a)]
    with tempfile.TemporaryDirectory() as tmp:
        chat = Path(tmp) / "chat.jsonl"
        prepare_demo("chatterbot", chat)
        for line in chat.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts += [row["question"], row["answer"]]
    return sorted(set(texts))


def noisy(base: np.ndarray, n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    picks = rng.integers(0, len(base), size=n)
    out = base[picks] + rng.normal(scale=sigma, size=(n, base.shape[1])).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def measure(uri: str, vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, index: str) -> dict[str, Any]:
    from mmsearch.settings import MilvusSettings
    from offline.push.milvus_push import milvus_client

    with milvus_client(MilvusSettings(uri=uri, timeout_seconds=600)) as client:  # quiets Milvus Lite's tracebacks
        return _measure(client, vectors, queries, exact, index)


def _measure(client: Any, vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, index: str) -> dict[str, Any]:
    from pymilvus import DataType

    from offline.push.schema import IndexType, Metric, index_params

    name = f"bench_{index.lower()}_{len(vectors)}"
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
    client.create_collection(name, schema=schema)
    t0 = time.perf_counter()
    for s in range(0, len(vectors), 5000):
        client.insert(name, [{"id": s + i, "v": v.tolist()} for i, v in enumerate(vectors[s : s + 5000])])
    client.flush(name)
    insert_s = time.perf_counter() - t0
    params = client.prepare_index_params()
    params.add_index("v", index_name="v", **index_params(IndexType(index), Metric.IP, len(vectors)))
    t1 = time.perf_counter()
    client.create_index(name, params)
    client.load_collection(name)
    build_s = time.perf_counter() - t1
    latencies, recalls = [], []
    search = {"params": {"ef": EF}} if index == "HNSW" else {"params": {}}
    # Ids only, as the search service asks: Milvus Lite returns every field (the vectors) for no output fields.
    ask = {"anns_field": "v", "limit": K, "search_params": search, "output_fields": ["id"]}
    client.search(name, data=[queries[0].tolist()], **ask)  # warm-up
    for q, truth in zip(queries, exact, strict=True):
        t2 = time.perf_counter()
        hits = client.search(name, data=[q.tolist()], **ask)[0]
        latencies.append(time.perf_counter() - t2)
        recalls.append(len({int(h["id"]) for h in hits} & set(truth.tolist())) / K)
    client.drop_collection(name)
    return {
        "index": index,
        "params": index_params(IndexType(index), Metric.IP, len(vectors))["params"],
        "search_params": search["params"],
        "insert_and_flush_s": round(insert_s, 2),
        "index_build_and_load_s": round(build_s, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2),
        f"recall_at_{K}": round(float(np.mean(recalls)), 4),
        f"min_recall_at_{K}": round(float(np.min(recalls)), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--noise", type=float, default=0.02, help="per-dimension sigma of the copies and the queries")
    ap.add_argument(
        "--repo", type=Path, default=Path("var/bench/models"), help="Model repository (MiniLM exported if missing)."
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results/index.json"))
    ap.add_argument(
        "--save-vectors",
        type=Path,
        default=None,
        help="also write corpus.npy and queries.npy here (bench/lite_build_probe.py measures another build on them)",
    )
    ap.add_argument("--contended", action="store_true", help="Other work shares the CPU during this run.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_before = os.getloadavg()[0]
    repo = build_repo(args.repo)
    base = real_embeddings(repo)
    log.info("%d real embeddings", len(base))
    rng = np.random.default_rng(0)
    corpus = noisy(base, max(args.sizes), args.noise, rng)
    keep = min(len(base), len(corpus))
    corpus[:keep] = base[:keep]  # the real embeddings themselves come first
    queries = noisy(base, args.queries, args.noise, rng)
    if args.save_vectors:
        args.save_vectors.mkdir(parents=True, exist_ok=True)
        np.save(args.save_vectors / "corpus.npy", corpus)
        np.save(args.save_vectors / "queries.npy", queries)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        for size in args.sizes:
            vectors = corpus[:size]
            exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
            results[str(size)] = {}
            for index in ("FLAT", "HNSW"):
                uri = str(Path(tmp) / f"{index}-{size}.db")
                got = measure(uri, vectors, queries, exact, index)
                log.info("%d %s: %s", size, index, got)
                results[str(size)][index] = got
    out = {
        "benchmark": "index",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "store": "Milvus Lite 3.2 embedded (pymilvus MilvusClient on a local .db), the engine of the local stack",
        "vectors": {
            "real_embeddings": len(base),
            "model": "all-MiniLM-L6-v2",
            "texts": "FAQ + chatterbot questions and answers",
            "copies_noise_sigma": args.noise,
        },
        "queries": args.queries,
        "k": K,
        "results": results,
        "ratios": {
            size: {
                "hnsw_p50_over_flat": round(r["HNSW"]["p50_ms"] / r["FLAT"]["p50_ms"], 3),
                "hnsw_recall": r["HNSW"][f"recall_at_{K}"],
            }
            for size, r in results.items()
        },
        "machine": machine_info(contended=args.contended or load_before > 1.0),
        "load_average_before": round(load_before, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["ratios"], indent=2))


if __name__ == "__main__":
    main()
