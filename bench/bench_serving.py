"""Serving throughput and latency: clients doing tokenize + predict over real gRPC against the model server, with
and without server-side batching, against in-process baselines measured in the same run.

MiniLM (the real all-MiniLM-L6-v2 export), queries = the Zaragoza FAQ questions, closed-loop clients at
concurrency 1, 8 and 32 (each client: Tokenize one query, Predict it, repeat) for `--seconds` per point:
- server: `mmsearch serve tokenizer` + `mmsearch serve model` (batching on, defaults), real processes;
- (a) the same model server with `--no-batching`;
- (b) sentence-transformers `encode` in-process (PyTorch CPU): batch 1 (one query at a time) and batch 32;
- (c) raw ONNX Runtime session in-process (tokenisation included, sorted by length) at its best batch size:
  the ceiling.
CLIP image tower (real ViT-B/32 config, random weights: speed does not depend on weight values): clients at
concurrency 8 doing PreprocessImages + Predict on one JPEG each, against a raw session at its best batch size
(preprocessing included).

Throughput is queries (images) per second; latencies are per client call (tokenize + predict). The load
generator runs in this process on the same cores as the servers, so served figures include its cost.

    .venv/bin/python -m bench.bench_serving [--seconds 4] [--contended] [--repo var/bench/model-repo]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench.machine import machine_info

log = logging.getLogger("bench.serving")

MINILM = "minilm"
CLIP = "clip-b32"
CLIP_IMAGE = f"{CLIP}-image"
CLIP_CONFIG_DIR = Path(os.environ.get("MMSEARCH_CLIP_CONFIG_DIR", "/work/shared/data/clip-vit-base-patch32"))
CONCURRENCY = (1, 8, 32)


# --- inputs -------------------------------------------------------------------------------------------------


def build_repo(root: Path) -> Any:
    """The model repository: real MiniLM and a config-built ViT-B/32 CLIP; reused when already there."""
    from mmsearch.model_repo import ModelRepository

    repo = ModelRepository(root)
    if MINILM not in repo:
        from offline.export.sbert import export_sbert
        from tests.fixtures.models import minilm_source

        log.info("exporting MiniLM into %s", root)
        export_sbert(str(minilm_source()), repo, MINILM)
    if CLIP_IMAGE not in repo:
        import tempfile

        from transformers import CLIPConfig

        from offline.export.clip import export_clip
        from tests.fixtures.models import write_clip_folder

        log.info("exporting CLIP ViT-B/32 (random weights) into %s", root)
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_clip_folder(Path(tmp) / "clip", CLIPConfig.from_pretrained(str(CLIP_CONFIG_DIR)))
            export_clip(str(folder), repo, CLIP)
    return repo


def queries() -> list[str]:
    from offline.datasets.faq import load_faq

    return [entry.q for entry in load_faq()]


def photos() -> list[bytes]:
    from PIL import Image
    from skimage import data

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"):
        buf = io.BytesIO()
        Image.fromarray(getattr(data, name)()).convert("RGB").save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# --- measurement --------------------------------------------------------------------------------------------


def summary(latencies: list[float], elapsed: float) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    return {
        "requests": len(ms),
        "throughput_per_s": round(len(ms) / elapsed, 1),
        "p50_ms": round(ms[len(ms) // 2], 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


async def closed_loop(call: Callable[[int], Awaitable[Any]], concurrency: int, seconds: float) -> dict[str, float]:
    """`concurrency` clients calling back to back; a short warm-up, then `seconds` measured."""
    latencies: list[float] = []
    counter = iter(range(10**9))
    start = time.perf_counter()
    warm_until, stop_at = start + 0.5, start + 0.5 + seconds

    async def client() -> None:
        while (now := time.perf_counter()) < stop_at:
            await call(next(counter))
            if now >= warm_until:
                latencies.append(time.perf_counter() - now)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return summary(latencies, time.perf_counter() - warm_until)


def in_process(fn: Callable[[], Any], items: int, seconds: float) -> dict[str, Any]:
    """Repeat `fn` (one batch of `items`) for `seconds`; per-batch latency, items per second."""
    fn()
    latencies: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    out = summary(latencies, elapsed)
    out["throughput_per_s"] = round(len(latencies) * items / elapsed, 1)
    out["batch_size"] = items
    return out


def batch_stats(service: Any, model: str) -> dict[str, float]:
    from tests.fixtures.grpc_services import metric_value, scrape_metrics

    text = scrape_metrics(service)
    calls = metric_value(text, "mmsearch_model_server_requests_per_batch_count", model=model)
    requests = metric_value(text, "mmsearch_model_server_requests_per_batch_sum", model=model)
    return {"ort_calls": calls, "requests": requests}


def served_texts(
    tokenizer: str, server: Any, texts: list[str], seconds: float, levels: tuple[int, ...]
) -> dict[str, Any]:
    from services.serving.client import ModelServerClient, embed_texts
    from services.tokenizer.client import TokenizerClient

    results: dict[str, Any] = {}
    for concurrency in levels:
        before = batch_stats(server, MINILM)

        async def go(c: int = concurrency) -> dict[str, float]:
            async with TokenizerClient(tokenizer) as tok, ModelServerClient(server.target) as models:
                return await closed_loop(
                    lambda i: embed_texts(tok, models, MINILM, [texts[i % len(texts)]], timeout=30), c, seconds
                )

        point = asyncio.run(go())
        after = batch_stats(server, MINILM)
        calls = after["ort_calls"] - before["ort_calls"]
        if calls:
            point["mean_requests_per_ort_call"] = round((after["requests"] - before["requests"]) / calls, 2)
        results[f"concurrency_{concurrency}"] = point
        log.info("  concurrency %d: %s", concurrency, point)
    return results


def served_images(tokenizer: str, server: Any, images: list[bytes], seconds: float, concurrency: int) -> dict[str, Any]:
    from services.serving.client import ModelServerClient, embed_images
    from services.tokenizer.client import TokenizerClient

    before = batch_stats(server, CLIP_IMAGE)

    async def go() -> dict[str, float]:
        async with TokenizerClient(tokenizer) as tok, ModelServerClient(server.target) as models:
            return await closed_loop(
                lambda i: embed_images(tok, models, CLIP_IMAGE, [images[i % len(images)]], timeout=60),
                concurrency,
                seconds,
            )

    point = asyncio.run(go())
    after = batch_stats(server, CLIP_IMAGE)
    calls = after["ort_calls"] - before["ort_calls"]
    if calls:
        point["mean_requests_per_ort_call"] = round((after["requests"] - before["requests"]) / calls, 2)
    return point


def sentence_transformers_baseline(texts: list[str], seconds: float) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    from tests.fixtures.models import minilm_source

    torch.set_num_threads(os.cpu_count() or 1)
    model = SentenceTransformer(str(minilm_source()), device="cpu")
    out: dict[str, Any] = {}
    for batch in (1, 32):
        cursor = iter(range(10**9))

        def step(b: int = batch, cursor: Iterator[int] = cursor) -> None:
            i = next(cursor) * b
            batch_texts = [texts[(i + k) % len(texts)] for k in range(b)]
            model.encode(batch_texts, batch_size=b, convert_to_numpy=True, show_progress_bar=False)

        out[f"batch_{batch}"] = in_process(step, batch, seconds)
        log.info("  sentence-transformers batch %d: %s", batch, out[f"batch_{batch}"])
    return out


def raw_encoders(repo: Any, key: str) -> dict[str, Any]:
    """The in-process encoder with ORT's defaults and with spinning off (the server's default): the ceiling is
    the better of the two, so the server is never compared with a handicapped baseline."""
    from mmsearch.runtime.encoder import OnnxEncoder
    from mmsearch.runtime.providers import create_session

    manifest = repo.manifest(key)
    return {
        "ort_defaults": OnnxEncoder(repo, manifest, create_session(repo.onnx_path(key))),
        "no_spinning": OnnxEncoder(
            repo,
            manifest,
            create_session(repo.onnx_path(key), config_entries={"session.intra_op.allow_spinning": "0"}),
        ),
    }


def raw_session_ceiling(repo: Any, texts: list[str], seconds: float) -> dict[str, Any]:
    points: dict[str, Any] = {}
    for mode, encoder in raw_encoders(repo, MINILM).items():
        for batch in (1, 8, 16, 32, 64):
            chunk = [texts[i % len(texts)] for i in range(batch * 4)]
            point = in_process(partial(encoder.encode_texts, chunk, batch_size=batch), len(chunk), seconds / 2)
            point.update(batch_size=batch, ort=mode)
            points[f"{mode}_batch_{batch}"] = point
            log.info("  raw ORT (%s) batch %d: %.1f/s", mode, batch, point["throughput_per_s"])
    best = max(points.values(), key=lambda p: p["throughput_per_s"])
    return {"points": points, "best": best}


def raw_image_ceiling(repo: Any, images: list[bytes], seconds: float) -> dict[str, Any]:
    points: dict[str, Any] = {}
    for mode, encoder in raw_encoders(repo, CLIP_IMAGE).items():
        for batch in (1, 8, 16):
            chunk = [images[i % len(images)] for i in range(batch)]
            point = in_process(partial(encoder.encode_images, chunk, batch_size=batch), batch, seconds / 2)
            point.update(batch_size=batch, ort=mode)
            points[f"{mode}_batch_{batch}"] = point
            log.info("  raw ORT image (%s) batch %d: %.1f/s", mode, batch, point["throughput_per_s"])
    best = max(points.values(), key=lambda p: p["throughput_per_s"])
    return {"points": points, "best": best}


# --- run ----------------------------------------------------------------------------------------------------


def servers(stack: ExitStack, repo: Path, logs: Path, *model_flags: str) -> tuple[Any, Any]:
    from tests.fixtures.grpc_services import start_service

    common = ["--rescan-seconds", "0"]
    tok = stack.enter_context(start_service("tokenizer", repo, *common, log_dir=logs, name="bench-tokenizer"))
    model = stack.enter_context(start_service("model", repo, *common, *model_flags, log_dir=logs, name="bench-model"))
    return tok, model


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per point")
    parser.add_argument("--repo", type=Path, default=Path("var/bench/model-repo"), help="model repository (reused)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serving.json"))
    parser.add_argument("--contended", action="store_true", help="other work shared the CPU during the run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # The servers are child processes; keep their ORT at its defaults (all cores), like a deployment.
    os.environ.pop("OMP_NUM_THREADS", None)

    repo = build_repo(args.repo)
    texts, images = queries(), photos()
    logs = args.repo.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()

    results: dict[str, Any] = {}
    log.info("model server, batching on")
    with ExitStack() as stack:
        tok, model = servers(stack, repo.root, logs)
        results["server_batching"] = served_texts(tok.target, model, texts, args.seconds, CONCURRENCY)
        log.info("CLIP image tower through the server, concurrency 8")
        results["clip_image_server_concurrency_8"] = served_images(tok.target, model, images, args.seconds, 8)
    log.info("model server, batching off")
    with ExitStack() as stack:
        tok, model = servers(stack, repo.root, logs, "--no-batching")
        results["server_no_batching"] = served_texts(tok.target, model, texts, args.seconds, CONCURRENCY)
    log.info("sentence-transformers in-process")
    results["sentence_transformers"] = sentence_transformers_baseline(texts, args.seconds)
    log.info("raw ONNX Runtime session in-process")
    results["raw_session"] = raw_session_ceiling(repo, texts, args.seconds)
    results["clip_image_raw_session"] = raw_image_ceiling(repo, images, args.seconds)

    served, unbatched = results["server_batching"], results["server_no_batching"]
    ceiling = results["raw_session"]["best"]["throughput_per_s"]
    st32 = results["sentence_transformers"]["batch_32"]["throughput_per_s"]
    ratios = {
        "c32_throughput_vs_raw_ceiling": ratio(served["concurrency_32"]["throughput_per_s"], ceiling),
        "c32_throughput_vs_sentence_transformers_batch32": ratio(served["concurrency_32"]["throughput_per_s"], st32),
        "c32_throughput_vs_no_batching": ratio(
            served["concurrency_32"]["throughput_per_s"], unbatched["concurrency_32"]["throughput_per_s"]
        ),
        "c8_throughput_vs_no_batching": ratio(
            served["concurrency_8"]["throughput_per_s"], unbatched["concurrency_8"]["throughput_per_s"]
        ),
        "c1_p50_vs_no_batching": ratio(served["concurrency_1"]["p50_ms"], unbatched["concurrency_1"]["p50_ms"]),
        "clip_image_c8_vs_raw_ceiling": ratio(
            results["clip_image_server_concurrency_8"]["throughput_per_s"],
            results["clip_image_raw_session"]["best"]["throughput_per_s"],
        ),
    }
    targets = {
        "c32_throughput_vs_raw_ceiling >= 0.7": (ratios["c32_throughput_vs_raw_ceiling"] or 0) >= 0.7,
        "c32_throughput_vs_sentence_transformers >= 1.5": (
            ratios["c32_throughput_vs_sentence_transformers_batch32"] or 0
        )
        >= 1.5,
        "c1_p50_vs_no_batching <= 1.2": (ratios["c1_p50_vs_no_batching"] or 99) <= 1.2,
    }
    report = {
        "benchmark": "serving",
        "started": started,
        "seconds_per_point": args.seconds,
        "models": {"text": "all-MiniLM-L6-v2 (real weights)", "image": "CLIP ViT-B/32 image tower (random weights)"},
        "queries": f"{len(texts)} Zaragoza FAQ questions, one per call",
        "machine": machine_info(contended=args.contended),
        "load_average_before": list(load_before),
        "results": results,
        "ratios": ratios,
        "targets_met": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log.info("ratios: %s", json.dumps(ratios))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
