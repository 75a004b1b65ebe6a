"""Holds the A/B config in force: validates each candidate, swaps it in atomically, keeps the last good one.

Requests read `manager.current` once at their start, so a config swap never changes a request half-way. A config
that fails validation is rejected with the reason logged and counted; the one in force keeps serving. Every
config accepted from Consul is saved to `search.last_good_config`, from which the service starts when Consul is
unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from mmsearch.files import write_text_atomic
from mmsearch.model_repo import ModelManifest, ModelRepoError, ModelRepository
from mmsearch.settings import Settings
from services.search.config.checks import CollectionStatus, check_environment
from services.search.config.model import MatchArgs, RuntimeConfig, Scene, SummaryArgs, resolve
from services.search.errors import ConfigError
from services.search.metrics import SearchMetrics
from services.search.ports import CollectionCatalog

log = logging.getLogger(__name__)

RECHECK_DISABLED_SECONDS = 5.0


def parse_config(text: str, origin: str) -> RuntimeConfig:
    """Structure-only validation (no models, no Milvus): what `mmsearch config validate --offline` runs."""
    return resolve(text, origin=origin)


def load_models(repo: ModelRepository) -> dict[str, ModelManifest]:
    out = {}
    keys = repo.keys()
    for key in keys:
        try:
            out[key] = repo.manifest(key)
        except ModelRepoError as exc:
            log.warning("model %s skipped: %s", key, exc)
    return out


def collections_of(config: RuntimeConfig) -> set[str]:
    return {e.args.milvus_args.collection_name for e in config.experiments() if isinstance(e.args, MatchArgs)}


def scene_collections(scene: Scene) -> set[str]:
    """Every Milvus and MongoDB collection a scene's experiments read."""
    out: set[str] = set()
    for layer in scene.layers:
        for e in layer.experiments:
            if isinstance(e.args, MatchArgs):
                out.add(e.args.milvus_args.collection_name)
            elif isinstance(e.args, SummaryArgs):
                out.add(e.args.mongo_collection)
    return out


async def validate_config(
    text: str, origin: str, *, repo: ModelRepository, vectors: CollectionCatalog
) -> RuntimeConfig:
    """Full validation: structure, then the model repository and Milvus. Raises ConfigError listing every problem;
    a Milvus that cannot be reached raises DependencyUnavailableError (the config is neither good nor bad yet)."""
    parsed = parse_config(text, origin)
    statuses: dict[str, CollectionStatus] = {}
    for name in sorted(collections_of(parsed)):
        statuses[name] = await vectors.describe(name)
    models = await asyncio.to_thread(load_models, repo)
    return check_environment(
        parsed, models=models, model_repo_root=str(repo.root), describe_collection=statuses.__getitem__
    )


class ConfigManager:
    def __init__(self, settings: Settings, vectors: CollectionCatalog, metrics: SearchMetrics) -> None:
        self.settings = settings
        self.repo = ModelRepository(settings.model_repo)
        self.vectors = vectors
        self.metrics = metrics
        self.current: RuntimeConfig | None = None
        self.last_error: str | None = None
        self.source_state: str = "not started"  # shown by /ready
        self._lock = asyncio.Lock()
        self._checked_at = 0.0

    async def apply(self, text: str, origin: str, *, save: bool = False) -> RuntimeConfig:
        source = origin.split(":", 1)[0]
        async with self._lock:
            try:
                cfg = await validate_config(text, origin, repo=self.repo, vectors=self.vectors)
            except ConfigError as exc:
                self.last_error = f"config from {origin} rejected: {exc}"
                self.metrics.config_rejections.labels(source).inc()
                log.error("%s (the config in force keeps serving)", self.last_error)
                raise
            self.current = cfg
            self._checked_at = time.monotonic()
            self.last_error = None
            self.metrics.config_reloads.labels(source).inc()
            log.info("config %s from %s applied: scenes %s", cfg.digest, origin, ", ".join(cfg.scenes))
            for warning in cfg.warnings:
                log.warning("config %s: %s", cfg.digest, warning)
            for name, reason in _disabled(cfg):
                log.warning("scene %s disabled: %s", name, reason)
            if save:
                self.save_last_good(text)
            return cfg

    async def recheck_disabled(self) -> None:
        """A disabled scene comes back once its model or collection appears (checked at most every few seconds)."""
        cfg = self.current
        if cfg is None or not any(s.disabled_reason for s in cfg.scenes.values()):
            return
        if time.monotonic() - self._checked_at < RECHECK_DISABLED_SECONDS:
            return
        self._checked_at = time.monotonic()
        async with self._lock:
            if self.current is not cfg:
                return
            try:
                fresh = await validate_config(cfg.text, cfg.origin, repo=self.repo, vectors=self.vectors)
            except Exception as exc:  # noqa: BLE001 - a failed re-check keeps the scene disabled, with the reason logged
                log.warning("re-check of disabled scenes failed: %s", exc)
                return
            if _disabled(fresh) != _disabled(cfg):
                log.info("scene availability changed: disabled now %s", _disabled(fresh) or "none")
                self.current = fresh

    def save_last_good(self, text: str) -> None:
        path = self.settings.search.last_good_config
        try:
            write_text_atomic(path, text)
        except OSError as exc:
            log.error("could not save the last good config to %s: %s", path, exc)

    def last_good_text(self) -> str | None:
        path: Path = self.settings.search.last_good_config
        return path.read_text(encoding="utf-8") if path.is_file() else None


def _disabled(cfg: RuntimeConfig) -> Iterable[tuple[str, str | None]]:
    return sorted((n, s.disabled_reason) for n, s in cfg.scenes.items() if s.disabled_reason)
