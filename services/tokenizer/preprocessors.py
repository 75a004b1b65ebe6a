"""Preprocessors of the models in the repository, loaded once per key and reloaded when the model is re-exported."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from mmsearch.model_repo import MANIFEST_NAME, ModelKind, ModelManifest, ModelRepoError, ModelRepository
from mmsearch.runtime.image import ImagePreprocessor
from mmsearch.runtime.text import TextPreprocessor

log = logging.getLogger(__name__)


class UnknownModelError(LookupError):
    def __init__(self, key: str, available: list[str]) -> None:
        self.key, self.available = key, available
        super().__init__(key)


class WrongKindError(ValueError):
    pass


@dataclass(frozen=True)
class Loaded:
    version: int  # manifest mtime: a re-export publishes a new manifest, so the cache entry is stale
    checked: float  # when the version was last compared with the repository (monotonic)
    manifest: ModelManifest
    text: TextPreprocessor | None
    image: ImagePreprocessor | None


class PreprocessorCache:
    """Thread-safe: called from the service's worker threads."""

    # A cached preprocessor is checked against the repository at most this often (a stat per call is measurable).
    RECHECK_SECONDS = 1.0

    def __init__(self, repo: ModelRepository, *, max_image_pixels: int) -> None:
        self.repo = repo
        self.max_image_pixels = max_image_pixels
        self._lock = threading.Lock()
        self._cache: dict[str, Loaded] = {}

    def model_keys(self) -> list[str]:
        return self.repo.keys()

    def is_loaded(self, key: str) -> bool:
        return key in self._cache

    def get(self, key: str) -> Loaded:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit.checked < self.RECHECK_SECONDS:
            return hit
        try:
            version = (self.repo.path(key) / MANIFEST_NAME).stat().st_mtime_ns
        except (OSError, ModelRepoError):
            with self._lock:
                self._cache.pop(key, None)
            raise UnknownModelError(key, self.repo.keys()) from None
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit.version == version:
                self._cache[key] = Loaded(version, now, hit.manifest, hit.text, hit.image)
                return hit
            loaded = self._load(key, version, now)
            self._cache[key] = loaded
            return loaded

    def _load(self, key: str, version: int, now: float) -> Loaded:
        manifest = self.repo.manifest(key)
        text = TextPreprocessor.from_repo(self.repo, key) if manifest.tokenizer_file else None
        image = (
            ImagePreprocessor(manifest, max_pixels=self.max_image_pixels)
            if manifest.kind == ModelKind.CLIP_IMAGE
            else None
        )
        log.info("preprocessor for %r (%s) loaded", key, manifest.kind)
        return Loaded(version=version, checked=now, manifest=manifest, text=text, image=image)

    def text(self, key: str) -> TextPreprocessor:
        loaded = self.get(key)
        if loaded.text is None:
            raise WrongKindError(
                f"model {key!r} is a {loaded.manifest.kind} model without a tokenizer: it does not take text"
                + ("; send its images to PreprocessImages" if loaded.image else "")
            )
        return loaded.text

    def pairs(self, key: str) -> TextPreprocessor:
        """The text preprocessor of a cross-encoder (the only kind that scores (query, document) pairs)."""
        loaded = self.get(key)
        if loaded.manifest.kind != ModelKind.CROSS_ENCODER or loaded.text is None:
            raise WrongKindError(
                f"model {key!r} is a {loaded.manifest.kind} model, not a cross_encoder: it does not score "
                "(query, document) pairs" + ("; send its texts to Tokenize" if loaded.text else "")
            )
        return loaded.text

    def image(self, key: str) -> ImagePreprocessor:
        loaded = self.get(key)
        if loaded.image is None:
            raise WrongKindError(
                f"model {key!r} is a {loaded.manifest.kind} model, not a clip_image tower: it does not take images"
                + ("; send its texts to Tokenize" if loaded.text else "")
            )
        return loaded.image

    def forget_missing(self) -> list[str]:
        """Drop cache entries whose folder left the repository; returns their keys."""
        present = set(self.repo.keys())
        with self._lock:
            gone = [k for k in self._cache if k not in present]
            for k in gone:
                del self._cache[k]
        return gone
