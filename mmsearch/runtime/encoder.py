"""In-process encoding with a model of the repository: the offline indexer's engine and the benchmarks' ceiling."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from mmsearch.model_repo import ModelKind, ModelManifest, ModelRepoError, ModelRepository
from mmsearch.runtime.image import ImagePreprocessor
from mmsearch.runtime.providers import create_session
from mmsearch.runtime.text import Role, TextPreprocessor


def l2_normalize(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return out


class OnnxEncoder:
    def __init__(self, repo: ModelRepository, manifest: ModelManifest, session: ort.InferenceSession) -> None:
        self.repo = repo
        self.manifest = manifest
        self.session = session
        self._text = TextPreprocessor.from_repo(repo, manifest.key) if manifest.tokenizer_file else None
        self._image = (
            ImagePreprocessor(manifest)
            if manifest.kind == ModelKind.CLIP_IMAGE and manifest.image_preprocessing
            else None
        )

    @classmethod
    def from_repo(
        cls, repo: ModelRepository, key: str, *, variant: str = "fp32", providers: list[str] | None = None, **opts: Any
    ) -> OnnxEncoder:
        manifest = repo.manifest(key)
        path: Path = repo.onnx_path(key, variant)
        return cls(repo, manifest, create_session(path, providers=providers, **opts))

    @property
    def dim(self) -> int:
        return self.manifest.embedding_dim

    def run(self, tensors: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
        """Run the graph on prepared inputs; returns L2-normalised embeddings [batch, dim]."""
        (out,) = self.session.run([self.manifest.embedding_output], dict(tensors))
        emb = np.asarray(out, dtype=np.float32)
        # Vectors are always unit length in the index, whether or not the graph folds the normalisation in.
        return emb if self.manifest.normalized else l2_normalize(emb)

    def encode_texts(
        self, texts: list[str], batch_size: int = 32, *, role: Role | None = None
    ) -> npt.NDArray[np.float32]:
        """Embeddings of `texts`; `role` applies the model's query or document prompt (see TextPreprocessor)."""
        if self._text is None:
            raise ModelRepoError(f"model {self.manifest.key!r} ({self.manifest.kind}) does not encode text")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Batches of similar length waste less compute on padding; results go back in input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self.run(self._text.prep([texts[i] for i in idx], role=role).tensors)
        return out

    def encode_images(self, images: list[bytes], batch_size: int = 16) -> npt.NDArray[np.float32]:
        if self._image is None:
            raise ModelRepoError(f"model {self.manifest.key!r} ({self.manifest.kind}) does not encode images")
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = [
            self.run({self._image.input_name: self._image.prep(images[s : s + batch_size])})
            for s in range(0, len(images), batch_size)
        ]
        return np.concatenate(chunks)
