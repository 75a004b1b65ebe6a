"""The query-embedding cache: keys, LRU, TTL, version invalidation and its metrics (no services needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmsearch.model_repo import ModelRepository
from services.search.metrics import SearchMetrics
from services.search.query_cache import QueryEmbeddingCache, normalise
from tests.fixtures.models import MINILM_KEY
from tests.fixtures.prometheus import metric_value

VEC = np.array([[0.6, 0.8]], dtype=np.float32)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache(tmp_path: Path, size: int = 3, ttl: float = 60.0) -> tuple[QueryEmbeddingCache, Clock, SearchMetrics]:
    clock, metrics = Clock(), SearchMetrics()
    cache = QueryEmbeddingCache(size, ttl, repo=ModelRepository(tmp_path), metrics=metrics, clock=clock)
    return cache, clock, metrics


def _metric(metrics: SearchMetrics, name: str, **labels: str) -> float:
    from prometheus_client import generate_latest

    return metric_value(generate_latest(metrics.registry).decode(), name, **labels)


def test_normalise_ignores_what_tokenizers_ignore() -> None:
    assert normalise("  how long\tdoes a  permit\n take? ") == "how long does a permit take?"
    assert normalise("cafe\u0301") == normalise("caf\u00e9")  # decomposed and composed é
    assert normalise("Permit") != normalise("permit")  # case matters to cased models


def test_a_repeated_query_hits_and_other_models_or_outputs_miss(tmp_path: Path) -> None:
    cache, _, metrics = _cache(tmp_path)
    key = cache.key(model="minilm", tokenizer_model="minilm", text="how long?", output="sentence_embedding")
    assert cache.get(key) is None
    cache.put(key, VEC, "v1")

    again = cache.key(model="minilm", tokenizer_model="minilm", text=" how  long? ", output="sentence_embedding")
    hit = cache.get(again)
    assert hit is not None
    np.testing.assert_array_equal(hit, VEC)
    assert not hit.flags.writeable  # shared between requests
    assert cache.get(cache.key(model="other", tokenizer_model="other", text="how long?", output="x")) is None
    assert cache.get(cache.key(model="minilm", tokenizer_model="minilm", text="how long?", output="y")) is None
    assert _metric(metrics, "mmsearch_search_query_cache_lookups_total", model="minilm", result="hit") == 1
    assert _metric(metrics, "mmsearch_search_query_cache_lookups_total", model="minilm", result="miss") == 2
    assert _metric(metrics, "mmsearch_search_query_cache_entries") == 1


def test_entries_expire_after_the_ttl(tmp_path: Path) -> None:
    cache, clock, _ = _cache(tmp_path, ttl=60)
    cache.put(cache.key(model="m", tokenizer_model="m", text="q", output="o"), VEC, "v1")
    clock.now += 59
    assert cache.get(cache.key(model="m", tokenizer_model="m", text="q", output="o")) is not None
    clock.now += 2
    assert cache.get(cache.key(model="m", tokenizer_model="m", text="q", output="o")) is None
    assert len(cache) == 0


def test_the_least_recently_used_entry_goes_first(tmp_path: Path) -> None:
    cache, _, metrics = _cache(tmp_path, size=2)
    for text in ("a", "b"):
        cache.put(cache.key(model="m", tokenizer_model="m", text=text, output="o"), VEC, "v1")
    assert cache.get(cache.key(model="m", tokenizer_model="m", text="a", output="o")) is not None  # a is recent now
    cache.put(cache.key(model="m", tokenizer_model="m", text="c", output="o"), VEC, "v1")

    assert cache.get(cache.key(model="m", tokenizer_model="m", text="b", output="o")) is None
    assert cache.get(cache.key(model="m", tokenizer_model="m", text="a", output="o")) is not None
    assert _metric(metrics, "mmsearch_search_query_cache_evictions_total") == 1


def test_a_new_model_version_drops_that_models_entries(tmp_path: Path) -> None:
    cache, _, metrics = _cache(tmp_path, size=10)
    cache.put(cache.key(model="m", tokenizer_model="m", text="old", output="o"), VEC, "v1")
    cache.put(cache.key(model="n", tokenizer_model="n", text="other model", output="o"), VEC, "w1")
    assert cache.get(cache.key(model="m", tokenizer_model="m", text="old", output="o")) is not None

    # A miss of another text comes back from the reloaded model: version v2.
    cache.put(cache.key(model="m", tokenizer_model="m", text="new", output="o"), VEC * 2, "v2")

    assert cache.get(cache.key(model="m", tokenizer_model="m", text="old", output="o")) is None
    hit = cache.get(cache.key(model="m", tokenizer_model="m", text="new", output="o"))
    assert hit is not None
    np.testing.assert_array_equal(hit, VEC * 2)
    assert cache.get(cache.key(model="n", tokenizer_model="n", text="other model", output="o")) is not None
    assert _metric(metrics, "mmsearch_search_query_cache_invalidations_total", model="m") == 1


def test_the_tokenizers_query_prompt_is_part_of_the_key(model_repo: ModelRepository, tmp_path: Path) -> None:
    manifest = json.loads((model_repo.path(MINILM_KEY) / "manifest.json").read_text(encoding="utf-8"))
    manifest["query_prompt"] = "query: "
    (tmp_path / MINILM_KEY).mkdir()
    (tmp_path / MINILM_KEY / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    cache, _, _ = _cache(tmp_path)

    assert cache.key(model=MINILM_KEY, tokenizer_model=MINILM_KEY, text="q", output="o").prompt == "query: "
    assert cache.key(model=MINILM_KEY, tokenizer_model="absent", text="q", output="o").prompt == ""
