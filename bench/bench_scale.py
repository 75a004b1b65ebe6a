"""Scale curve: how search latency, throughput, memory, index build time and disk grow from 10k to 1M documents.

For each corpus size (default 10k, 100k, 1M) and each store (Milvus Lite's server, and the real Milvus 2.3.5 server
when run under scripts/with-milvus-netns):
- corpus: real all-MiniLM-L6-v2 embeddings of the 3,751 distinct FAQ and chatterbot texts, repeated with Gaussian
  noise up to the size (as bench_index does: the clustered geometry of text embeddings), each row's text that of
  its embedding plus a row tag (so BM25 has real words and every row's own text still finds it);
- load through the product's push path (offline.push: `push mongo` into a fresh SecantusDB, `push milvus` with
  HNSW, and BM25 over the question where the store has it), timed: upsert, then flush + index + load + verify
  (the index build), and the disk each store then uses;
- search through the search service (HTTP -> tokenizer -> model server -> Milvus -> MongoDB, the dummy ranker
  pinned) and directly (the same steps as library calls in one process: tokenize + ONNX Runtime + pymilvus +
  pymongo; bench_search's ceiling): p50/p99 at concurrency 1 and QPS at 32; the service over the direct side is
  the service's own cost; hybrid (vector + BM25, rrf) the same at concurrency 1 where the store has BM25;
- resident memory of every process (search service, model server, tokenizer, Milvus, MongoDB; a process's
  children counted with it) idle after the load and its peak under the concurrency-32 load.
Growth exponents (the slope of log y over log size, least squares over the sizes measured) and an SVG picture
(latency and memory against corpus size, log scales) are written beside the JSON.

The machine must be quiet: the bench refuses to start when the 1-minute load average is over 1.0 unless told
`--contended` (the JSON then says so). Every collection it made is dropped (the real server's) or its store stopped
and deleted (Milvus Lite's, SecantusDB's) when a size ends, failed or not; a size that fails is reported in the JSON
with its error and the next one runs.

    .venv/bin/python -m bench.bench_scale [--sizes 10000 100000 1000000] [--seconds 10]
    scripts/with-milvus-netns .venv/bin/python -m bench.bench_scale --stores lite server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_index import real_texts
from bench.bench_search import (
    MAX_RESERVATION,
    MINILM,
    SEARCH_PARAMS,
    Ceiling,
    ModelServices,
    build_repo,
    ratio,
    service_run,
    start_model_services,
    start_search_process,
    start_stores,
)
from bench.machine import machine_info
from bench.svg_chart import Panel, render

log = logging.getLogger("bench.scale")
CORPUS = "bench_scale_qa"
STORES = ("lite", "server")
NOISE = 0.02
SHARD_ROWS = 100_000
RRF_K = 60
# The dummy ranker pinned: every request does the same work; the hybrid side adds the BM25 matcher (rrf).
VECTOR_PINS = {"match.qa": "match.qa.base", "rank.qa": "rank.qa.dummy"}
HYBRID_PINS = {"match.qa": "match.qa.hybrid", "rank.qa": "rank.qa.dummy"}
SERVER_PID_ENV = "MMSEARCH_TEST_MILVUS_PID"
SERVER_DATA_ENV = "MMSEARCH_TEST_MILVUS_DATA"


# ---- the corpus ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseTexts:
    texts: list[str]
    vectors: np.ndarray


def base_texts(repo: Any) -> BaseTexts:
    """The 3,751 distinct FAQ and chatterbot texts and their real MiniLM embeddings (bench_index's vectors)."""
    from mmsearch.runtime.encoder import OnnxEncoder

    texts = real_texts()
    encoder = OnnxEncoder.from_repo(repo, MINILM, providers=["CPUExecutionProvider"])
    return BaseTexts(texts, encoder.encode_texts(texts, batch_size=64))


def write_corpus(base: BaseTexts, n: int, folder: Path, repo: Any) -> tuple[Path, Path]:
    """The corpus jsonl and its vectors folder (the files `mmsearch index` writes), `n` rows, shard by shard."""
    from offline.encode.manifest import write_manifest
    from offline.encode.pipeline import fresh_manifest
    from offline.encode.shards import write_shard

    rng = np.random.default_rng(n)
    corpus, vectors = folder / "corpus.jsonl", folder / "vectors"
    vectors.mkdir(parents=True)
    picks = rng.integers(0, len(base.texts), size=n)
    with corpus.open("w", encoding="utf-8") as f:
        for i, pick in enumerate(picks.tolist(), start=1):
            row = {
                "id": i,
                "question": f"{base.texts[pick]} row{i}",
                "answer": f"answer {i}",
                "category": [f"c{pick % 16}"],
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    manifest = fresh_manifest(corpus, repo, repo.manifest(MINILM), "question", total=n, shard_size=SHARD_ROWS)
    for index, first in enumerate(range(0, n, SHARD_ROWS)):
        rows = picks[first : first + SHARD_ROWS]
        vecs = base.vectors[rows] + rng.normal(scale=NOISE, size=(len(rows), base.vectors.shape[1]))
        vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
        ids = np.arange(first + 1, first + len(rows) + 1, dtype=np.int64)
        manifest.add_shard(write_shard(vectors, index, first, ids, vecs))
    write_manifest(vectors, manifest)
    return corpus, vectors


# ---- processes: memory and disk --------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_rss_mb(pid: int, tree: dict[int, list[int]] | None = None) -> float | None:
    """Resident memory of a process and its descendants, MB; None when it is gone."""
    tree = _children() if tree is None else tree
    total, seen, todo = 0, False, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    seen = True
        except OSError:
            continue
        todo += tree.get(p, [])
    return round(total / 1024, 1) if seen else None


def rss_all(pids: dict[str, int]) -> dict[str, float | None]:
    tree = _children()
    return {name: tree_rss_mb(pid, tree) for name, pid in pids.items()}


@contextmanager
def peak_rss(pids: dict[str, int], every: float = 0.25) -> Iterator[dict[str, float]]:
    """Sample every process's memory while the block runs; the dict holds each one's peak once it ends."""
    peaks: dict[str, float] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for name, mb in rss_all(pids).items():
                if mb is not None:
                    peaks[name] = max(peaks.get(name, 0.0), mb)
            stop.wait(every)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peaks
    finally:
        stop.set()
        t.join()


def disk_mb(path: Path) -> float:
    """Disk a folder takes (allocated blocks, as du counts them), MB."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return round(total / 1024**2, 1)


# ---- the direct side -----------------------------------------------------------------------------------------


class HybridDirect(Ceiling):
    """The hybrid match as library calls: the vector and the BM25 search side by side, fused by rrf (k 60)."""

    def __init__(self, repo: Any, milvus_uri: str, mongo_uri: str, corpus: str) -> None:
        super().__init__(repo, milvus_uri, mongo_uri, corpus)
        self.pool = ThreadPoolExecutor(max_workers=2)

    def match(self, query: str, vec: np.ndarray) -> list[Any]:
        def bm25() -> list[Any]:
            return list(
                self.milvus.search(
                    self.corpus,
                    data=[query],
                    anns_field="question_bm25",
                    limit=MAX_RESERVATION,
                    search_params={"metric_type": "BM25"},
                    output_fields=["id"],
                )[0]
            )

        lexical = self.pool.submit(bm25)
        dense = super().match(query, vec)
        scores: dict[Any, float] = {}
        for hits in (dense, lexical.result()):
            for rank, h in enumerate(hits):
                scores[h["id"]] = scores.get(h["id"], 0.0) + 1.0 / (RRF_K + rank + 1)
        return [{"id": i, "distance": s} for i, s in sorted(scores.items(), key=lambda kv: -kv[1])[:MAX_RESERVATION]]

    def close(self) -> None:
        self.pool.shutdown()
        super().close()


# ---- one size on one store ------------------------------------------------------------------------------------


def scale_config(*, hybrid: bool) -> str:
    """bench_search's config (the demo's QA scene, BM25 experiments left out) over the bench corpus, plus the rrf
    hybrid experiment where the store has BM25."""
    import yaml

    from tests.fixtures.search import AB_CONFIG

    doc = yaml.safe_load(AB_CONFIG.read_text(encoding="utf-8"))
    scene = doc["scene-config"]["scenes"][0]
    scene["extraSceneArgs"]["maxReservation"] = MAX_RESERVATION
    doc["scene-config"]["scenes"] = [scene]

    def wanted(e: dict[str, Any]) -> bool:
        if not e["layerName"].endswith(".qa"):
            return False
        lexical = "BM25Matcher" in (e.get("extraExperimentArgs") or {}).get("matcherNames", [])
        return not lexical or (hybrid and e["experimentName"] == HYBRID_PINS["match.qa"])

    keep = [e for e in doc["scene-config"]["experiments"] if wanted(e)]
    for e in keep:
        if e["experimentName"] == HYBRID_PINS["match.qa"]:
            # As HybridDirect fuses, whatever the demo config says for its live experiment.
            e["extraExperimentArgs"]["fusion"] = {"method": "rrf", "k": RRF_K}
    names = {e["experimentName"] for e in keep}
    for layer in scene["layers"]:
        layer["normalLayerArgs"] = [a for a in layer["normalLayerArgs"] if a["experimentName"] in names]
    doc["scene-config"]["experiments"] = keep
    return yaml.safe_dump(doc, sort_keys=False).replace("faq_qa", CORPUS)


def measure_point(
    url: str,
    direct: Ceiling,
    queries: list[str],
    *,
    c: int,
    seconds: float,
    pins: dict[str, str],
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Both sides at one concurrency; with `pids`, each side's CPU milliseconds per query in every process (the
    bench's own process is the direct side's work and the service side's load generator)."""
    watched = {**(pids or {}), BENCH: os.getpid()}
    before = cpu_seconds(watched)
    side_direct = direct.run(queries, c, seconds)
    between = cpu_seconds(watched)
    side_service = asyncio.run(service_run(url, queries, c, seconds, pins))
    after = cpu_seconds(watched)
    if pids is not None:
        side_direct["cpu_ms_per_query"] = _per_query(before, between, side_direct["requests"])
        side_service["cpu_ms_per_query"] = _per_query(between, after, side_service["requests"])
    return {"service": side_service, "direct": side_direct}


BENCH = "bench"  # this process alone: the servers it started are its children, counted under their own names


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds so far of each process and its descendants (of the bench's own process, itself)."""
    tick = os.sysconf("SC_CLK_TCK")
    tree = _children()
    out: dict[str, float] = {}
    for name, pid in pids.items():
        total, todo = 0, [pid]
        while todo:
            p = todo.pop()
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
            if name != BENCH:
                todo += tree.get(p, [])
        out[name] = total / tick
    return out


def _per_query(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    per = {k: round(1000 * (after[k] - before[k]) / max(1, requests), 2) for k in after}
    per["total"] = round(sum(per.values()), 2)
    return per


def push_store(uri: str, corpus: Path, vectors: Path, *, bm25: bool) -> dict[str, float]:
    from mmsearch.settings import MilvusSettings
    from offline.push.milvus_push import MilvusPushOptions, push_milvus

    opts = MilvusPushOptions(
        vectors=vectors,
        corpus=CORPUS,
        filter_fields=["category"],
        input_path=corpus,
        lexical_fields=["question"] if bm25 else [],
    )
    summary = push_milvus(MilvusSettings(uri=uri, timeout_seconds=3600), opts)
    log.info("%s", summary.text())
    return {
        "push_s": round(summary.seconds, 1),
        "upsert_s": round(summary.upsert_seconds, 1),
        # flush + index + load + the push's own checks (count, a vector and a BM25 search)
        "index_build_s": round(summary.seconds - summary.upsert_seconds, 1),
    }


def drop_corpus(uri: str) -> None:
    """Drop the bench's alias and every physical collection of it (the real server outlives the bench)."""
    from mmsearch import stores
    from mmsearch.collection_meta import physical_name
    from mmsearch.settings import MilvusSettings

    client = stores.milvus_client(MilvusSettings(uri=uri))
    try:
        if CORPUS in client.list_aliases().get("aliases", []):
            client.drop_alias(CORPUS)
        prefix = physical_name(CORPUS).rsplit("_", 1)[0]
        for name in client.list_collections():
            if name.startswith(prefix):
                client.drop_collection(name)
                log.info("dropped %s", name)
    finally:
        client.close()


@dataclass(frozen=True)
class Run:
    """What every size of one bench run shares."""

    args: argparse.Namespace
    repo: Any
    services: ModelServices
    base: BaseTexts


def one_store(
    run: Run, stores: Any, store: str, *, files: tuple[Path, Path], queries: list[str], work: Path
) -> dict[str, Any]:
    args, repo, services = run.args, run.repo, run.services
    lite = store == "lite"
    uri = stores.milvus_uri if lite else os.environ[_server_env()]
    bm25 = lite  # the 2.3.5 server predates BM25
    server_data = os.environ.get(SERVER_DATA_ENV)
    data_dir = stores.milvus_dir if lite else Path(server_data) if server_data else None
    disk_before = disk_mb(data_dir) if data_dir else 0.0
    out: dict[str, Any] = {"load": push_store(uri, *files, bm25=bm25)}
    out["disk_mb"] = {"milvus": round(disk_mb(data_dir) - disk_before, 1) if data_dir else None}
    services.consul.put(_consul_key(), scale_config(hybrid=bm25))
    with ExitStack() as stack:
        stores_view = argparse.Namespace(milvus_uri=uri, mongo_uri=stores.mongo_uri)
        search = start_search_process(stack, repo, work, stores_view, services)
        pids = {**services.pids, "search": search.proc.pid, "mongodb": stores.procs["mongo"].pid}
        milvus_pid = stores.procs["milvus"].pid if lite else int(os.environ.get(SERVER_PID_ENV, "0"))
        if milvus_pid:
            pids["milvus"] = milvus_pid
        url = str(search.url)
        direct = Ceiling(repo, uri, stores.mongo_uri, CORPUS)
        stack.callback(direct.close)
        asyncio.run(service_run(url, queries, 1, 2.0, VECTOR_PINS))  # warm both sides' caches alike
        direct.run(queries, 1, 2.0)
        out["memory_mb"] = {"idle": rss_all(pids)}
        out["vector"] = {
            "c1": measure_point(url, direct, queries, c=1, seconds=args.seconds, pins=VECTOR_PINS, pids=pids)
        }
        if bm25:
            hybrid = HybridDirect(repo, uri, stores.mongo_uri, CORPUS)
            stack.callback(hybrid.close)
            out["hybrid"] = {"c1": measure_point(url, hybrid, queries, c=1, seconds=args.seconds, pins=HYBRID_PINS)}
        with peak_rss(pids) as peaks:
            out["vector"]["c32"] = measure_point(
                url, direct, queries, c=32, seconds=args.seconds, pins=VECTOR_PINS, pids=pids
            )
        out["memory_mb"]["under_load_peak"] = dict(peaks)
    v1, v32 = out["vector"]["c1"], out["vector"]["c32"]
    out["ratios"] = {
        "c1_p50_overhead": _overhead(v1["service"]["p50_ms"], v1["direct"]["p50_ms"]),
        "c32_qps_vs_direct": ratio(v32["service"]["qps"], v32["direct"]["qps"]),
    }
    if bm25:
        h1 = out["hybrid"]["c1"]
        out["ratios"]["hybrid_c1_p50_overhead"] = _overhead(h1["service"]["p50_ms"], h1["direct"]["p50_ms"])
    errors = sum(p["service"]["errors"] for p in (v1, v32, *([out["hybrid"]["c1"]] if bm25 else [])))
    if errors:
        out["service_errors"] = errors
    return out


def _overhead(service: float, direct: float) -> float | None:
    r = ratio(service, direct)
    return round(r - 1, 3) if r is not None else None


def _server_env() -> str:
    from tests.fixtures.stores import REAL_MILVUS_ENV

    return REAL_MILVUS_ENV


def _consul_key() -> str:
    from tests.fixtures.search import CONSUL_KEY

    return str(CONSUL_KEY)


def one_size(run: Run, n: int, work: Path) -> dict[str, Any]:
    """Every store at one size; a store that fails is reported and the others still run."""
    args, base = run.args, run.base
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        folder = work / f"size-{n}"
        t0 = time.perf_counter()
        files = write_corpus(base, n, folder, run.repo)
        out["corpus_files_s"] = round(time.perf_counter() - t0, 1)
        # A fresh SecantusDB (and Milvus Lite server) per size: memory and disk are this size's alone.
        lite_wanted = "lite" in args.stores
        stores = start_stores(stack, folder, milvus_uri=None if lite_wanted else os.environ[_server_env()])
        out["mongo"] = push_documents(stores.mongo_uri, files[0])
        out["mongo"]["disk_mb"] = disk_mb(stores.mongo_dir)
        queries = [base.texts[i] for i in np.random.default_rng(7).integers(0, len(base.texts), size=500)]
        for store in args.stores:
            log.info("size %d, store %s", n, store)
            try:
                out[store] = one_store(run, stores, store, files=files, queries=queries, work=folder)
            except Exception as exc:  # a failed store is a result too: say it, go on
                log.exception("size %d on %s failed", n, store)
                out[store] = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                if store == "server":
                    drop_corpus(os.environ[_server_env()])
            log.info("size %d, store %s: %s", n, store, json.dumps(_brief(out[store])))
    shutil.rmtree(folder, ignore_errors=True)  # the stores are stopped: their data and the corpus files go
    return out


def push_documents(mongo_uri: str, corpus: Path) -> dict[str, Any]:
    from mmsearch.settings import MongoSettings
    from offline.push.mongo_push import push_mongo

    summary = push_mongo(MongoSettings(uri=mongo_uri), corpus, CORPUS, progress=True)
    log.info("%s", summary.text())
    return {"push_s": round(summary.seconds, 1)}


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    if "error" in result:
        return result
    return {"load": result["load"], "ratios": result["ratios"], "memory_mb": result["memory_mb"]}


# ---- growth and the picture -----------------------------------------------------------------------------------


def exponent(points: list[tuple[float, float]]) -> float | None:
    """Slope of log y over log x (least squares); None for fewer than two points."""
    good = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y and y > 0]
    if len(good) < 2:
        return None
    mx = sum(x for x, _ in good) / len(good)
    my = sum(y for _, y in good) / len(good)
    sxx = sum((x - mx) ** 2 for x, _ in good)
    return round(sum((x - mx) * (y - my) for x, y in good) / sxx, 3) if sxx else None


# What the curve and the exponents follow, per store: name -> path into a store's result.
SERIES: dict[str, tuple[str, ...]] = {
    "service p50 c=1 (ms)": ("vector", "c1", "service", "p50_ms"),
    "direct p50 c=1 (ms)": ("vector", "c1", "direct", "p50_ms"),
    "service p99 c=1 (ms)": ("vector", "c1", "service", "p99_ms"),
    "service QPS c=32": ("vector", "c32", "service", "qps"),
    "direct QPS c=32": ("vector", "c32", "direct", "qps"),
    "hybrid service p50 c=1 (ms)": ("hybrid", "c1", "service", "p50_ms"),
    "Milvus memory under load (MB)": ("memory_mb", "under_load_peak", "milvus"),
    "search service memory under load (MB)": ("memory_mb", "under_load_peak", "search"),
    "Milvus disk (MB)": ("disk_mb", "milvus"),
    "index build (s)": ("load", "index_build_s"),
    "upsert (s)": ("load", "upsert_s"),
}


def _dig(result: Any, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return float(result) if isinstance(result, int | float) else None


def series(results: dict[str, Any], store: str, path: tuple[str, ...]) -> list[tuple[float, float]]:
    pts = []
    for n, by_store in results.items():
        y = _dig(by_store.get(store, {}), path)
        if y is not None:
            pts.append((float(n), y))
    return pts


def growth(results: dict[str, Any], stores: list[str]) -> dict[str, dict[str, float | None]]:
    return {store: {name: exponent(series(results, store, path)) for name, path in SERIES.items()} for store in stores}


def picture(results: dict[str, Any], stores: list[str], when: str) -> str:
    label = {"lite": "Lite", "server": "Milvus 2.3.5"}
    latency = Panel("search latency, c=1", "p50 ms", "documents")
    memory = Panel("resident memory under load", "MB", "documents")
    build = Panel("index build and QPS", "s / QPS", "documents")
    for store in stores:
        latency.series[f"{label[store]} service"] = series(results, store, SERIES["service p50 c=1 (ms)"])
        latency.series[f"{label[store]} direct"] = series(results, store, SERIES["direct p50 c=1 (ms)"])
        memory.series[f"{label[store]} Milvus"] = series(results, store, SERIES["Milvus memory under load (MB)"])
        memory.series[f"{label[store]} search svc"] = series(
            results, store, SERIES["search service memory under load (MB)"]
        )
        build.series[f"{label[store]} build s"] = series(results, store, SERIES["index build (s)"])
        build.series[f"{label[store]} QPS c=32"] = series(results, store, SERIES["service QPS c=32"])
    return render([latency, memory, build], f"mmsearch scale curve ({when}, log-log)")


def settled_load(*, contended: bool, wait: float = 120.0) -> float:
    """The 1-minute load average, after waiting up to `wait` s for it to fall under 1.0: under
    scripts/with-milvus-netns the bench starts right after the server's own start-up, which lifts the average for
    a minute with work that is over."""
    deadline = time.monotonic() + (0.0 if contended else wait)
    load = os.getloadavg()[0]
    while load > 1.0 and time.monotonic() < deadline:
        time.sleep(5)
        load = os.getloadavg()[0]
    return load


# ---- main -----------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="Corpus sizes.")
    ap.add_argument(
        "--stores",
        nargs="+",
        choices=STORES,
        default=["lite"],
        help="lite: a Milvus Lite server per size; server: the real Milvus 2.3.5 (under scripts/with-milvus-netns).",
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="Measuring time per point and side.")
    ap.add_argument(
        "--repo", type=Path, default=Path("var/bench/models"), help="Model repository (MiniLM exported if missing)."
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results/scale.json"), help="The JSON; the SVG beside it.")
    ap.add_argument("--contended", action="store_true", help="Run although the machine is busy (the JSON says so).")
    ap.add_argument(
        "--add-to",
        action="store_true",
        help="Keep --out's earlier results and put this run's sizes and stores in them (a size measured again, "
        "e.g. after a failure); the JSON lists every run.",
    )
    args = ap.parse_args()
    if any(n < 1000 for n in args.sizes):
        ap.error("--sizes: every size must be at least 1000 documents")
    if "server" in args.stores and not os.environ.get(_server_env()):
        ap.error(f"--stores server runs under scripts/with-milvus-netns ({_server_env()} is not set)")
    load_before = settled_load(contended=args.contended)
    if load_before > 1.0 and not args.contended:
        ap.error(
            f"the machine is busy (1-minute load average {load_before:.2f} > 1.0): the figures would measure the "
            "other work. Run it on a quiet machine, or pass --contended to run anyway (the JSON records it)."
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    repo = build_repo(args.repo)
    base = base_texts(repo)
    results: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    if args.add_to and args.out.is_file():
        earlier = json.loads(args.out.read_text(encoding="utf-8"))
        first = {
            "started": earlier["started"],
            "sizes": earlier["setup"]["sizes"],
            "stores": list(earlier["growth_exponents"]),
            "load_before": earlier["load_average_before"],
        }
        results, runs = earlier["results"], earlier.get("runs") or [first]
    if "server" in args.stores:
        drop_corpus(os.environ[_server_env()])  # what a killed earlier run may have left
    started = datetime.now(UTC).isoformat(timespec="seconds")
    runs.append({"started": started, "sizes": sorted(args.sizes), "stores": args.stores, "load_before": load_before})
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        services = start_model_services(stack, repo, work, scale_config(hybrid=False))
        for n in sorted(args.sizes):
            log.info("size %d", n)
            try:
                got = one_size(Run(args, repo, services, base), n, work)
            except Exception as exc:  # e.g. the corpus or the MongoDB load of this size failed
                log.exception("size %d failed", n)
                got = {"error": f"{type(exc).__name__}: {exc}"}
            got["run"] = started
            results[str(n)] = {**results.get(str(n), {}), **got} if "error" not in got else got
            # After every size: a run stopped during a long size keeps what the sizes before it measured.
            write_results(args, results, runs, load_before=load_before, complete=False)
    write_results(args, results, runs, load_before=load_before, complete=True)


def write_results(
    args: argparse.Namespace, results: dict[str, Any], runs: list[dict[str, Any]], *, load_before: float, complete: bool
) -> None:
    started = runs[0]["started"]
    # Every store any run measured (with --add-to, this run's stores may be fewer).
    measured = [s for s in STORES if any(s in by_store for by_store in results.values())]
    when = datetime.now(UTC).isoformat(timespec="seconds")
    out = {
        "benchmark": "scale",
        "started": started,
        "when": when,
        "complete": complete,
        "runs": runs,  # with --add-to, each size says which run measured it last ("run")
        "setup": {
            "sizes": sorted(args.sizes),
            "stores": {
                "lite": "milvus-lite 3.2 server process (Python), fresh per size, BM25 on the question",
                "server": "Milvus 2.3.5 standalone (real server, private network namespace; predates BM25); one "
                "server for every size, each size's collection dropped after it",
            },
            "corpus": f"real MiniLM embeddings of 3,751 FAQ/chatterbot texts + Gaussian noise (sigma {NOISE})",
            "load": "offline.push (push mongo into a fresh SecantusDB per size, push milvus: HNSW M 16 "
            "efConstruction 200)",
            "search": "POST /qa/user/{id}, dummy ranker pinned, maxReservation 50, ef 128; direct = bench_search's "
            "ceiling (tokenize + ORT + pymilvus + pymongo in one process)",
            "seconds_per_point": args.seconds,
            "search_params": SEARCH_PARAMS,
            "query_cache": "off",
        },
        "results": results,
        "growth_exponents": growth(results, measured),
        "machine": machine_info(contended=args.contended or load_before > 1.0),
        "load_average_before": round(load_before, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    svg = args.out.with_suffix(".svg")
    svg.write_text(picture(results, measured, started[:16]), encoding="utf-8")
    if complete:
        print(json.dumps({"growth_exponents": out["growth_exponents"]}, indent=2))
    log.info("wrote %s and %s%s", args.out, svg, "" if complete else " (so far)")


if __name__ == "__main__":
    main()
