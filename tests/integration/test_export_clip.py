"""Export of both CLIP towers (tiny config, random weights, real tokenizer and preprocessor config)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from PIL import Image

from mmsearch.model_repo import ModelKind, ModelRepository
from mmsearch.runtime.encoder import OnnxEncoder
from offline.export.parity import FP32_MIN_COSINE
from tests.fixtures.models import CLIP_CONFIG_DIR, TINY_CLIP_IMAGE, TINY_CLIP_TEXT

pytestmark = pytest.mark.integration


def _min_cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())


def _png(array: np.ndarray[Any, Any]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_text_tower_manifest(model_repo: ModelRepository) -> None:
    m = model_repo.manifest(TINY_CLIP_TEXT)
    assert m.kind == ModelKind.CLIP_TEXT
    assert m.input_names == ["input_ids", "attention_mask"]
    assert m.output_names == ["sentence_embedding"]
    assert m.embedding_dim == 16
    assert m.normalized is True
    assert m.max_seq_len == 77
    assert m.do_lower_case is True  # CLIP's tokenizer.json lower-cases in its normaliser
    assert m.pairs_with == TINY_CLIP_IMAGE
    assert m.tokenizer_file == "tokenizer.json"
    assert m.parity[0].variant == "fp32"
    assert m.parity[0].min_cosine >= FP32_MIN_COSINE


def test_image_tower_manifest_records_the_preprocessing(model_repo: ModelRepository) -> None:
    m = model_repo.manifest(TINY_CLIP_IMAGE)
    config = json.loads((CLIP_CONFIG_DIR / "preprocessor_config.json").read_text())
    assert m.kind == ModelKind.CLIP_IMAGE
    assert m.input_names == ["pixel_values"]
    assert m.inputs[0].shape == ["batch", 3, 224, 224]
    assert m.pairs_with == TINY_CLIP_TEXT
    assert m.embedding_dim == model_repo.manifest(TINY_CLIP_TEXT).embedding_dim
    pre = m.image_preprocessing
    assert pre is not None
    assert pre.resize_shortest_edge == config["size"]["shortest_edge"]
    assert pre.crop_size == config["crop_size"]["height"]
    assert pre.resample == "bicubic"
    assert pre.mean == config["image_mean"]
    assert pre.std == config["image_std"]
    assert pre.rescale_factor == pytest.approx(1 / 255)
    assert m.parity[0].min_cosine >= FP32_MIN_COSINE
    assert m.parity[0].n_inputs == 4
    assert m.export["runtime_preprocessing_max_abs_diff"] < 1e-5


def test_graphs_have_dynamic_batch_axes(model_repo: ModelRepository) -> None:
    text = onnx.load(str(model_repo.onnx_path(TINY_CLIP_TEXT))).graph
    image = onnx.load(str(model_repo.onnx_path(TINY_CLIP_IMAGE))).graph
    for value in text.input:
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert image.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for graph in (text, image):
        dims = [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
        assert dims == ["batch", 16]


def test_text_tower_matches_pytorch_on_new_texts(model_repo: ModelRepository, tiny_clip_folder: Path) -> None:
    import torch
    from transformers import AutoTokenizer, CLIPModel

    texts = ["A Photo Of A Dog", "一张猫的照片", "word " * 100]  # the last one is truncated at 77 tokens
    model = CLIPModel.from_pretrained(str(tiny_clip_folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_clip_folder))
    batch = tok(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.inference_mode():
        expected = model.get_text_features(**batch).pooler_output.numpy()
    got = OnnxEncoder.from_repo(model_repo, TINY_CLIP_TEXT, providers=["cpu"]).encode_texts(texts)
    assert _min_cosine(expected, got) >= FP32_MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_image_tower_matches_pytorch_on_encoded_photos(model_repo: ModelRepository, tiny_clip_folder: Path) -> None:
    """From encoded bytes through the online preprocessing, vs transformers' processor + PyTorch."""
    import torch
    from skimage import data
    from transformers import CLIPModel

    from offline.export.clip import transformers_pixels

    arrays = [data.camera(), data.astronaut()[:300, :200], data.coins()]  # grayscale and non-square included
    photos = [Image.fromarray(a).convert("RGB") for a in arrays]
    model = CLIPModel.from_pretrained(str(tiny_clip_folder)).eval()
    with torch.inference_mode():
        pixels = torch.from_numpy(transformers_pixels(tiny_clip_folder, photos))
        expected = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
    got = OnnxEncoder.from_repo(model_repo, TINY_CLIP_IMAGE, providers=["cpu"]).encode_images([_png(a) for a in arrays])
    assert got.shape == (3, 16)
    assert _min_cosine(expected, got) >= 0.9999


def test_existing_towers_are_refused_without_force(model_repo: ModelRepository, tiny_clip_folder: Path) -> None:
    from offline.export.clip import export_clip
    from offline.export.errors import ExportError

    before = model_repo.manifest(TINY_CLIP_TEXT)
    with pytest.raises(ExportError, match="already exists"):
        export_clip(str(tiny_clip_folder), model_repo, "tiny-clip")
    assert model_repo.manifest(TINY_CLIP_TEXT) == before


def test_failing_image_tower_publishes_neither_tower(
    tmp_path: Path, tiny_clip_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from offline.export import clip
    from offline.export.errors import ExportError

    # NaN photos stand in for an image tower that does not reproduce PyTorch; the text tower is already done.
    monkeypatch.setattr(
        clip,
        "transformers_pixels",
        lambda folder, photos: np.full((len(photos), 3, 224, 224), np.nan, dtype=np.float32),
    )
    repo = ModelRepository(tmp_path / "repo")
    with pytest.raises(ExportError, match="parity check"):
        clip.export_clip(str(tiny_clip_folder), repo, "c")
    assert repo.keys() == []
    assert list(repo.root.iterdir()) == []
