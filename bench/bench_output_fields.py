"""What asking Milvus for no output fields costs: an ANN search with `output_fields=[]` against the same search
with `["id"]` (what the search service asks since issue 16), in the same run, on the stores the local stack uses.

Milvus Lite answers an empty list with every field of each hit (the 384-d vector, the BM25 sparse vector, the
text and filter fields); the real Milvus answers it with ids only, so the difference is Milvus Lite's. The corpus
is the stack's `faq_qa` as `mmsearch ingest` builds it (503 FAQ questions, real MiniLM vectors, HNSW, lexical
field `question`, filter field `category`) in a `milvus-lite server` process on loopback; queries are the FAQ
questions' own vectors, 50 hits each (the service's default max_reservation); rounds alternate the two sides.

    .venv/bin/python -m bench.bench_output_fields [--repo models] [--rounds 5] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import machine_info

log = logging.getLogger("bench.output_fields")

LIMIT = 50
SIDES: dict[str, list[str]] = {"no_output_fields": [], "id_only": ["id"]}


def build_corpus(repo: Any, folder: Path, uri: str) -> tuple[str, np.ndarray]:
    from mmsearch.settings import MilvusSettings
    from offline.encode.pipeline import encode_corpus
    from offline.encode.shards import iter_shards, open_vectors
    from offline.preprocess.demo import prepare_demo
    from offline.push.milvus_push import MilvusPushOptions, push_milvus

    corpus = folder / "faq.jsonl"
    prepare_demo("faq", corpus)
    vectors = folder / "vectors"
    encode_corpus(corpus, repo, "minilm", "question", vectors, progress=False)
    opts = MilvusPushOptions(
        vectors=vectors, corpus="faq_qa", filter_fields=["category"], lexical_fields=["question"], progress=False
    )
    summary = push_milvus(MilvusSettings(uri=uri), opts)
    queries = np.concatenate([v for _, v in iter_shards(vectors, open_vectors(vectors))])
    return summary.alias, queries


def timed_searches(client: Any, alias: str, queries: np.ndarray, fields: list[str]) -> list[float]:
    out = []
    for q in queries:
        t0 = time.perf_counter()
        hits = client.search(alias, data=[q.tolist()], anns_field="question_emb", limit=LIMIT, output_fields=fields)
        ids = [h["id"] for h in hits[0]]
        out.append(time.perf_counter() - t0)
        assert len(ids) == LIMIT
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("models"), help="model repository with minilm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=200, help="searches per side and round")
    parser.add_argument("--out", type=Path, default=Path("bench/results/output-fields.json"))
    parser.add_argument("--contended", action="store_true", help="other work shared the CPU during the run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from mmsearch import stores
    from mmsearch.model_repo import ModelRepository
    from mmsearch.settings import MilvusSettings
    from tests.fixtures.ports import free_port, stop_process, wait_until
    from tests.fixtures.stores import milvus_lite_server_cmd, milvus_reachable

    repo = ModelRepository(args.repo)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-output-fields-") as tmp:
        folder = Path(tmp)
        uri = f"http://127.0.0.1:{free_port()}"
        proc = subprocess.Popen(
            milvus_lite_server_cmd(folder / "milvus", int(uri.rsplit(":", 1)[1])),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: milvus_reachable(uri), what="milvus-lite server", timeout=60, proc=proc)
            alias, vectors = build_corpus(repo, folder, uri)
            queries = vectors[: args.queries]
            client = stores.milvus_client(MilvusSettings(uri=uri))
            try:
                for fields in SIDES.values():
                    timed_searches(client, alias, queries[:20], fields)  # warm-up
                per_round: dict[str, list[float]] = {name: [] for name in SIDES}
                every: dict[str, list[float]] = {name: [] for name in SIDES}
                for r in range(args.rounds):
                    order = list(SIDES.items()) if r % 2 == 0 else list(reversed(SIDES.items()))
                    for name, fields in order:
                        s = timed_searches(client, alias, queries, fields)
                        per_round[name].append(round(statistics.median(s) * 1000, 3))
                        every[name].extend(s)
            finally:
                client.close()
        finally:
            stop_process(proc)
    p50 = {name: round(statistics.median(s) * 1000, 3) for name, s in every.items()}
    result = {
        "benchmark": "output-fields",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(contended=args.contended),
        "load_average_at_start": list(load_before),
        "store": "milvus-lite server (pymilvus MilvusClient over loopback gRPC)",
        "corpus": "faq_qa: 503 FAQ questions, MiniLM, HNSW, lexical field question, filter field category",
        "limit": LIMIT,
        "searches_per_side": len(every["id_only"]),
        "p50_ms": p50,
        "p50_ms_per_round": per_round,
        "ratios": {"id_only_p50_vs_no_output_fields": round(p50["id_only"] / p50["no_output_fields"], 3)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
