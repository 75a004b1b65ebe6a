"""Chunking benchmark: what long documents cost to ingest chunked, and what collapsing chunks to documents costs a
search.

Corpus: the MED abstracts (an external judged collection, ../shared/data/ir/med; 1033 documents, a third longer
than MiniLM's window), through the product's own ingest (`mmsearch ingest text` as a function call: preprocess,
chunk, encode with the real MiniLM on ONNX Runtime, Milvus Lite embedded; MongoDB skipped, its work is the same
documents on both sides):
- whole: one vector per document (`--chunk-tokens 0`; the model reads the first 254 word pieces of each);
- chunked: passages of 128 word pieces, overlap 16 (every word piece of every document encoded).
Reported per side: documents/s and encoded tokens/s (word pieces the model read, padding not counted), and the
cost per encoded token chunked / whole (target <= 1.15: chunking must not make encoding dearer per token, only
give it more tokens to read).

Search, on the chunked collection, through the search service's Milvus adapter, concurrency 1, the MED queries'
own vectors, the same depth (10): a plain search of 10 chunks against a search of 10 documents as the service makes
it (over-fetch and collapse, with one chunk a document and with three, the default of passages shown), and Milvus
Lite's own grouping search for the record; sides alternating by round. Target: p50 with collapse <= 1.3 x
without. Writes bench/results/chunking.json.

    .venv/bin/python -m bench.bench_chunking --rounds 3
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_search import build_repo, ratio
from bench.machine import machine_info

log = logging.getLogger("bench.chunking")
MED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ir" / "med"
TEMPLATE = "{title}. {text}"
SIDES = {"whole": 0, "chunked": 128}
SEARCHES = ("chunks", "documents_1", "documents_3", "lite_grouping")


def _ingest(repo: Any, work: Path, milvus_uri: str, corpus: str, tokens: int) -> dict[str, Any]:
    from mmsearch.chunking import PASSAGE_FIELD
    from mmsearch.settings import MilvusSettings, MongoSettings
    from offline.ingest.steps import IngestOptions, run_ingest
    from offline.preprocess.chunks import Chunker
    from offline.preprocess.documents import DocumentFormat, DocumentOptions, preprocess_documents

    chunker = Chunker.for_model(repo, "minilm", TEMPLATE, tokens=tokens, overlap=None)
    opts = DocumentOptions.make(DocumentFormat.BEIR, template=TEMPLATE)
    started = time.perf_counter()
    run_ingest(
        IngestOptions(
            corpus=corpus,
            model_key="minilm",
            field=PASSAGE_FIELD,
            repo=repo,
            work_dir=work,
            milvus=MilvusSettings(uri=milvus_uri),
            mongo=MongoSettings(),
            lexical_fields=[PASSAGE_FIELD],
            skip_mongo=True,
            chunker=chunker,
        ),
        lambda out: preprocess_documents(MED / "corpus.jsonl", out, opts),
    )
    seconds = time.perf_counter() - started
    passages = [json.loads(line)["passage"] for line in (work / "corpus.jsonl").read_text().splitlines()]
    # What the model read: every word piece of a chunk; of a whole document, its window at most.
    encoded = sum(
        min(len(chunker.tokenizer.encode(p, add_special_tokens=False).ids), chunker.model_window) for p in passages
    )
    documents = sum(1 for _ in (work / "documents.jsonl").open())
    return {
        "seconds": round(seconds, 2),
        "documents": documents,
        "rows": len(passages),
        "encoded_tokens": encoded,
        "documents_per_s": round(documents / seconds, 2),
        "tokens_per_s": round(encoded / seconds, 1),
        "ms_per_1k_tokens": round(seconds / encoded * 1e6, 2),
    }


def _query_vectors(repo: Any) -> list[tuple[float, ...]]:
    from mmsearch.runtime.encoder import OnnxEncoder, l2_normalize
    from mmsearch.runtime.text import TextPreprocessor

    texts = [json.loads(line)["text"] for line in (MED / "queries.jsonl").read_text().splitlines()]
    prep = TextPreprocessor.from_repo(repo, "minilm")
    encoder = OnnxEncoder.from_repo(repo, "minilm")
    vectors = l2_normalize(encoder.run(dict(prep.prep(texts, role="query").tensors)))
    return [tuple(float(x) for x in v) for v in np.asarray(vectors)]


async def _search_round(store: Any, collection: str, vectors: list[tuple[float, ...]], side: str) -> list[float]:
    """chunks: 10 chunk hits; documents_N: 10 documents with up to N chunks each, as the service searches a document
    corpus (over-fetch and collapse); lite_grouping: Milvus Lite's own grouping search (group_size 1) through the
    adapter's client, for the record of why the service does not use it."""
    from services.search.ports import AnnSearch, Grouping
    from services.search.stages.chunks import collapse

    grouping = {"documents_1": Grouping(per_document=1), "documents_3": Grouping(per_document=3)}.get(side)
    times = []
    for vector in vectors:
        req = AnnSearch(
            collection=collection,
            vector_field="passage_emb",
            vector=vector,
            limit=10,
            search_params={"ef": 128},
            metric_type="IP",
            expression="",
            with_vectors=False,
            grouping=grouping,
        )
        started = time.perf_counter()
        if side == "lite_grouping":
            await store.arun(  # the asyncio client, as store.search uses
                lambda client, v=vector: client.search(
                    collection,
                    data=[list(v)],
                    anns_field="passage_emb",
                    limit=10,
                    output_fields=["doc_id", "chunk", "passage"],
                    search_params={"metric_type": "IP", "params": {"ef": 128}},
                    group_by_field="doc_id",
                    group_size=1,
                )
            )
        else:
            hits = await store.search(req)
            if grouping is not None:
                collapse("ann_matcher", hits, summed=1, limit=10)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="Search rounds, sides alternating; medians are reported.")
    ap.add_argument("--repeat", type=int, default=10, help="Passes over the 30 MED queries per side and round.")
    ap.add_argument("--repo", type=Path, default=Path("var/bench/models"), help="Model repository (MiniLM if missing).")
    ap.add_argument("--out", type=Path, default=Path("bench/results/chunking.json"))
    ap.add_argument("--contended", action="store_true", help="Other work shares the CPU during this run.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_before = os.getloadavg()[0]
    if load_before > 1.0 and not args.contended:
        raise SystemExit(f"load average {load_before:.2f}: the machine is busy; wait, or pass --contended")
    from mmsearch.settings import MilvusSettings, Settings
    from services.search.adapters import MilvusVectorStore

    repo = build_repo(args.repo)
    with tempfile.TemporaryDirectory(prefix="bench-chunking-") as tmp:
        work = Path(tmp)
        milvus_uri = str(work / "milvus.db")
        ingest = {side: _ingest(repo, work / side, milvus_uri, f"med_{side}", tokens) for side, tokens in SIDES.items()}
        vectors = _query_vectors(repo) * args.repeat
        store = MilvusVectorStore(Settings(milvus=MilvusSettings(uri=milvus_uri)))
        times: dict[str, list[float]] = {s: [] for s in SEARCHES}
        per_round: dict[str, list[float]] = {s: [] for s in SEARCHES}

        async def measure() -> None:
            try:
                await _search_round(store, "med_chunked", vectors[:30], "chunks")  # warm: load, first searches
                for r in range(args.rounds):
                    order = SEARCHES if r % 2 == 0 else tuple(reversed(SEARCHES))
                    for side in order:
                        t = await _search_round(store, "med_chunked", vectors, side)
                        times[side] += t
                        per_round[side].append(round(statistics.median(t), 3))
            finally:
                await store.aclose()

        asyncio.run(measure())
    p50 = {s: round(statistics.median(t), 3) for s, t in times.items()}
    p99 = {s: round(float(np.percentile(t, 99)), 3) for s, t in times.items()}
    cost = ratio(ingest["chunked"]["ms_per_1k_tokens"], ingest["whole"]["ms_per_1k_tokens"])
    one = ratio(p50["documents_1"], p50["chunks"])
    three = ratio(p50["documents_3"], p50["chunks"])
    lite = ratio(p50["lite_grouping"], p50["chunks"])
    out = {
        "benchmark": "chunking",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "corpus": "MED (1033 abstracts), template '{title}. {text}', MiniLM (window 254 word pieces)",
        "ingest": ingest,
        "search_ms": {"p50": p50, "p99": p99, "p50_per_round": per_round, "queries_per_side": len(times["chunks"])},
        "ratios": {
            "cost_per_encoded_token_chunked_vs_whole": cost,
            "search_p50_documents_1_vs_chunks": one,
            "search_p50_documents_3_vs_chunks": three,
            "search_p50_lite_grouping_vs_chunks": lite,
        },
        "targets": {"cost_per_encoded_token": 1.15, "search_p50_collapse": 1.3},
        "target_met": bool(
            cost is not None and cost <= 1.15 and one is not None and one <= 1.3 and three is not None and three <= 1.3
        ),
        "machine": machine_info(contended=args.contended or load_before > 1.0),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(
        json.dumps({"ingest": ingest, "p50": p50, "ratios": out["ratios"], "target_met": out["target_met"]}, indent=2)
    )


if __name__ == "__main__":
    main()
