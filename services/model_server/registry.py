"""The models a model server holds: loading (session + warm-up), state, reloading, unloading, rescans.

A model that fails to load is kept as state "failed" with its error (ListModels, health, logs) while the others
serve. Loading happens in the thread pool; the swap to a new version is atomic for callers.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from mmsearch.grpc_common.health import HealthStatus
from mmsearch.model_repo import MANIFEST_NAME, ModelManifest, ModelRepoError, ModelRepository
from mmsearch.runtime.providers import create_session
from mmsearch.runtime.text import TextPreprocessor
from mmsearch.settings import ModelServerSettings
from services.model_server.batcher import Arrays, BatchingPlan, DynamicBatcher
from services.model_server.metrics import ServingMetrics
from services.model_server.signature import output_dynamic_axes, padded_axes

log = logging.getLogger(__name__)

WARMUP_SEQUENCE = 16


class ModelState(StrEnum):
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADED = "unloaded"
    FAILED = "failed"


class Runner:
    """One ONNX Runtime session; `run` is blocking and thread-safe (ORT sessions are). A model with a tokenizer
    carries its text preprocessor, loaded from the same repository version, so Embed's tokens always fit the
    session they run on."""

    def __init__(
        self, manifest: ModelManifest, session: ort.InferenceSession, text: TextPreprocessor | None = None
    ) -> None:
        self.manifest = manifest
        self.session = session
        self.text = text

    def run(self, inputs: Arrays, outputs: list[str]) -> Arrays:
        results = self.session.run(outputs, inputs)
        return {name: np.asarray(value) for name, value in zip(outputs, results, strict=True)}

    def warm_up(self, batch_sizes: list[int]) -> None:
        # The first runs of a session allocate buffers and pick kernels: pay for that now, not on a user's query.
        for n in batch_sizes:
            self.run(dummy_inputs(self.manifest, n), self.manifest.output_names)


def dummy_inputs(manifest: ModelManifest, batch: int) -> dict[str, npt.NDArray[Any]]:
    inputs: dict[str, npt.NDArray[Any]] = {}
    for spec in manifest.inputs:
        shape = [
            batch if i == 0 else (d if isinstance(d, int) and d > 0 else WARMUP_SEQUENCE)
            for i, d in enumerate(spec.shape)
        ]
        # Ones: valid token ids, a full attention mask, a plain image.
        inputs[spec.name] = np.ones(shape, dtype=np.dtype(spec.dtype))
    return inputs


@dataclass
class ModelEntry:
    key: str
    state: ModelState
    manifest: ModelManifest | None = None
    error: str = ""
    version: tuple[int, ...] = ()
    runner: Runner | None = None
    batcher: DynamicBatcher | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def version_tag(self) -> str:
        """The loaded version as clients see it (PredictResponse.model_version); "" while none is loaded."""
        if not self.version:
            return ""
        return hashlib.sha256(repr(self.version).encode()).hexdigest()[:16]


class ModelNotServingError(Exception):
    pass


class ModelRegistry:
    def __init__(
        self,
        repo: ModelRepository,
        settings: ModelServerSettings,
        executor: Executor,
        metrics: ServingMetrics,
        health: HealthStatus | None = None,
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.executor = executor
        self.metrics = metrics
        self.health = health
        self.entries: dict[str, ModelEntry] = {}

    def known_keys(self) -> list[str]:
        return sorted(set(self.entries) | set(self.repo.keys()))

    def batching_for(self, key: str) -> bool:
        return self.settings.batching and key not in self.settings.no_batching_models

    async def load_all(self) -> None:
        keys = self.repo.keys()
        log.info("model repository %s: %s", self.repo.root, ", ".join(keys) or "empty")
        # Every model is listed (state "loading", health NOT_SERVING) before the first one is ready.
        for key in keys:
            self._set_state(
                self.entries.setdefault(key, ModelEntry(key=key, state=ModelState.LOADING)), ModelState.LOADING
            )
            await self._set_health(key, False)
        for key in keys:
            await self.load(key)

    async def rescan(self) -> None:
        """Load models added to the repository (or re-exported) since the last look; drop removed ones."""
        present = self.repo.keys()
        for key in present:
            entry = self.entries.get(key)
            if entry is None:
                log.info("new model %r in the repository", key)
                await self.load(key)
            elif entry.state in (ModelState.LOADED, ModelState.FAILED) and entry.version != self._version_or_empty(key):
                log.info("model %r changed in the repository: reloading", key)
                await self.load(key)
        for key in [k for k in self.entries if k not in present]:
            log.info("model %r left the repository: unloading", key)
            await self.unload(key)
            del self.entries[key]

    async def load(self, key: str) -> ModelEntry:
        entry = self.entries.setdefault(key, ModelEntry(key=key, state=ModelState.LOADING))
        async with entry.lock:
            previous_state = entry.state
            if previous_state != ModelState.LOADED:
                self._set_state(entry, ModelState.LOADING)
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                version = self._version(key)
                manifest, runner = await loop.run_in_executor(self.executor, self._load_blocking, key)
            except Exception as exc:  # noqa: BLE001 (kept as the model's error, logged, reported in ListModels)
                entry.error = f"{type(exc).__name__}: {exc}"
                entry.version = self._version_or_empty(key)
                log.error("model %r failed to load: %s", key, entry.error)
                if previous_state == ModelState.LOADED:
                    # A failed reload keeps the running version serving.
                    log.warning("model %r: keeping the previously loaded version", key)
                    return entry
                await self._stop_batcher(entry)
                entry.runner, entry.manifest = None, self._manifest_or_none(key)
                self._set_state(entry, ModelState.FAILED)
                await self._set_health(key, False)
                return entry
            old_batcher = entry.batcher
            entry.manifest, entry.runner, entry.version, entry.error = manifest, runner, version, ""
            entry.batcher = self._make_batcher(key, manifest, runner) if self.batching_for(key) else None
            self._set_state(entry, ModelState.LOADED)
            if old_batcher is not None:
                await old_batcher.stop()  # requests already queued finish on the old session
            await self._set_health(key, True)
            log.info(
                "model %r loaded and warmed up in %.1fs (%s, batching %s)",
                key,
                time.perf_counter() - started,
                manifest.kind,
                f"up to {self.settings.max_batch_size}" if entry.batcher else "off",
            )
            return entry

    async def unload(self, key: str) -> ModelEntry:
        entry = self.entries.get(key)
        if entry is None:
            raise KeyError(key)
        async with entry.lock:
            self._set_state(entry, ModelState.UNLOADED)
            await self._set_health(key, False)
            await self._stop_batcher(entry)
            entry.runner = None
            log.info("model %r unloaded", key)
        return entry

    async def stop(self) -> None:
        for entry in self.entries.values():
            await self._stop_batcher(entry)

    def _load_blocking(self, key: str) -> tuple[ModelManifest, Runner]:
        manifest = self.repo.manifest(key)
        s = self.settings
        session = create_session(
            self._onnx_path(key),
            providers=s.providers,
            intra_op_threads=s.intra_op_threads,
            inter_op_threads=s.inter_op_threads,
            cuda_device_id=s.cuda_device_id,
            arena_extend_strategy=s.cuda_arena_extend_strategy,
            cuda_mem_limit_gb=s.cuda_mem_limit_gb,
            config_entries={} if s.allow_spinning else {"session.intra_op.allow_spinning": "0"},
        )
        _check_session_matches(manifest, session)
        text = TextPreprocessor.from_repo(self.repo, key, manifest) if manifest.tokenizer_file else None
        runner = Runner(manifest, session, text)
        if s.warmup:
            runner.warm_up([1, 2])
        return manifest, runner

    def _make_batcher(self, key: str, manifest: ModelManifest, runner: Runner) -> DynamicBatcher:
        s = self.settings
        plan = BatchingPlan(
            padded_axes=padded_axes(manifest),
            output_axes=output_dynamic_axes(manifest),
        )
        batcher = DynamicBatcher(
            key,
            runner.run,
            self.executor,
            plan,
            self.metrics,
            max_batch_size=s.max_batch_size,
            max_queue_delay_ms=s.max_queue_delay_ms,
            max_queue_size=s.max_queue_size,
            concurrency=s.batch_concurrency,
            split_padding_tokens=s.split_padding_tokens,
        )
        batcher.start()
        return batcher

    async def _stop_batcher(self, entry: ModelEntry) -> None:
        if entry.batcher is not None:
            batcher, entry.batcher = entry.batcher, None
            await batcher.stop()

    def _set_state(self, entry: ModelEntry, state: ModelState) -> None:
        entry.state = state
        for s in ModelState:
            self.metrics.model_state.labels(entry.key, s.value).set(1 if s == state else 0)

    async def _set_health(self, key: str, serving: bool) -> None:
        if self.health is not None:
            await self.health.set_model(key, serving)

    def _onnx_path(self, key: str) -> Path:
        """The graph this server runs for `key`: fp32, or the variant `settings.variants` names."""
        return self.repo.onnx_path(key, self.settings.variants.get(key, "fp32"))

    def _version(self, key: str) -> tuple[int, ...]:
        folder = self.repo.path(key)
        return ((folder / MANIFEST_NAME).stat().st_mtime_ns, self._onnx_path(key).stat().st_mtime_ns)

    def _version_or_empty(self, key: str) -> tuple[int, ...]:
        try:
            return self._version(key)
        except (ModelRepoError, OSError):
            return ()

    def _manifest_or_none(self, key: str) -> ModelManifest | None:
        try:
            return self.repo.manifest(key)
        except ModelRepoError:
            return None


def _check_session_matches(manifest: ModelManifest, session: ort.InferenceSession) -> None:
    """The manifest is what clients are validated against: it must name the graph's real inputs and outputs."""
    graph_inputs = sorted(i.name for i in session.get_inputs())
    graph_outputs = {o.name for o in session.get_outputs()}
    if sorted(manifest.input_names) != graph_inputs:
        raise ModelRepoError(f"manifest inputs {manifest.input_names} differ from the ONNX graph's {graph_inputs}")
    missing = [n for n in manifest.output_names if n not in graph_outputs]
    if missing:
        raise ModelRepoError(f"manifest outputs {missing} are not outputs of the ONNX graph ({sorted(graph_outputs)})")
