"""Another Milvus Lite build on the vectors of bench_index (run it in that build's own virtualenv, which cannot
hold mmsearch: e.g. the C++ milvus-lite 2.5.1 needs pymilvus 2.5 and setuptools<70):

    python3 -m venv /tmp/lite25 && /tmp/lite25/bin/pip install "setuptools<70" "pymilvus==2.5.*" "milvus-lite==2.5.1"
    .venv/bin/python -m bench.bench_index --save-vectors /tmp/index-vectors
    /tmp/lite25/bin/python bench/lite_build_probe.py /tmp/index-vectors --out bench/results/lite-build-2.5.1.json

Measures what bench_index measures (insert + flush, index build + load, p50 per query, recall@10 against exact
search) for FLAT and HNSW with the same parameters, and whether BM25 full-text search works. Standard library,
numpy and pymilvus only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, Function, FunctionType, MilvusClient

K, EF = 10, 128
PARAMS = {"FLAT": {}, "HNSW": {"M": 16, "efConstruction": 200}}  # offline/push/schema.py index_params


def measure(folder: str, vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, index: str) -> dict[str, Any]:
    client = MilvusClient(os.path.join(folder, f"{index.lower()}{len(vectors)}.db"))
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
    client.create_collection("c", schema=schema)
    t0 = time.perf_counter()
    for s in range(0, len(vectors), 5000):
        client.insert("c", [{"id": s + i, "v": v.tolist()} for i, v in enumerate(vectors[s : s + 5000])])
    client.flush("c")
    insert_s = time.perf_counter() - t0
    params = client.prepare_index_params()
    params.add_index("v", index_name="v", index_type=index, metric_type="IP", params=PARAMS[index])
    t1 = time.perf_counter()
    client.create_index("c", params)
    client.load_collection("c")
    build_s = time.perf_counter() - t1
    search = {"params": {"ef": EF}} if index == "HNSW" else {"params": {}}
    client.search("c", data=[queries[0].tolist()], anns_field="v", limit=K, search_params=search)
    latencies, recalls = [], []
    for q, truth in zip(queries, exact, strict=True):
        t2 = time.perf_counter()
        hits = client.search("c", data=[q.tolist()], anns_field="v", limit=K, search_params=search)[0]
        latencies.append(time.perf_counter() - t2)
        recalls.append(len({int(h["id"]) for h in hits} & set(truth.tolist())) / K)
    client.close()
    return {
        "index": index,
        "insert_and_flush_s": round(insert_s, 2),
        "index_build_and_load_s": round(build_s, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        f"recall_at_{K}": round(float(np.mean(recalls)), 4),
    }


def bm25_works(folder: str) -> str:
    client = MilvusClient(os.path.join(folder, "bm25.db"))
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=1000, enable_analyzer=True)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
    schema.add_function(
        Function(
            name="bm25", function_type=FunctionType.BM25, input_field_names=["text"], output_field_names=["sparse"]
        )
    )
    params = client.prepare_index_params()
    params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    params.add_index("v", index_type="FLAT", metric_type="IP")
    try:
        client.create_collection("t", schema=schema, index_params=params)
        client.insert(
            "t",
            [{"id": 1, "text": "building permit for a garage", "v": [1, 0]}, {"id": 2, "text": "roof", "v": [0, 1]}],
        )
        hits = client.search(
            "t", data=["garage permit"], anns_field="sparse", limit=2, search_params={"metric_type": "BM25"}
        )
        return "yes" if [int(h["id"]) for h in hits[0]] == [1] else f"unexpected hits {hits}"
    except Exception as exc:  # noqa: BLE001 - the answer is whether it works
        return f"no ({type(exc).__name__}: {str(exc)[:200]})"
    finally:
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vectors", type=Path, help="folder with corpus.npy and queries.npy from bench_index")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    corpus, queries = np.load(args.vectors / "corpus.npy"), np.load(args.vectors / "queries.npy")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lite-probe-") as tmp:
        for size in args.sizes:
            vectors = corpus[:size]
            exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
            results[str(size)] = {}
            for ix in ("FLAT", "HNSW"):
                try:
                    results[str(size)][ix] = measure(tmp, vectors, queries, exact, ix)
                except Exception as exc:  # noqa: BLE001 - a build that refuses an index type is an answer
                    results[str(size)][ix] = {"index": ix, "refused": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(size, results[str(size)], flush=True)
        bm25 = bm25_works(tmp)
    out = {
        "benchmark": "lite-build-probe",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "build": {"milvus-lite": version("milvus-lite"), "pymilvus": version("pymilvus")},
        "results": results,
        "bm25_full_text_search": bm25,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cores": os.cpu_count()},
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
