"""The model repository: one folder per model key, shared by export, indexing and the online services.

Layout::

    models/
      <key>/
        manifest.json      # ModelManifest, written last: a folder without it is not a model
        model.onnx         # fp32 graph (variants such as model.int8.onnx beside it)
        tokenizer.json     # text models (Hugging Face fast tokenizer)

Writes go to a hidden staging folder that is renamed into place only once complete, so an interrupted
export never leaves a half model visible to readers.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ModelRepoError(Exception):
    """Base for model repository problems; messages say what to fix."""


class ModelNotFoundError(ModelRepoError, KeyError):
    def __init__(self, key: str, available: list[str], root: Path) -> None:
        self.key = key
        self.available = available
        have = ", ".join(available) if available else "none"
        super().__init__(f"model {key!r} is not in the model repository {root} (available: {have})")

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


class ModelExistsError(ModelRepoError):
    pass


class InvalidManifestError(ModelRepoError):
    pass


class ModelKind(StrEnum):
    TEXT_EMBEDDING = "text_embedding"  # sentence-transformers model (also multilingual CLIP query towers)
    CLIP_TEXT = "clip_text"
    CLIP_IMAGE = "clip_image"
    # Scores (query, document) pairs: output `logits` [batch, labels]; the manifest says how logits become a score.
    CROSS_ENCODER = "cross_encoder"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Frozen):
    name: str
    dtype: str  # numpy dtype name
    # Dimensions; a string is a dynamic axis ("batch", "sequence").
    shape: list[int | str]


class ImagePreprocessing(_Frozen):
    """What CLIPImageProcessor does, recorded so the online side reproduces it without transformers."""

    resize_shortest_edge: int
    crop_size: int
    resample: str = "bicubic"  # PIL resampling filter name
    rescale_factor: float = 1 / 255
    mean: list[float]
    std: list[float]
    convert_rgb: bool = True


class ModelSource(_Frozen):
    hub_id: str | None = None
    revision: str | None = None
    folder: str | None = None
    weights_sha256: str | None = None  # of the weights file(s) read, for folder sources
    note: str | None = None  # e.g. "random weights from config" in tests


class RankAgreement(_Frozen):
    """How much of the fp32 graph's top k a lower-precision cross-encoder keeps on a ranking sample, and the gate
    its export was held to (offline/export/rank_agreement.py)."""

    k: int
    mean_overlap: float  # mean over the sample's queries of |top k (variant) & top k (fp32)| / k
    min_overlap: float
    queries: int
    inputs: str  # which sample, e.g. "100 queries x 20 documents from faq-top20.jsonl"
    gate: float  # the export refused a variant below this mean overlap


class Parity(_Frozen):
    variant: str  # "fp32", "int8", "fp16"; "fp32:query-prompt" / "fp32:document-prompt" for prompted texts
    max_abs_diff: float
    min_cosine: float
    n_inputs: int
    inputs: str  # what was compared, e.g. "8 texts, en+zh, padded batch"
    rank: RankAgreement | None = None  # a cross-encoder's lower-precision variants only


class ModelManifest(_Frozen):
    format_version: int = MANIFEST_FORMAT
    key: str
    kind: ModelKind
    onnx_file: str = "model.onnx"
    # Other precisions of the same model: {"int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}.
    variants: dict[str, str] = Field(default_factory=dict)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    embedding_output: str = "sentence_embedding"
    embedding_dim: int
    normalized: bool
    max_seq_len: int | None = None
    do_lower_case: bool | None = None
    tokenizer_file: str | None = None
    image_preprocessing: ImagePreprocessing | None = None
    # Key of the model whose embedding space this one shares (CLIP text <-> image towers).
    pairs_with: str | None = None
    # Asymmetric models (e5, bge, ...) expect a prefix before queries and before documents ("query: ",
    # "passage: "): the tokenizer service applies the query prompt, `index` / `ingest` the document prompt.
    query_prompt: str | None = None
    document_prompt: str | None = None
    # Cross-encoders: how the logits of one pair become its score. "none": logits[score_label] as is; "sigmoid":
    # its logistic; "softmax": the probability of label score_label over all labels.
    activation: Literal["none", "sigmoid", "softmax"] | None = None
    score_label: int | None = None
    source: ModelSource
    export: dict[str, Any] = Field(default_factory=dict)
    parity: list[Parity] = Field(default_factory=list)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def validate_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise ModelRepoError(
            f"invalid model key {key!r}: use letters, digits, '.', '_' or '-' (max 128), starting alphanumeric"
        )
    return key


class ModelRepository:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def keys(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()
        )

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def manifest(self, key: str) -> ModelManifest:
        folder = self.path(key)
        file = folder / MANIFEST_NAME
        if not file.is_file():
            raise ModelNotFoundError(key, self.keys(), self.root)
        try:
            return ModelManifest.model_validate_json(file.read_bytes())
        except ValidationError as exc:
            raise InvalidManifestError(f"{file} is not a valid model manifest: {exc}") from exc

    def manifests(self) -> list[ModelManifest]:
        return [self.manifest(k) for k in self.keys()]

    def onnx_path(self, key: str, variant: str = "fp32") -> Path:
        m = self.manifest(key)
        if variant == "fp32":
            return self.path(key) / m.onnx_file
        if variant not in m.variants:
            have = ", ".join(["fp32", *m.variants]) or "fp32"
            raise ModelRepoError(f"model {key!r} has no {variant!r} variant (has: {have})")
        return self.path(key) / m.variants[variant]

    @contextmanager
    def writer(self, key: str, *, force: bool = False) -> Iterator[Path]:
        """Yield a staging folder; on success, publish it as `key` atomically.

        The caller writes its files and, last, the manifest (see `write_manifest`). On any exception
        the staging folder is removed and the existing model, if any, is untouched.
        """
        validate_key(key)
        target = self.root / key
        if target.exists() and not force:
            raise ModelExistsError(f"model {key!r} already exists in {self.root}; pass --force to replace it")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".staging-{key}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            yield staging
            if not (staging / MANIFEST_NAME).is_file():
                raise ModelRepoError(f"export of {key!r} wrote no {MANIFEST_NAME}; nothing published")
            trash = None
            if target.exists():
                trash = self.root / f".trash-{key}-{uuid.uuid4().hex[:8]}"
                target.rename(trash)
            staging.rename(target)
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def write_manifest(folder: Path, manifest: ModelManifest) -> None:
    data = manifest.model_dump(mode="json")
    # Prompts are left out when unset, so a repository without prompted models stays readable by an older server
    # (whose manifest model forbids unknown keys) during a rolling upgrade.
    for optional in ("query_prompt", "document_prompt"):
        if data.get(optional) is None:
            data.pop(optional, None)
    (folder / MANIFEST_NAME).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
