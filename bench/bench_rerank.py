"""Rerank benchmark: what a cross-encoder adds to a search, reranking the top 20 and the top 50 of recall.

Setup (bounded, a couple of minutes on 2 cores): the real MiniLM and a cross-encoder of the same architecture as
cross-encoder/ms-marco-MiniLM-L-6-v2 (BertForSequenceClassification, 6 layers, 384 hidden, MiniLM's tokenizer)
with random weights, since no cross-encoder weights can be had offline: the latency depends on the architecture
and the lengths of the pairs, not on the weights. Tokenizer, model server (one ORT thread), milvus-lite server,
SecantusDB, the demo FAQ ingested, the search service with the demo A/B config plus two cross_encoder rank
experiments (rerankTopN 20 and 50, documentField answer, timeoutMs 10000 so that none falls back).

Measured on the same service, alternating sides round by round, at concurrency 1 and 8: p50/p99 and QPS of POST
/qa/user/{id} pinned to match.qa.base and the rank experiment: dummy (no rerank, the baseline), ce20 and ce50, and
ce20_int8: the same cross-encoder exported with --int8 under a second key, served from its int8 graph (`serve model
--variant`). Ratios: rerank p50 over the baseline's. Agreement of int8 with fp32: the served top 10 of both for
the first `--agreement-queries` FAQ questions (overlap of the two top-10 id sets), and the export's own rank gate
figure on the same questions' top-20 candidate answers (MiniLM similarity of the questions, as recall ranks them;
the gate is set to 0 since random weights cannot be expected to pass it). The scoring floor: the same 20 pairs per
question scored in this process by a bare ONNX Runtime session (tokenisation included; fp32 and int8, one and two
threads, the pairs as one padded batch and one by one at their own length), with the service and stores idle: the
least the rank stage can cost on this machine. Writes bench/results/rerank.json.

    .venv/bin/python -m bench.bench_rerank --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench.bench_search import build_repo, median_of, ratio, service_run, start_search_service, start_stores
from bench.machine import machine_info

log = logging.getLogger("bench.rerank")
CONCURRENCY = (1, 8)
CE = "bench-ce"
CE_INT8 = "bench-ce-int8"  # the same weights, served from the int8 graph
SIDES = {"dummy": "rank.qa.dummy", "ce20": "rank.qa.ce20", "ce50": "rank.qa.ce50", "ce20_int8": "rank.qa.ce20i8"}


def bench_config(base: str) -> str:
    doc = yaml.safe_load(base)
    cfg = doc["scene-config"]
    qa = next(s for s in cfg["scenes"] if s["name"] == "questionAnswer")
    rank = next(la for la in qa["layers"] if la["name"] == "rank.qa")
    for name, model, n in (("ce20", CE, 20), ("ce50", CE, 50), ("ce20i8", CE_INT8, 20)):
        rank["normalLayerArgs"].append({"experimentName": f"rank.qa.{name}", "ratio": 0.1})
        args = {"rankerName": "cross_encoder", "modelName": model, "documentField": "answer", "rerankTopN": n}
        cfg["experiments"].append(
            {
                "layerName": "rank.qa",
                "experimentName": f"rank.qa.{name}",
                "extraExperimentArgs": {**args, "timeoutMs": 10_000},
            }
        )
    return str(yaml.safe_dump(doc))


async def top10_agreement(url: str, queries: list[str]) -> dict[str, Any]:
    """The served top 10 of ce20 (fp32) and ce20_int8 for each query: the overlap of their id sets (1 = the same
    ten documents) and whether the order is the same."""
    import httpx

    async def top10(http: httpx.AsyncClient, query: str, side: str) -> list[str]:
        pins = {"match.qa": "match.qa.base", "rank.qa": SIDES[side]}
        body = {"query": query, "topK": 10, "useDebug": True, "specifiedLayerAndExperiment": pins}
        r = await http.post("/qa/user/0", json=body)
        r.raise_for_status()
        reply = r.json()
        if reply["debug"].get("fallbacks"):
            raise RuntimeError(f"the rank stage fell back for {query!r}: {reply['debug']['fallbacks']}")
        return [str(i["id"]) for i in reply["searchItemModels"][0]]

    overlaps, same_order = [], 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for q in queries:
            fp32, int8 = await top10(http, q, "ce20"), await top10(http, q, "ce20_int8")
            overlaps.append(len(set(fp32) & set(int8)) / max(1, len(fp32)))
            same_order += fp32 == int8
    return {
        "queries": len(queries),
        "mean_overlap": round(sum(overlaps) / len(overlaps), 4),
        "min_overlap": min(overlaps),
        "same_order_share": round(same_order / len(queries), 4),
    }


def faq_rank_groups(repo: Any, n: int, candidates: int = 20) -> list[tuple[str, list[str]]]:
    """The first `n` FAQ questions, each with the answers of its `candidates` most similar questions (MiniLM, exact
    cosine): the pairs the rank stage scores when recall returns those questions."""
    import numpy as np

    from bench.bench_search import MINILM
    from mmsearch.runtime.encoder import OnnxEncoder
    from offline.datasets.faq import load_faq

    faq = load_faq()
    encoder = OnnxEncoder.from_repo(repo, MINILM, providers=["CPUExecutionProvider"])
    vectors = encoder.encode_texts([e.q for e in faq], batch_size=64)
    similar = np.argsort(-(vectors[:n] @ vectors.T), axis=1)[:, :candidates]
    return [(faq[i].q, [faq[j].a for j in row]) for i, row in enumerate(similar)]


def scoring_floor(repo: Any, groups: list[tuple[str, list[str]]]) -> dict[str, float]:
    """Median ms to score one question's pairs in-process with a bare session, per precision, threads and layout."""
    import statistics
    import time

    import numpy as np
    import onnxruntime as ort

    from mmsearch.runtime.text import TextPreprocessor

    prep = TextPreprocessor.from_repo(repo, CE)
    graphs = {
        "fp32": repo.path(CE) / repo.manifest(CE).onnx_file,
        "int8": repo.path(CE_INT8) / repo.manifest(CE_INT8).variants["int8"],
    }
    floor: dict[str, float] = {}
    for precision, path in graphs.items():
        for threads in (1, 2):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            for layout in ("padded", "rows"):
                times = []
                for query, docs in groups:
                    t0 = time.perf_counter()
                    batch = prep.prep_pairs([(query, d) for d in docs]).tensors
                    if layout == "padded":
                        session.run(["logits"], {n: batch[n] for n in names})
                    else:
                        for r, length in enumerate(batch["attention_mask"].sum(axis=1)):
                            session.run(["logits"], {n: batch[n][r : r + 1, : int(length)] for n in names})
                    times.append(time.perf_counter() - t0)
                floor[f"{precision}_threads{threads}_{layout}"] = round(1000 * statistics.median(times), 1)
                log.info("floor %s %d thread(s) %s: %.1f ms", precision, threads, layout, floor[list(floor)[-1]])
    tokens = [prep.prep_pairs([(q, d) for d in docs]).tensors["attention_mask"].sum() / len(docs) for q, docs in groups]
    floor["mean_tokens_per_pair"] = round(float(np.mean(tokens)), 1)
    return floor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="Measuring time per side, concurrency and round.")
    ap.add_argument("--rounds", type=int, default=3, help="Rounds, sides alternating; medians are reported.")
    ap.add_argument("--repo", type=Path, default=Path("var/bench/models"), help="Model repository (built if missing).")
    ap.add_argument("--agreement-queries", type=int, default=100, help="FAQ questions for int8 vs fp32 agreement.")
    ap.add_argument("--floor-queries", type=int, default=30, help="FAQ questions the scoring floor is timed on.")
    ap.add_argument("--out", type=Path, default=Path("bench/results/rerank.json"))
    ap.add_argument("--contended", action="store_true", help="Other work shares the CPU during this run.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_before = os.getloadavg()[0]

    from offline.export.cross_encoder import export_cross_encoder
    from offline.export.rank_agreement import RankSample
    from offline.export.variants import VariantRequest
    from tests.fixtures.models import write_classifier
    from tests.fixtures.search import AB_CONFIG, ingest_faq

    repo = build_repo(args.repo)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {side: {str(c): [] for c in CONCURRENCY} for side in SIDES}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-rerank-") as tmp:
        work = Path(tmp)
        source = str(write_classifier(work / "ce-src", labels=1, seed=0))
        groups = faq_rank_groups(repo, args.agreement_queries)
        if CE not in repo:
            export_cross_encoder(source, repo, CE)
        # Exported each run: its manifest records the rank gate's figure on this run's sample.
        int8_manifest = export_cross_encoder(
            source,
            repo,
            CE_INT8,
            force=True,
            variants=VariantRequest(int8=True),
            rank_sample=RankSample(groups, f"{len(groups)} FAQ questions x their 20 candidate answers"),
            min_top10_overlap=0.0,
        )
        gate = next(p.rank for p in int8_manifest.parity if p.variant == "int8")
        os.environ["MMSEARCH_MODEL_SERVER__VARIANTS"] = json.dumps({CE_INT8: "int8"})  # read by the model server
        stores = start_stores(stack, work)
        faq = ingest_faq(repo, stores.milvus_uri, stores.mongo_uri, work / "ingest")
        queries = list(faq.questions.values())
        url = start_search_service(stack, repo, work, stores, bench_config(AB_CONFIG.read_text(encoding="utf-8")))
        for n in range(args.rounds):
            for c in CONCURRENCY:
                # Alternate which side goes first, so drift in the machine's speed does not favour one side.
                for side in SIDES if n % 2 == 0 else reversed(SIDES):
                    pins = {"match.qa": "match.qa.base", "rank.qa": SIDES[side]}
                    got = asyncio.run(service_run(url, queries, c, args.seconds, pins))
                    raw[side][str(c)].append(got)
                    log.info("round %d c=%d %s: p50 %.1f ms, %.1f q/s", n + 1, c, side, got["p50_ms"], got["qps"])
        agreement = asyncio.run(top10_agreement(url, queries[: args.agreement_queries]))
        log.info("int8 vs fp32 top-10 overlap: %s", agreement)
        floor = scoring_floor(repo, groups[: args.floor_queries])
    results = {side: {c: median_of(rounds, "rank.qa") for c, rounds in by_c.items()} for side, by_c in raw.items()}
    ratios = {
        f"c{c}_p50_{side}_over_dummy": ratio(results[side][str(c)]["p50_ms"], results["dummy"][str(c)]["p50_ms"])
        for c in CONCURRENCY
        for side in ("ce20", "ce50", "ce20_int8")
    }
    baseline = results["dummy"]["1"]["p50_ms"]
    best = {p: min(v for k, v in floor.items() if k.startswith(p)) for p in ("fp32", "int8")}
    # The least a top-20 rerank can cost here: the baseline search plus the bare session's best time.
    ratios.update({f"c1_p50_floor_{p}_over_dummy": ratio(baseline + ms, baseline) for p, ms in best.items()})
    out = {
        "benchmark": "rerank",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {
            "corpus": "demo FAQ, 503 questions (HNSW); reranked text: the answers",
            "cross_encoder": "BertForSequenceClassification, MiniLM-L6 architecture (6 layers, 384 hidden), random "
            "weights, MiniLM's tokenizer, max length 512, fp32, CPU",
            "sides": SIDES,
            "match": "match.qa.base (ANN), maxReservation 50",
            "top_k": 10,
            "seconds_per_point": args.seconds,
            "rounds": args.rounds,
        },
        "results": results,
        "ratios": ratios,
        "int8_vs_fp32_top10": agreement,
        "int8_export_rank_gate": gate.model_dump() if gate is not None else None,
        "scoring_floor_ms": floor,
        "machine": machine_info(contended=args.contended or load_before > 1.0),
        "load_average_before": round(load_before, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
