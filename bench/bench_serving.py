"""Serving throughput and latency: clients doing tokenize + predict over real gRPC against the model server, with
and without server-side batching, against in-process baselines measured in the same run.

MiniLM (the real all-MiniLM-L6-v2 export), queries = the Zaragoza FAQ questions, closed-loop clients at
concurrency 1, 8 and 32 (each client: Tokenize one query, Predict it, repeat) for `--seconds` per point:
- server: `mmsearch serve tokenizer` + `mmsearch serve model` (batching on, defaults), real processes;
- server embed: the same model server's Embed, one call per query (it tokenizes in-process: the search service's
  path for text queries);
- (a) the same model server with `--no-batching`;
- (b) sentence-transformers `encode` in-process (PyTorch CPU): batch 1 (one query at a time) and batch 32,
  torch on all cores and on one thread (the better one is the baseline);
- (c) raw ONNX Runtime session in-process (tokenisation included, sorted by length) at its best batch size,
  with ORT's defaults and with spinning off (the better one is the ceiling).
CLIP image tower (real ViT-B/32 config, random weights: speed does not depend on weight values): clients at
concurrency 8 doing PreprocessImages + Predict on one JPEG each, against a raw session at its best batch size
(preprocessing included).

Throughput is queries (images) per second; latencies are per client call (tokenize + predict). The load
generator runs in this process on the same cores as the servers, so served figures include its cost. Every
point is measured once per round and rounds are interleaved; the JSON holds medians and each round's figure.

    .venv/bin/python -m bench.bench_serving [--seconds 2] [--rounds 3] [--contended] [--repo var/bench/model-repo]
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
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench.machine import machine_info
from tests.fixtures.models import CLIP_CONFIG_DIR as TEST_CLIP_CONFIG_DIR

log = logging.getLogger("bench.serving")

MINILM = "minilm"
CLIP = "clip-b32"
CLIP_IMAGE = f"{CLIP}-image"
# The real ViT-B/32 config kept in tests/data (random weights are built from it).
CLIP_CONFIG_DIR = Path(os.environ.get("MMSEARCH_CLIP_CONFIG_DIR", str(TEST_CLIP_CONFIG_DIR)))
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
    ms = sorted(x * 1000 for x in latencies) or [float("nan")]
    return {
        "requests": len(latencies),
        "throughput_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(ms[len(ms) // 2], 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


async def closed_loop(call: Callable[[int], Awaitable[Any]], concurrency: int, seconds: float) -> dict[str, float]:
    """`concurrency` clients calling back to back. Calls that END inside the measured window count (after a
    warm-up of one second or one call per client, whichever is longer): slow calls are not lost."""
    done: list[tuple[float, float]] = []  # (end, latency)
    counter = iter(range(10**9))
    stop_at = float("inf")

    async def client() -> None:
        while (now := time.perf_counter()) < stop_at:
            await call(next(counter))
            end = time.perf_counter()
            done.append((end, end - now))

    async def warm_one() -> None:
        await call(next(counter))

    await asyncio.gather(*(warm_one() for _ in range(concurrency)))  # first calls (lazy channel set-up) not timed
    warm_until = time.perf_counter() + 1.0
    stop_at = warm_until + seconds
    await asyncio.gather(*(client() for _ in range(concurrency)))
    window = [lat for end, lat in done if warm_until <= end <= stop_at]
    return summary(window, seconds)


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


def batch_stats(service: Any, model: str) -> tuple[float, float]:
    """(ORT calls, requests) the model server has counted for `model`."""
    from tests.fixtures.grpc_services import scrape_metrics
    from tests.fixtures.prometheus import metric_value

    text = scrape_metrics(service)
    return (
        metric_value(text, "mmsearch_model_server_requests_per_batch_count", model=model),
        metric_value(text, "mmsearch_model_server_requests_per_batch_sum", model=model),
    )


def served(
    stack: tuple[str, Any],
    model: str,
    inputs: list[Any],
    concurrency: int,
    seconds: float,
    *,
    one_call: bool = False,
) -> dict[str, Any]:
    """Closed-loop clients doing preprocessing + Predict over gRPC (texts, or images for a clip_image model), or
    with `one_call` the model server's Embed alone."""
    from services.model_server.client import ModelServerClient, embed_images, tokenize_then_embed
    from services.tokenizer.client import TokenizerClient

    tokenizer, server = stack
    embed = embed_images if model == CLIP_IMAGE else tokenize_then_embed
    calls_before, requests_before = batch_stats(server, model)

    async def go() -> dict[str, Any]:
        async with TokenizerClient(tokenizer) as tok, ModelServerClient(server.target) as models:

            def call(i: int) -> Awaitable[Any]:
                one = [inputs[i % len(inputs)]]
                if one_call:
                    return models.embed_texts(model, one, timeout=60)
                return embed(tok, models, model, one, timeout=60)

            return await closed_loop(call, concurrency, seconds)

    point = asyncio.run(go())
    calls_after, requests_after = batch_stats(server, model)
    if calls_after > calls_before:
        point["mean_requests_per_ort_call"] = round(
            (requests_after - requests_before) / (calls_after - calls_before), 2
        )
    return point


def sentence_transformers_model() -> Any:
    from sentence_transformers import SentenceTransformer

    from tests.fixtures.models import minilm_source

    return SentenceTransformer(str(minilm_source()), device="cpu")


def st_point(model: Any, texts: list[str], batch: int, threads: int, seconds: float) -> dict[str, Any]:
    import torch

    # Like ORT's spinning, torch's OpenMP threads wait actively: on shared cores one thread can be faster, so
    # both are measured and the better one is the baseline.
    torch.set_num_threads(threads)
    cursor = iter(range(10**9))

    def step() -> None:
        i = next(cursor) * batch
        chunk = [texts[(i + k) % len(texts)] for k in range(batch)]
        model.encode(chunk, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)

    return in_process(step, batch, seconds)


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


def raw_text_point(encoder: Any, texts: list[str], batch: int, seconds: float) -> dict[str, Any]:
    # Four batches per step, sorted by length inside (as the encoder does): tokenisation included.
    chunk = [texts[i % len(texts)] for i in range(batch * 4)]
    return in_process(partial(encoder.encode_texts, chunk, batch_size=batch), len(chunk), seconds)


def raw_image_point(encoder: Any, images: list[bytes], batch: int, seconds: float) -> dict[str, Any]:
    chunk = [images[i % len(images)] for i in range(batch)]
    return in_process(partial(encoder.encode_images, chunk, batch_size=batch), batch, seconds)


def median_point(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of each figure; the rounds' throughputs are kept to show the spread."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples if key in s]
        out[key] = round(statistics.median(values), 2) if isinstance(values[0], int | float) else values[0]
    out["throughput_per_round"] = [s["throughput_per_s"] for s in samples]
    return out


# --- run ----------------------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per point and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; every point is measured once per round")
    parser.add_argument("--repo", type=Path, default=Path("var/bench/model-repo"), help="model repository (reused)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serving.json"))
    parser.add_argument("--contended", action="store_true", help="other work shared the CPU during the run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # The servers are child processes; keep their ORT at its defaults (all cores), like a deployment.
    os.environ.pop("OMP_NUM_THREADS", None)
    from tests.fixtures.grpc_services import start_service

    repo = build_repo(args.repo)
    texts, images = queries(), photos()
    logs = args.repo.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()

    with ExitStack() as stack:
        common = ["--rescan-seconds", "0"]

        def start(kind: Any, name: str, *flags: str) -> Any:
            return stack.enter_context(start_service(kind, repo.root, *common, *flags, log_dir=logs, name=name))

        tok = start("tokenizer", "bench-tokenizer")
        batching = start("model", "bench-model-batching")
        unbatched = start("model", "bench-model-unbatched", "--no-batching")
        st_model = sentence_transformers_model()
        text_raw, image_raw = raw_encoders(repo, MINILM), raw_encoders(repo, CLIP_IMAGE)

        # Every point once per round, rounds interleaved: contention that comes and goes hits all alike.
        points: dict[str, Callable[[float], dict[str, Any]]] = {}
        for c in CONCURRENCY:
            points[f"server_batching/concurrency_{c}"] = partial(served, (tok.target, batching), MINILM, texts, c)
            points[f"server_no_batching/concurrency_{c}"] = partial(served, (tok.target, unbatched), MINILM, texts, c)
            points[f"server_embed/concurrency_{c}"] = partial(
                served, (tok.target, batching), MINILM, texts, c, one_call=True
            )
        for threads in (os.cpu_count() or 1, 1):
            for b in (1, 32):
                name = f"sentence_transformers/threads_{threads}_batch_{b}"
                points[name] = partial(st_point, st_model, texts, b, threads)
        for mode, encoder in text_raw.items():
            for b in (8, 16, 32, 64):
                points[f"raw_session/{mode}_batch_{b}"] = partial(raw_text_point, encoder, texts, b)
        points["clip_image/server_concurrency_8"] = partial(served, (tok.target, batching), CLIP_IMAGE, images, 8)
        for mode, encoder in image_raw.items():
            for b in (1, 8):
                points[f"clip_image/raw_{mode}_batch_{b}"] = partial(raw_image_point, encoder, images, b)

        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in points}
        for r in range(args.rounds):
            for name, measure in points.items():
                samples[name].append(measure(args.seconds))
                log.info("round %d %s: %.1f/s", r + 1, name, samples[name][-1]["throughput_per_s"])

    results: dict[str, dict[str, Any]] = {}
    for name, values in samples.items():
        group, point = name.split("/", 1)
        results.setdefault(group, {})[point] = median_point(values)
    raw = results["raw_session"]
    raw_best_name = max(raw, key=lambda k: raw[k]["throughput_per_s"])
    clip = results["clip_image"]
    clip_raw_best = max((k for k in clip if k.startswith("raw_")), key=lambda k: clip[k]["throughput_per_s"])
    srv, unb, st = results["server_batching"], results["server_no_batching"], results["sentence_transformers"]
    emb = results["server_embed"]
    st1 = max((k for k in st if k.endswith("_batch_1")), key=lambda k: st[k]["throughput_per_s"])
    st32 = max((k for k in st if k.endswith("_batch_32")), key=lambda k: st[k]["throughput_per_s"])
    ceiling = raw[raw_best_name]["throughput_per_s"]

    def against_baselines(prefix: str, served: dict[str, Any]) -> dict[str, float | None]:
        """A served path (two calls, or Embed) against the raw ceiling and sentence-transformers."""
        c1, c32 = served["concurrency_1"]["throughput_per_s"], served["concurrency_32"]["throughput_per_s"]
        return {
            f"{prefix}c32_throughput_vs_raw_ceiling": ratio(c32, ceiling),
            f"{prefix}c32_throughput_vs_sentence_transformers_batch32": ratio(c32, st[st32]["throughput_per_s"]),
            f"{prefix}c1_throughput_vs_sentence_transformers_batch1": ratio(c1, st[st1]["throughput_per_s"]),
        }

    ratios: dict[str, Any] = {
        "raw_ceiling_point": raw_best_name,
        "sentence_transformers_points": [st1, st32],
        **against_baselines("", srv),
        "c32_throughput_vs_no_batching": ratio(
            srv["concurrency_32"]["throughput_per_s"], unb["concurrency_32"]["throughput_per_s"]
        ),
        "c8_throughput_vs_no_batching": ratio(
            srv["concurrency_8"]["throughput_per_s"], unb["concurrency_8"]["throughput_per_s"]
        ),
        "c1_p50_vs_no_batching": ratio(srv["concurrency_1"]["p50_ms"], unb["concurrency_1"]["p50_ms"]),
        **against_baselines("embed_", emb),
        "embed_c32_throughput_vs_two_calls": ratio(
            emb["concurrency_32"]["throughput_per_s"], srv["concurrency_32"]["throughput_per_s"]
        ),
        "embed_c1_p50_vs_two_calls": ratio(emb["concurrency_1"]["p50_ms"], srv["concurrency_1"]["p50_ms"]),
        "clip_image_raw_ceiling_point": clip_raw_best,
        "clip_image_c8_vs_raw_ceiling": ratio(
            clip["server_concurrency_8"]["throughput_per_s"], clip[clip_raw_best]["throughput_per_s"]
        ),
    }
    targets = {
        "c32_throughput_vs_raw_ceiling >= 0.7": (ratios["c32_throughput_vs_raw_ceiling"] or 0) >= 0.7,
        "c32_throughput_vs_sentence_transformers >= 1.5": (
            ratios["c32_throughput_vs_sentence_transformers_batch32"] or 0
        )
        >= 1.5,
        "c1_p50_vs_no_batching <= 1.2": (ratios["c1_p50_vs_no_batching"] or 99) <= 1.2,
        "embed_c32_throughput_vs_raw_ceiling >= 0.7": (ratios["embed_c32_throughput_vs_raw_ceiling"] or 0) >= 0.7,
        "embed_c32_throughput_vs_sentence_transformers >= 1.5": (
            ratios["embed_c32_throughput_vs_sentence_transformers_batch32"] or 0
        )
        >= 1.5,
    }
    report = {
        "benchmark": "serving",
        "started": started,
        "seconds_per_point": args.seconds,
        "rounds": args.rounds,
        "method": "every point measured once per round, rounds interleaved; figures are medians over rounds",
        "models": {"text": "all-MiniLM-L6-v2 (real weights)", "image": "CLIP ViT-B/32 image tower (random weights)"},
        "queries": f"{len(texts)} Zaragoza FAQ questions, one per call; {len(images)} skimage photos as JPEG",
        "servers": "mmsearch serve tokenizer + mmsearch serve model at default settings (ORT threads: all cores)",
        "machine": machine_info(contended=args.contended),
        "load_average_before": [round(x, 2) for x in load_before],
        "results": results,
        "ratios": ratios,
        "targets_met": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log.info("ratios: %s", json.dumps(ratios))
    log.info("targets: %s", json.dumps(targets))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
