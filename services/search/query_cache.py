"""The query-embedding cache: popular queries repeat, and their embedding is a pure function of the model version,
the tokenizer's prompt and the text, so a repeated query skips both the tokenizer and the model server.

Keys are (embedding model, its version, tokenizer model, its query prompt, normalised text, output name). The
version is the one the model server reported with the last embedding it computed for that model: when it
reports a new one (the model was re-exported and reloaded), every entry of the older version is dropped. Entries
also expire after `ttl` seconds, and the least recently used goes first when the cache is full.
"""

from __future__ import annotations

import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mmsearch.model_repo import ModelRepoError, ModelRepository
from services.search.metrics import SearchMetrics


@dataclass(frozen=True)
class CacheKey:
    model: str
    version: str
    tokenizer_model: str
    prompt: str
    text: str
    output: str


def normalise(text: str) -> str:
    """What the tokenizers cannot tell apart: Unicode composition (NFC) and runs of white space."""
    return unicodedata.normalize("NFC", " ".join(text.split()))


class QueryEmbeddingCache:
    def __init__(
        self,
        size: int,
        ttl_seconds: float,
        *,
        repo: ModelRepository,
        metrics: SearchMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.ttl = ttl_seconds
        self.repo = repo
        self.metrics = metrics
        self.clock = clock
        self._entries: OrderedDict[CacheKey, tuple[float, np.ndarray]] = OrderedDict()
        self._versions: dict[str, str] = {}  # model -> the version its last embedding came from
        self._prompts: dict[str, str] = {}  # tokenizer model -> its query prompt

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, *, model: str, tokenizer_model: str, text: str, output: str) -> CacheKey:
        return CacheKey(
            model=model,
            version=self._versions.get(model, ""),
            tokenizer_model=tokenizer_model,
            prompt=self._prompt(tokenizer_model),
            text=normalise(text),
            output=output,
        )

    def get(self, key: CacheKey) -> np.ndarray | None:
        entry = self._entries.get(key)
        if entry is not None and self.clock() - entry[0] > self.ttl:
            del self._entries[key]
            entry = None
        if entry is None:
            self._count("miss", key.model)
            return None
        self._entries.move_to_end(key)
        self._count("hit", key.model)
        return entry[1]

    def put(self, key: CacheKey, vector: np.ndarray, version: str) -> None:
        """Store what the model server computed; `version` is the one it reported with it."""
        if version != self._versions.get(key.model, ""):
            self._new_version(key.model, version)
            key = CacheKey(key.model, version, key.tokenizer_model, key.prompt, key.text, key.output)
        vector = vector.copy()
        vector.setflags(write=False)  # shared by every request that hits it
        self._entries[key] = (self.clock(), vector)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
            if self.metrics:
                self.metrics.query_cache_evictions.inc()
        self._gauge()

    def _new_version(self, model: str, version: str) -> None:
        stale = [k for k in self._entries if k.model == model and k.version != version]
        for k in stale:
            del self._entries[k]
        if model in self._versions and self.metrics:  # the first version seen replaces nothing
            self.metrics.query_cache_invalidations.labels(model).inc(len(stale))
        self._versions[model] = version
        self._prompts.clear()  # a re-exported model may come with another prompt
        self._gauge()

    def _prompt(self, tokenizer_model: str) -> str:
        if tokenizer_model not in self._prompts:
            try:
                self._prompts[tokenizer_model] = self.repo.manifest(tokenizer_model).query_prompt or ""
            except ModelRepoError:
                # The tokenizer service knows the model even if this process cannot read its manifest: the model
                # version still separates what different exports computed.
                self._prompts[tokenizer_model] = ""
        return self._prompts[tokenizer_model]

    def _count(self, result: str, model: str) -> None:
        if self.metrics:
            self.metrics.query_cache_lookups.labels(model, result).inc()

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.query_cache_entries.set(len(self._entries))
