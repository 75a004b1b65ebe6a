"""A transformers CLIPModel -> two ONNX graphs in one embedding space: `<key>-text` and `<key>-image`.

Text tower: input_ids, attention_mask (int64 [batch, sequence]) -> `sentence_embedding` [batch, proj_dim].
Image tower: pixel_values (float32 [batch, 3, H, W]) -> `sentence_embedding` [batch, proj_dim].
Both outputs are L2-normalised inside the graph. The image preprocessing is read from the model's
preprocessor_config.json and recorded, so the online side (mmsearch.runtime.image) reproduces it without
transformers. Both entries are published together or not at all.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from mmsearch.model_repo import (
    ImagePreprocessing,
    ModelKind,
    ModelManifest,
    ModelRepository,
    ModelSource,
    Parity,
    TensorSpec,
    validate_key,
    write_manifest,
)
from offline.export.errors import ExportError
from offline.export.graph_io import declare_output_shapes
from offline.export.parity import PARITY_TEXTS, ParityCase, enforce_fp32
from offline.export.provenance import export_onnx, export_record
from offline.export.source import WEIGHT_FILES, require_files, resolve_source
from offline.export.text_inputs import normalizer_lowercases, tokenize
from offline.export.variants import VariantRequest, VariantResult, write_variants

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
EMBEDDING = "sentence_embedding"
# Public-domain / CC0 photos shipped with scikit-image: a portrait, a cat, a cup, a rocket.
PARITY_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
TEXT_PARITY = f"{len(PARITY_TEXTS)} texts of mixed length, English and Chinese, one padded batch"
IMAGE_PARITY = f"{len(PARITY_PHOTOS)} scikit-image photos ({', '.join(PARITY_PHOTOS)}) via CLIPImageProcessor"
EXPORT_TEXTS = ["tracing sample", "a second, somewhat longer sample text"]


def tower_keys(key: str) -> tuple[str, str]:
    return f"{key}-text", f"{key}-image"


def inspect_folder(folder: Path) -> dict[str, Any]:
    """Check that `folder` is a transformers CLIP model; return its config.json. Names the first missing file."""
    what = "CLIP model"
    require_files(
        folder,
        what,
        [
            ("config.json",),
            (*WEIGHT_FILES, "model.safetensors.index.json"),
            ("tokenizer.json", "vocab.json"),
            ("preprocessor_config.json",),
        ],
    )
    if not (folder / "tokenizer.json").is_file():
        require_files(folder, what, [("merges.txt",)])
    config: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "clip":
        raise ExportError(
            f"{folder} is not a CLIP model folder: config.json says model_type {config.get('model_type')!r}, not "
            f"'clip' (sentence-transformers text models export with `mmsearch export sbert`)"
        )
    return config


def read_image_preprocessing(folder: Path) -> ImagePreprocessing:
    cfg: dict[str, Any] = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    size = cfg.get("size", 224)
    crop = cfg.get("crop_size", size)
    shortest = size.get("shortest_edge") if isinstance(size, dict) else size
    if isinstance(crop, dict):
        if crop.get("height") != crop.get("width"):
            raise ExportError(f"preprocessor_config.json: non-square crop {crop} is not supported")
        crop = crop.get("height")
    if not isinstance(shortest, int) or not isinstance(crop, int):
        raise ExportError(f"preprocessor_config.json: expected size.shortest_edge and crop_size, got {size}, {crop}")
    for flag in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
        if cfg.get(flag, True) is not True:
            raise ExportError(f"preprocessor_config.json: {flag}=false is not supported by the online preprocessing")
    resample = Image.Resampling(int(cfg.get("resample", Image.Resampling.BICUBIC))).name.lower()
    return ImagePreprocessing(
        resize_shortest_edge=shortest,
        crop_size=crop,
        resample=resample,
        rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
        mean=[float(v) for v in cfg["image_mean"]],
        std=[float(v) for v in cfg["image_std"]],
        convert_rgb=bool(cfg.get("do_convert_rgb", True)),
    )


def export_clip(
    source: str,
    repo: ModelRepository,
    key: str,
    *,
    force: bool = False,
    variants: VariantRequest | None = None,
    revision: str | None = None,
) -> list[ModelManifest]:
    """Export both towers as `<key>-text` and `<key>-image`; raises ExportError (nothing published) on failure."""
    text_key, image_key = tower_keys(validate_key(key))
    validate_key(image_key)
    if not force:
        for k in (text_key, image_key):
            if k in repo:
                raise ExportError(f"model {k!r} already exists in {repo.root}; pass --force to replace it")
    resolved = resolve_source(source, revision=revision)
    config = inspect_folder(resolved.folder)
    preprocessing = read_image_preprocessing(resolved.folder)
    request = variants or VariantRequest()

    from transformers import AutoTokenizer, CLIPModel

    log.info("loading CLIP model from %s", resolved.folder)
    model: Any = CLIPModel.from_pretrained(str(resolved.folder))
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(resolved.folder))
    names = list(tokenizer.model_input_names)
    max_len = int(config.get("text_config", {}).get("max_position_embeddings", 77))
    common = {"source": resolved.record}

    # Nested writers: the image entry is published only once the text entry is complete, and a failure in
    # either leaves neither visible.
    with repo.writer(text_key, force=force) as text_dir, repo.writer(image_key, force=force) as image_dir:
        text_manifest = _export_text(
            model, tokenizer, resolved.folder, text_dir, key=text_key, names=names, max_len=max_len, request=request
        )
        text_manifest = text_manifest.model_copy(update={"pairs_with": image_key, **common})
        image_manifest = _export_image(
            model, resolved.folder, image_dir, key=image_key, preprocessing=preprocessing, request=request
        )
        image_manifest = image_manifest.model_copy(update={"pairs_with": text_key, **common})
        if text_manifest.embedding_dim != image_manifest.embedding_dim:
            raise ExportError(
                f"text tower is {text_manifest.embedding_dim}-d but image tower {image_manifest.embedding_dim}-d"
            )
        write_manifest(image_dir, ModelManifest.model_validate(image_manifest.model_dump()))
        write_manifest(text_dir, ModelManifest.model_validate(text_manifest.model_dump()))
    log.info("published %s and %s (%d-d) in %s", text_key, image_key, text_manifest.embedding_dim, repo.root)
    return [text_manifest, image_manifest]


def _export_text(
    model: Any,
    tokenizer: Any,
    folder: Path,
    staging: Path,
    *,
    key: str,
    names: list[str],
    max_len: int,
    request: VariantRequest,
) -> ModelManifest:
    import torch

    src = folder / TOKENIZER_FILE
    if src.is_file():
        shutil.copyfile(src, staging / TOKENIZER_FILE)
    else:
        tokenizer.backend_tokenizer.save(str(staging / TOKENIZER_FILE))
    spec = json.loads((staging / TOKENIZER_FILE).read_text(encoding="utf-8")).get("normalizer")
    draft = ModelManifest(
        key=key,
        kind=ModelKind.CLIP_TEXT,
        inputs=[TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in names],
        outputs=[],
        embedding_dim=0,
        normalized=True,
        max_seq_len=max_len,
        do_lower_case=normalizer_lowercases(spec),
        tokenizer_file=TOKENIZER_FILE,
        source=ModelSource(),
    )
    inputs = tokenize(staging / TOKENIZER_FILE, draft, PARITY_TEXTS)
    theirs = tokenizer(PARITY_TEXTS, padding=True, truncation=True, max_length=max_len, return_tensors="np")
    for name in names:
        if not np.array_equal(np.asarray(theirs[name]), inputs[name]):
            raise ExportError(f"{key}: tokenizer.json tokenises differently from the model's tokenizer ({name})")

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            feeds = dict(zip(names, tensors, strict=True))
            pooled = self.clip.text_model(**feeds).pooler_output
            return torch.nn.functional.normalize(self.clip.text_projection(pooled), dim=-1)

    tower = TextTower().eval()
    sample = tokenize(staging / TOKENIZER_FILE, draft, EXPORT_TEXTS)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    return _finish(
        tower,
        draft,
        staging,
        names=names,
        inputs=inputs,
        sample=sample,
        axes=axes,
        description=TEXT_PARITY,
        request=request,
    )


def _export_image(
    model: Any, folder: Path, staging: Path, *, key: str, preprocessing: ImagePreprocessing, request: VariantRequest
) -> ModelManifest:
    import torch

    size = preprocessing.crop_size
    draft = ModelManifest(
        key=key,
        kind=ModelKind.CLIP_IMAGE,
        inputs=[TensorSpec(name="pixel_values", dtype="float32", shape=["batch", 3, size, size])],
        outputs=[],
        embedding_dim=0,
        normalized=True,
        image_preprocessing=preprocessing,
        source=ModelSource(),
    )
    shutil.copyfile(folder / "preprocessor_config.json", staging / "preprocessor_config.json")
    photos = parity_photos()
    pixels = transformers_pixels(folder, photos)
    # The online side preprocesses from the manifest alone; how far it lands from transformers is recorded.
    from mmsearch.runtime.image import ImagePreprocessor

    online_diff = float(np.max(np.abs(ImagePreprocessor(draft).prep_pil(photos) - pixels)))
    log.info("%s: runtime image preprocessing vs CLIPImageProcessor max abs diff %.3g", key, online_diff)

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            pooled = self.clip.vision_model(pixel_values=pixel_values).pooler_output
            return torch.nn.functional.normalize(self.clip.visual_projection(pooled), dim=-1)

    tower = ImageTower().eval()
    inputs = {"pixel_values": pixels}
    sample = {"pixel_values": pixels[:1]}
    axes = {"pixel_values": {0: "batch"}}
    manifest = _finish(
        tower,
        draft,
        staging,
        names=["pixel_values"],
        inputs=inputs,
        sample=sample,
        axes=axes,
        description=IMAGE_PARITY,
        request=request,
    )
    return manifest.model_copy(
        update={"export": {**manifest.export, "runtime_preprocessing_max_abs_diff": online_diff}}
    )


def parity_photos() -> list[Image.Image]:
    from skimage import data

    return [Image.fromarray(getattr(data, name)()) for name in PARITY_PHOTOS]


def transformers_pixels(folder: Path, photos: list[Image.Image]) -> npt.NDArray[np.float32]:
    """Photos through transformers' own CLIP image processor (PIL backend; needs no torchvision)."""
    import transformers

    # transformers 5 names the PIL backend CLIPImageProcessorPil; before, CLIPImageProcessor was that class.
    processor_cls: Any = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor = processor_cls.from_pretrained(str(folder))
    return np.asarray(processor(images=photos, return_tensors="np")["pixel_values"], dtype=np.float32)


def _finish(
    tower: Any,
    draft: ModelManifest,
    staging: Path,
    *,
    names: list[str],
    inputs: dict[str, npt.NDArray[Any]],
    sample: dict[str, npt.NDArray[Any]],
    axes: dict[str, dict[int, str]],
    description: str,
    request: VariantRequest,
) -> ModelManifest:
    """Reference outputs, export (traced on `sample`, not the parity batch), parity, variants."""
    import torch

    with torch.inference_mode():
        # Reference first: the legacy exporter leaves the in-memory model giving different outputs afterwards.
        reference = tower(*(torch.from_numpy(inputs[n]) for n in names)).float().numpy()
    dim = int(reference.shape[1])
    path = staging / "model.onnx"
    log.info("tracing %s", draft.key)
    export_onnx(
        tower,
        tuple(torch.from_numpy(sample[n]) for n in names),
        path,
        input_names=names,
        output_names=[EMBEDDING],
        dynamic_axes={**axes, EMBEDDING: {0: "batch"}},
    )
    outputs = [TensorSpec(name=EMBEDDING, dtype="float32", shape=["batch", dim])]
    declare_output_shapes(path, outputs)
    case = ParityCase(inputs, reference, EMBEDDING, description)
    parity = case.check("fp32", path)
    log.info("%s parity fp32: max abs diff %.2e, min cosine %.7f", draft.key, parity.max_abs_diff, parity.min_cosine)
    enforce_fp32(parity, draft.key)
    extra: list[VariantResult] = write_variants(path, request, case)
    parities: list[Parity] = [parity, *(v.parity for v in extra)]
    return draft.model_copy(
        update={
            "outputs": outputs,
            "embedding_dim": dim,
            "variants": {v.name: v.file for v in extra},
            "parity": parities,
            "export": export_record(tower=draft.kind.value, variant_settings={v.name: v.settings for v in extra}),
        }
    )
