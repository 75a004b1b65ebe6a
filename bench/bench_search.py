"""Search service benchmark: end-to-end POST /qa/user/{id} against the same work as direct library calls.

Setup (bounded, ~1-2 min on 2 cores): the real MiniLM (exported into --repo if missing), the tokenizer and model
server as processes, a milvus-lite server and SecantusDB, a corpus of --docs documents (the 503 real FAQ questions
encoded with MiniLM + synthetic unit vectors for the rest; MongoDB documents for all), the search service as a
process with the A/B config in the Consul KV test double.

Measured, per concurrency (1, 8, 32): p50/p99 latency and QPS of
- service: HTTP -> search service -> gRPC tokenizer -> gRPC model server -> Milvus -> MongoDB, rank pinned to the
  dummy ranker (useDebug + specifiedLayerAndExperiment) so every request does the same work; per-stage breakdown
  from the service's own stage timings;
- ceiling: the same steps as direct calls in one process (tokenizers + ONNX Runtime in-process, pymilvus search,
  pymongo find), threads for concurrency.
Target: at concurrency 1 the service adds at most 25% to the ceiling's latency. Writes bench/results/search.json.

`--store milvus-server`: the same against the real Milvus 2.3.5 server instead of the milvus-lite server. That
server binds every interface, so the whole benchmark runs inside the private network namespace of the
`milvus-server` test tier (scripts/with-milvus-netns starts the server there and runs the command beside it;
everything stays on that namespace's loopback). Targets there: p50 overhead at concurrency 1 <= 25% and QPS at
concurrency 32 >= 0.8x the ceiling; writes bench/results/search-milvus-server.json with both under "ratios".
The query-embedding cache is off in every benchmark of the query path (the FAQ questions repeat): its own
benchmark is bench_query_cache.

    .venv/bin/python -m bench.bench_search --docs 100000 --seconds 15
    scripts/with-milvus-netns .venv/bin/python -m bench.bench_search --store milvus-server --docs 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import machine_info
from mmsearch import stores
from mmsearch.settings import MilvusSettings

log = logging.getLogger("bench.search")
MINILM = "minilm"
CONCURRENCY = (1, 8, 32)
TOP_K = 10
MAX_RESERVATION = 50
# What the service sends for the bench config's searchParams '{"ef": 128}' (ef = max(128, hits asked)): the
# ceiling searches with the same, so both explore the same HNSW candidates.
SEARCH_PARAMS = {"params": {"ef": max(128, MAX_RESERVATION)}}
CORPUS = "faq_qa"


def summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "p50_ms": round(1000 * lat[len(lat) // 2], 2),
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2),
        "mean_ms": round(1000 * statistics.fmean(lat), 2),
        "qps": round(len(lat) / elapsed, 1),
    }


def build_repo(root: Path) -> Any:
    from mmsearch.model_repo import ModelRepository

    repo = ModelRepository(root)
    if MINILM not in repo:
        from offline.export.sbert import export_sbert
        from tests.fixtures.models import minilm_source

        log.info("exporting MiniLM into %s", root)
        export_sbert(str(minilm_source()), repo, MINILM)
    return repo


def load_corpus(repo: Any, milvus_uri: str, mongo_uri: str, n_docs: int, index: str) -> tuple[list[str], float]:
    """Real FAQ rows first (so queries have true answers), synthetic rows up to n_docs. Returns the queries."""
    from pymilvus import DataType
    from pymongo import MongoClient
    from tqdm import tqdm

    from mmsearch.collection_meta import CollectionMeta, physical_name, to_properties
    from mmsearch.runtime.encoder import OnnxEncoder
    from offline.datasets.faq import load_faq

    t0 = time.perf_counter()
    faq = load_faq()
    encoder = OnnxEncoder.from_repo(repo, MINILM, providers=["CPUExecutionProvider"])
    real = encoder.encode_texts([e.q for e in faq], batch_size=64)
    dim = real.shape[1]
    rng = np.random.default_rng(0)
    client = stores.milvus_client(MilvusSettings(uri=milvus_uri))
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("question_emb", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("category", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=8, max_length=128)
    params = client.prepare_index_params()
    if index == "HNSW":
        params.add_index("question_emb", index_type="HNSW", metric_type="IP", params={"M": 16, "efConstruction": 100})
    else:
        params.add_index("question_emb", index_type="FLAT", metric_type="IP")
    name = physical_name(CORPUS)
    meta = CollectionMeta(
        model_key=MINILM,
        dim=dim,
        vector_field="question_emb",
        metric="IP",
        index_type=index,
        corpus=CORPUS,
        count=n_docs,
    )
    client.create_collection(name, schema=schema, index_params=params, properties=to_properties(meta))
    mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    coll = mongo["mmsearch"][CORPUS]
    coll.create_index("queryid", unique=True)
    batch = 5000
    for start in tqdm(range(0, n_docs, batch), desc="loading corpus", unit="batch"):
        ids = list(range(start + 1, min(n_docs, start + batch) + 1))
        vecs = rng.standard_normal((len(ids), dim)).astype(np.float32)
        for k, i in enumerate(ids):
            if i <= len(faq):
                vecs[k] = real[i - 1]
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        cats = [[faq[i - 1].category] if i <= len(faq) else ["synthetic"] for i in ids]
        client.insert(
            name,
            [{"id": i, "question_emb": v.tolist(), "category": c} for i, v, c in zip(ids, vecs, cats, strict=True)],
        )
        coll.insert_many(
            [
                {
                    "_id": i,
                    "queryid": str(i),
                    "question": faq[i - 1].q if i <= len(faq) else f"synthetic question {i}",
                    "answer": faq[i - 1].a if i <= len(faq) else f"synthetic answer {i} " * 8,
                    "category": c,
                }
                for i, c in zip(ids, cats, strict=True)
            ]
        )
    client.flush(name)
    client.load_collection(name)
    client.create_alias(name, CORPUS)
    client.close()
    mongo.close()
    return [e.q for e in faq], time.perf_counter() - t0


def bench_config() -> str:
    import yaml

    from tests.fixtures.search import AB_CONFIG

    doc = yaml.safe_load(AB_CONFIG.read_text())
    scene = doc["scene-config"]["scenes"][0]
    scene["extraSceneArgs"]["maxReservation"] = MAX_RESERVATION
    doc["scene-config"]["scenes"] = [scene]
    # The synthetic corpus has no lexical field: experiments with a BM25Matcher (hybrid) are left out.
    keep = [
        e
        for e in doc["scene-config"]["experiments"]
        if e["layerName"].endswith(".qa")
        and "BM25Matcher" not in (e.get("extraExperimentArgs") or {}).get("matcherNames", [])
    ]
    names = {e["experimentName"] for e in keep}
    for layer in scene["layers"]:
        layer["normalLayerArgs"] = [a for a in layer["normalLayerArgs"] if a["experimentName"] in names]
    doc["scene-config"]["experiments"] = keep
    return yaml.safe_dump(doc, sort_keys=False)


async def service_run(
    url: str,
    queries: list[str],
    concurrency: int,
    seconds: float,
    pins: dict[str, str] | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """POST /qa/user/{i} in a closed loop from `concurrency` clients for `seconds`; `pins` (layer -> experiment,
    default the dummy ranker) make every request do the same work; `headers` go with each (an API key)."""
    from bench.http_load import JsonConnection

    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
    errors = 0
    fallbacks = 0  # answers whose debug block says a stage fell back (a reranker past its time-out)
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def worker() -> None:
        nonlocal errors, fallbacks
        async with JsonConnection(url, headers) as http:
            while time.perf_counter() < deadline:
                i = next(counter)
                body = {
                    "query": queries[i % len(queries)],
                    "topK": TOP_K,
                    "useDebug": True,
                    "specifiedLayerAndExperiment": pins or {"rank.qa": "rank.qa.dummy"},
                }
                t0 = time.perf_counter()
                status, raw = await http.post(f"/qa/user/{i % 1000}", body)
                dt = time.perf_counter() - t0
                if status != 200:
                    errors += 1
                    continue
                latencies.append(dt)
                debug = json.loads(raw)["debug"]
                fallbacks += bool(debug.get("fallbacks"))
                for k, v in debug["stageMs"].items():
                    stages.setdefault(k, []).append(v)

    async with JsonConnection(url, headers) as warm:
        await warm.post("/qa/user/0", {"query": "warm up"})
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    out: dict[str, Any] = summary(latencies, elapsed)
    out["errors"] = errors
    out["fallbacks"] = fallbacks
    out["stage_p50_ms"] = {k: round(statistics.median(v), 2) for k, v in stages.items()}
    return out


class Ceiling:
    """The same steps as direct library calls in this process."""

    def __init__(self, repo: Any, milvus_uri: str, mongo_uri: str, corpus: str = CORPUS) -> None:
        from pymongo import MongoClient

        from mmsearch.runtime.encoder import OnnxEncoder
        from mmsearch.runtime.text import TextPreprocessor

        self.prep = TextPreprocessor.from_repo(repo, MINILM)
        # One intra-op thread, as the benchmarked model server runs (--intra-op-threads 1).
        self.encoder = OnnxEncoder.from_repo(repo, MINILM, providers=["CPUExecutionProvider"], intra_op_threads=1)
        self.milvus = stores.milvus_client(MilvusSettings(uri=milvus_uri))
        self.mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
        self.corpus = corpus

    def match(self, query: str, vec: np.ndarray) -> list[Any]:
        """The match stage's store work: one vector search for the hits the service asks for."""
        return list(
            self.milvus.search(
                self.corpus,
                data=[vec.tolist()],
                anns_field="question_emb",
                limit=MAX_RESERVATION,
                search_params=SEARCH_PARAMS,
                output_fields=["id"],  # as the service asks (Milvus Lite returns every field for none)
            )[0]
        )

    def one(self, query: str) -> dict[str, float]:
        t = {}
        t0 = time.perf_counter()
        tensors = self.prep.prep([query]).tensors
        t["tokenize"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        vec = self.encoder.run(tensors)[0]
        vec = vec / np.linalg.norm(vec)
        t["embed"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        hits = self.match(query, vec)
        t["milvus"] = time.perf_counter() - t2
        raw = [h["distance"] for h in hits]
        top = max(raw) + 0.001
        ranked = sorted(((h["distance"] / top + 3, str(h["id"])) for h in hits), reverse=True)[:TOP_K]
        t3 = time.perf_counter()
        ids = [i for _, i in ranked]
        fields = {"question": 1, "answer": 1, "category": 1, "queryid": 1, "_id": 0}  # the summaryFields
        docs = {d["queryid"]: d for d in self.mongo["mmsearch"][self.corpus].find({"queryid": {"$in": ids}}, fields)}
        assert len(docs) == len(ids)
        t["mongo"] = time.perf_counter() - t3
        t["total"] = time.perf_counter() - t0
        return t

    def close(self) -> None:
        self.milvus.close()
        self.mongo.close()

    def run(self, queries: list[str], concurrency: int, seconds: float) -> dict[str, Any]:
        latencies: list[float] = []
        parts: dict[str, list[float]] = {}
        deadline = time.perf_counter() + seconds
        counter = iter(range(10**9))
        guard = threading.Lock()

        def worker() -> None:
            while time.perf_counter() < deadline:
                with guard:
                    i = next(counter)
                t = self.one(queries[i % len(queries)])
                with guard:
                    latencies.append(t["total"])
                    for k, v in t.items():
                        parts.setdefault(k, []).append(v * 1000)

        self.one("warm up")
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for f in [pool.submit(worker) for _ in range(concurrency)]:
                f.result()
        out: dict[str, Any] = summary(latencies, time.perf_counter() - t0)
        out["stage_p50_ms"] = {k: round(statistics.median(v), 2) for k, v in parts.items() if k != "total"}
        return out


def stop_all(stores: Any) -> None:
    from tests.fixtures.ports import stop_process

    for proc in list(stores.procs.values()):
        stop_process(proc)


def start_stores(stack: ExitStack, work: Path, *, milvus_uri: str | None = None) -> Any:
    """A milvus-lite server and SecantusDB on free loopback ports, stopped by PID when `stack` closes; with
    `milvus_uri`, that Milvus (already running) instead of a milvus-lite server."""
    from tests.fixtures.ports import free_port
    from tests.fixtures.search import Stores

    stores = Stores(
        milvus_uri="",
        milvus_port=free_port(),
        milvus_dir=work / "milvus",
        mongo_uri="",
        mongo_port=free_port(),
        mongo_dir=work / "mongo",
        log_dir=work,
    )
    stores.milvus_uri = milvus_uri or f"http://127.0.0.1:{stores.milvus_port}"
    stores.mongo_uri = f"mongodb://127.0.0.1:{stores.mongo_port}"
    if milvus_uri is None:
        stores.start_milvus()
    stack.callback(stop_all, stores)
    stores.start_mongo()
    return stores


# Settings every benchmark's search service runs with.
BENCH_SEARCH_ENV = {
    "MMSEARCH_LOG_LEVEL": "WARNING",
    "MMSEARCH_SEARCH__STAGE_TIMEOUT_SECONDS": "10",
    # The benchmarks replay a few hundred questions: with the query-embedding cache on, they would measure
    # the cache. It is off unless a benchmark turns it on (bench_query_cache).
    "MMSEARCH_SEARCH__QUERY_CACHE_SIZE": "0",
}


@dataclass(frozen=True)
class ModelServices:
    """A tokenizer, a model server (one ORT thread) and the Consul KV test double holding the A/B config."""

    tokenizer_target: str
    model_server_target: str
    consul: Any
    pids: dict[str, int]  # "tokenizer", "model": their processes (a benchmark reads their memory)


def start_model_services(stack: ExitStack, repo: Any, work: Path, config: str) -> ModelServices:
    """The processes a search service calls, stopped when `stack` closes; the A/B `config` in the Consul double."""
    from tests.doubles.consul_kv import ConsulKVDouble
    from tests.fixtures.grpc_services import start_service
    from tests.fixtures.search import CONSUL_KEY

    common = ["--rescan-seconds", "0"]
    tok = stack.enter_context(start_service("tokenizer", repo.root, *common, log_dir=work, name="bench-tok"))
    model = stack.enter_context(
        start_service("model", repo.root, *common, "--intra-op-threads", "1", log_dir=work, name="bench-model")
    )
    consul = ConsulKVDouble().start()
    stack.callback(consul.stop)
    consul.put(CONSUL_KEY, config)
    return ModelServices(tok.target, model.target, consul, {"tokenizer": tok.proc.pid, "model": model.proc.pid})


def start_search_on(
    stack: ExitStack,
    repo: Any,
    work: Path,
    stores: Any,
    services: ModelServices,
    *,
    extra_env: dict[str, str] | None = None,
) -> str:
    """A search service process over `services` and `stores`; returns its URL. `extra_env` adds settings."""
    return str(start_search_process(stack, repo, work, stores, services, extra_env=extra_env).url)


def start_search_process(
    stack: ExitStack,
    repo: Any,
    work: Path,
    stores: Any,
    services: ModelServices,
    *,
    extra_env: dict[str, str] | None = None,
) -> Any:
    """start_search_on's process itself (its URL and Popen), stopped when `stack` closes."""
    from tests.fixtures.search import CONSUL_KEY, start_search

    return stack.enter_context(
        start_search(
            repo=repo.root,
            tokenizer_target=services.tokenizer_target,
            model_server_target=services.model_server_target,
            milvus_uri=stores.milvus_uri,
            mongo_uri=stores.mongo_uri,
            consul=services.consul,
            consul_key=CONSUL_KEY,
            work_dir=work,
            extra_env=BENCH_SEARCH_ENV | (extra_env or {}),
        )
    )


def start_search_service(
    stack: ExitStack,
    repo: Any,
    work: Path,
    stores: Any,
    config: str,
    *,
    extra_env: dict[str, str] | None = None,
) -> str:
    """Tokenizer, model server (one ORT thread) and search service as processes over `stores`, the A/B `config`
    in the Consul KV test double; returns the search service's URL. Everything stops when `stack` closes.
    `extra_env` adds settings of the search service (MMSEARCH_SEARCH__...)."""
    services = start_model_services(stack, repo, work, config)
    return start_search_on(stack, repo, work, stores, services, extra_env=extra_env)


def median_of(rounds: list[dict[str, Any]], stage_layer: str | None = None) -> dict[str, Any]:
    """Rounds of `service_run` as one point: p50, p99 and QPS as medians, requests, errors and fallbacks summed, and
    with `stage_layer` ("match.qa") that layer's median stage time as "<stage>_stage_p50_ms"; the rounds kept."""
    keys = ("p50_ms", "p99_ms", "qps")
    out: dict[str, Any] = {k: round(statistics.median(r[k] for r in rounds), 2) for k in keys}
    for k in ("requests", "errors", "fallbacks"):
        out[k] = sum(r[k] for r in rounds)
    if stage_layer is not None:
        stage = stage_layer.split(".")[0]
        out[f"{stage}_stage_p50_ms"] = round(
            statistics.median(r["stage_p50_ms"].get(stage_layer, 0.0) for r in rounds), 2
        )
    out["rounds"] = rounds
    return out


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000, help="Corpus size (real FAQ rows + synthetic vectors).")
    ap.add_argument("--seconds", type=float, default=15.0, help="Measuring time per concurrency and side.")
    ap.add_argument("--index", choices=["HNSW", "FLAT"], default="HNSW")
    ap.add_argument(
        "--store",
        choices=["milvus-lite", "milvus-server"],
        default="milvus-lite",
        help="milvus-server: the real Milvus 2.3.5 of scripts/with-milvus-netns (run the command under it).",
    )
    ap.add_argument(
        "--repo", type=Path, default=Path("var/bench/models"), help="Model repository (MiniLM exported if missing)."
    )
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/search[-milvus-server].json")
    ap.add_argument("--contended", action="store_true", help="Teammates' work shares the CPU during this run.")
    args = ap.parse_args()
    server_uri = None
    if args.store == "milvus-server":
        from tests.fixtures.stores import REAL_MILVUS_ENV

        server_uri = os.environ.get(REAL_MILVUS_ENV)
        if not server_uri:
            ap.error(f"--store milvus-server runs under scripts/with-milvus-netns ({REAL_MILVUS_ENV} is not set)")
    args.out = args.out or Path(
        "bench/results/search-milvus-server.json" if server_uri else "bench/results/search.json"
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_before = os.getloadavg()[0]

    repo = build_repo(args.repo)
    results: dict[str, Any] = {"service": {}, "ceiling": {}}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        work = Path(tmp)
        stores = start_stores(stack, work, milvus_uri=server_uri)
        queries, load_s = load_corpus(repo, stores.milvus_uri, stores.mongo_uri, args.docs, args.index)
        log.info("corpus of %d documents loaded in %.1fs", args.docs, load_s)
        search_url = start_search_service(stack, repo, work, stores, bench_config())
        ceiling = Ceiling(repo, stores.milvus_uri, stores.mongo_uri)
        for c in CONCURRENCY:
            log.info("concurrency %d: ceiling", c)
            results["ceiling"][str(c)] = ceiling.run(queries, c, args.seconds)
            log.info("concurrency %d: service", c)
            results["service"][str(c)] = asyncio.run(service_run(search_url, queries, c, args.seconds))
            log.info("c=%d service %s | ceiling %s", c, results["service"][str(c)], results["ceiling"][str(c)])
    c1s, c1c = results["service"]["1"], results["ceiling"]["1"]
    added = ratio(c1s["p50_ms"], c1c["p50_ms"])
    qps32 = ratio(results["service"]["32"]["qps"], results["ceiling"]["32"]["qps"])
    ratios = {"c1_p50_overhead": round(added - 1, 3) if added else None, "c32_qps_vs_ceiling": qps32}
    out = {
        "benchmark": "search",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "ratios": ratios,
        "targets": {"c1_p50_overhead": "<= 0.25", "c32_qps_vs_ceiling": ">= 0.8"},
        "targets_met": {
            "c1_p50_overhead": ratios["c1_p50_overhead"] is not None and ratios["c1_p50_overhead"] <= 0.25,
            "c32_qps_vs_ceiling": qps32 is not None and qps32 >= 0.8,
        },
        "setup": {
            "store": "Milvus 2.3.5 standalone (real server, private network namespace)"
            if server_uri
            else "milvus-lite server",
            "docs": args.docs,
            "index": args.index,
            "top_k": TOP_K,
            "max_reservation": MAX_RESERVATION,
            "seconds_per_point": args.seconds,
            "model": "all-MiniLM-L6-v2 (ONNX, fp32)",
            "corpus_load_s": round(load_s, 1),
            "ranker": "dummy (pinned)",
            "query_cache": "off (search.query_cache_size=0)",
            "queries": "the 503 FAQ questions, cycled",
        },
        "results": results,
        # A ratio from a handful of requests on a busy CPU says little; say so in the file itself.
        "few_samples": min(v["requests"] for side in results.values() for v in side.values()) < 30,
        "machine": machine_info(contended=args.contended or load_before > 1.0),
        "load_average_before": round(load_before, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("ratios", "targets_met")}, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
