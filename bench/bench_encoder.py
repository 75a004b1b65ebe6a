"""Encoder throughput: ONNX Runtime (fp32, int8) against PyTorch, in one process, on the same inputs.

- MiniLM (real all-MiniLM-L6-v2): `SentenceTransformer.encode` vs `OnnxEncoder.encode_texts`, both from raw
  texts (tokenisation included on both sides), texts = the Zaragoza construction FAQ questions.
- CLIP ViT-B/32 (real config, random weights: latency does not depend on weight values): text tower from
  raw texts (transformers tokenizer + get_text_features vs OnnxEncoder.encode_texts), and image tower on the
  same prepared pixel_values (model only: get_image_features vs the ONNX session).

Batch 1 and 32; throughput in items per second, the best of `--repeats` timed passes after a warm-up pass;
ratios are ONNX / PyTorch fp32 measured in this run. Engines are timed round-robin (one pass of each in turn)
so that load from other processes on a shared machine falls on all of them alike. Usage:

    .venv/bin/python -m bench.bench_encoder [--quick] [--contended] [--passive-wait] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import machine_info
from tests.fixtures.models import CLIP_CONFIG_DIR as TEST_CLIP_CONFIG_DIR

log = logging.getLogger("bench.encoder")
# The real ViT-B/32 config kept in tests/data (random weights are built from it).
CLIP_CONFIG_DIR = Path(os.environ.get("MMSEARCH_CLIP_CONFIG_DIR", str(TEST_CLIP_CONFIG_DIR)))


def timed_round_robin(engines: dict[str, Callable[[], Any]], n_items: int, repeats: int) -> dict[str, dict[str, float]]:
    """Time each engine `repeats` times, interleaved, so load from other processes hits all engines alike."""
    for fn in engines.values():
        fn()  # warm-up: first-run allocations, lazy initialisation
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, fn in engines.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return {
        name: {
            "items": n_items,
            "best_s": round(min(s), 4),
            "median_s": round(statistics.median(s), 4),
            "items_per_s": round(n_items / min(s), 2),
        }
        for name, s in seconds.items()
    }


def batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def st_encode(model: Any, texts: list[str], batch: int) -> Any:
    return model.encode(texts, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)


def onnx_texts(encoder: Any, texts: list[str], batch: int) -> Any:
    return encoder.encode_texts(texts, batch_size=batch)


def onnx_pixels(encoder: Any, pixels: np.ndarray[Any, Any], batch: int) -> Any:
    return [encoder.run({"pixel_values": pixels[c]}) for c in batches(list(range(len(pixels))), batch)]


def encoder(repo: Any, key: str, variant: str, *, passive: bool) -> Any:
    """The runtime's OnnxEncoder; with `passive`, its ONNX Runtime threads block instead of spin-waiting."""
    from mmsearch.runtime.encoder import OnnxEncoder

    if not passive:
        return OnnxEncoder.from_repo(repo, key, variant=variant, providers=["cpu"])
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(repo.onnx_path(key, variant)), options, providers=["CPUExecutionProvider"])
    return OnnxEncoder(repo, repo.manifest(key), session)


def bench_minilm(repo: Any, texts: list[str], sizes: dict[int, int], repeats: int, *, passive: bool) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from tests.fixtures.models import minilm_source

    st = SentenceTransformer(str(minilm_source()), device="cpu")
    engines: dict[str, Callable[[list[str], int], Any]] = {
        "pytorch_fp32": partial(st_encode, st),
    }
    for variant in ("fp32", "int8"):
        engines[f"onnx_{variant}"] = partial(onnx_texts, encoder(repo, "minilm", variant, passive=passive))
    out: dict[str, Any] = {}
    for batch, n in sizes.items():
        log.info("minilm batch %d (%d texts)", batch, n)
        timings = timed_round_robin({k: partial(run, texts[:n], batch) for k, run in engines.items()}, n, repeats)
        out.update({f"{k}_b{batch}": v for k, v in timings.items()})
    return out


def bench_clip(
    repo: Any, folder: Path, texts: list[str], sizes: dict[int, int], repeats: int, *, passive: bool
) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer, CLIPModel

    from offline.export.clip import parity_photos, transformers_pixels

    model: Any = CLIPModel.from_pretrained(str(folder))
    model.eval()
    tok = AutoTokenizer.from_pretrained(str(folder))

    def torch_text(t: list[str], b: int) -> None:
        with torch.inference_mode():
            for chunk in batches(t, b):
                model.get_text_features(**tok(chunk, padding=True, truncation=True, max_length=77, return_tensors="pt"))

    def torch_image(p: np.ndarray[Any, Any], b: int) -> None:
        with torch.inference_mode():
            for chunk in batches(list(range(len(p))), b):
                model.get_image_features(pixel_values=torch.from_numpy(p[chunk]))

    photos = parity_photos()
    biggest = max(sizes.values())
    pixels = transformers_pixels(folder, photos)
    pixels = np.concatenate([pixels] * (biggest // len(pixels) + 1))[:biggest]
    out: dict[str, Any] = {}
    text_engines: dict[str, Callable[[list[str], int], Any]] = {"pytorch_fp32": torch_text}
    image_engines: dict[str, Callable[[np.ndarray[Any, Any], int], Any]] = {"pytorch_fp32": torch_image}
    for variant in ("fp32", "int8"):
        text_engines[f"onnx_{variant}"] = partial(onnx_texts, encoder(repo, "clip-b32-text", variant, passive=passive))
        image_engines[f"onnx_{variant}"] = partial(
            onnx_pixels, encoder(repo, "clip-b32-image", variant, passive=passive)
        )
    for batch, n in sizes.items():
        log.info("clip text batch %d (%d texts)", batch, n)
        timings = timed_round_robin({k: partial(r, texts[:n], batch) for k, r in text_engines.items()}, n, repeats)
        out.update({f"text_{k}_b{batch}": v for k, v in timings.items()})
        log.info("clip image batch %d (%d images)", batch, n)
        timings = timed_round_robin({k: partial(r, pixels[:n], batch) for k, r in image_engines.items()}, n, repeats)
        out.update({f"image_{k}_b{batch}": v for k, v in timings.items()})
    return out


def ratios(results: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in results.items():
        if not key.startswith(f"{prefix}onnx_"):
            continue
        base_key = key.replace("onnx_fp32", "pytorch_fp32").replace("onnx_int8", "pytorch_fp32")
        base = results.get(base_key)
        if base:
            out[f"{key}_vs_pytorch"] = round(value["items_per_s"] / base["items_per_s"], 3)
    return out


def oversubscription_note(machine: dict[str, Any], *, passive: bool) -> list[str]:
    cores = machine.get("usable_cores") or 1
    loads = [machine["load_average_1_5_15"][0], machine["load_average_at_end"][0]]
    if max(loads) <= cores:
        return []
    note = f"oversubscribed: 1-min load {loads[0]:.1f} at start, {loads[1]:.1f} at end, on {cores} cores; "
    if passive:
        note += (
            "threads block instead of spinning on both sides, but figures still swing from run to run (compare "
            "best_s with median_s); rerun on a quiet machine for ratios to rely on."
        )
    else:
        note += (
            "PyTorch's OpenMP threads spin-wait and lose far more to competing processes than ONNX Runtime's "
            "thread pool (see the --passive-wait run), so the ONNX/PyTorch ratios here overstate what an idle "
            "machine shows; rerun on a quiet machine for ratios to rely on."
        )
    return [note]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results/encoder.json"))
    parser.add_argument("--quick", action="store_true", help="fewer items and repeats (a few minutes on 2 cores)")
    parser.add_argument("--contended", action="store_true", help="record that other work shared the CPU")
    parser.add_argument("--no-clip", action="store_true", help="MiniLM only")
    parser.add_argument(
        "--passive-wait",
        action="store_true",
        help="idle threads block instead of spinning, on both sides (OMP_WAIT_POLICY=PASSIVE for PyTorch, "
        "allow_spinning=0 for ONNX Runtime): the fair setting on a machine shared with other work",
    )
    args = parser.parse_args()
    if args.passive_wait:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read when torch initialises OpenMP: before `import torch`
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s: %(message)s")

    import torch
    from transformers import CLIPConfig

    from mmsearch.model_repo import ModelRepository
    from offline.datasets.faq import load_faq
    from offline.export.clip import export_clip
    from offline.export.sbert import export_sbert
    from offline.export.variants import VariantRequest
    from tests.fixtures.models import minilm_source, write_clip_folder

    repeats = 3 if args.quick else 5
    texts = [e.q for e in load_faq()]
    minilm_sizes = {1: 32 if args.quick else 64, 32: 256 if args.quick else 503}
    clip_sizes = {1: 8 if args.quick else 32, 32: 32 if args.quick else 64}
    result: dict[str, Any] = {
        "benchmark": "encoder",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(contended=args.contended),
        "settings": {
            "torch_threads": torch.get_num_threads(),
            "onnxruntime_threads": "default (all cores)",
            "thread_wait": "passive (no spinning, both sides)" if args.passive_wait else "library defaults (spinning)",
            "repeats": repeats,
            "quick": args.quick,
            "texts": "Zaragoza construction FAQ questions (English), in file order",
            "minilm_items_per_batch_size": minilm_sizes,
            "clip_items_per_batch_size": clip_sizes,
        },
    }
    with tempfile.TemporaryDirectory(prefix="bench-encoder-") as tmp:
        repo = ModelRepository(Path(tmp) / "models")
        export_sbert(str(minilm_source()), repo, "minilm", variants=VariantRequest(int8=True))
        minilm = bench_minilm(repo, texts, minilm_sizes, repeats, passive=args.passive_wait)
        result["minilm"] = {"results": minilm, "ratios": ratios(minilm)}
        b32 = minilm["onnx_fp32_b32"]["items_per_s"] / minilm["pytorch_fp32_b32"]["items_per_s"]
        i8 = minilm["onnx_int8_b32"]["items_per_s"] / minilm["pytorch_fp32_b32"]["items_per_s"]
        result["targets"] = {
            "minilm_onnx_fp32_vs_pytorch_b32": {"target": 1.3, "measured": round(b32, 3), "met": b32 >= 1.3},
            "minilm_onnx_int8_vs_pytorch_b32": {"target": 2.0, "measured": round(i8, 3), "met": i8 >= 2.0},
        }
        result["minilm"]["int8_parity"] = [p.model_dump() for p in repo.manifest("minilm").parity]
        if not args.no_clip:
            folder = write_clip_folder(Path(tmp) / "clip-src", CLIPConfig.from_pretrained(str(CLIP_CONFIG_DIR)))
            export_clip(str(folder), repo, "clip-b32", variants=VariantRequest(int8=True))
            clip = bench_clip(repo, folder, texts, clip_sizes, repeats, passive=args.passive_wait)
            result["clip_vit_b32_random_weights"] = {
                "results": clip,
                "ratios": {**ratios(clip, "text_"), **ratios(clip, "image_")},
                "note": "image tower timed on prepared pixel_values (model only); text tower from raw texts",
            }
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["notes"] = oversubscription_note(result["machine"], passive=args.passive_wait)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"targets": result["targets"], "minilm_ratios": result["minilm"]["ratios"]}, indent=2))


if __name__ == "__main__":
    main()
