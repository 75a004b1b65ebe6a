"""`mmsearch export clip` on the full ViT-B/32 architecture (real config and tokenizer, random weights).

The model is saved as a folder exactly as a hub download lays it out, so the exporter takes the code path
real weights take.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsearch.cli.main import cli
from mmsearch.model_repo import ModelKind, ModelRepository
from offline.export.parity import FP32_MIN_COSINE
from tests.fixtures.models import CLIP_CONFIG_DIR, write_clip_folder

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_export_clip_vit_b32_both_towers(tmp_path: Path) -> None:
    from transformers import CLIPConfig

    source = write_clip_folder(tmp_path / "clip-vit-base-patch32", CLIPConfig.from_pretrained(str(CLIP_CONFIG_DIR)))
    repo = ModelRepository(tmp_path / "models")
    result = CliRunner().invoke(
        cli, ["export", "clip", "--source", str(source), "--key", "clip-b32", "--repo", str(repo.root), "--int8"]
    )
    assert result.exit_code == 0, result.output
    assert repo.keys() == ["clip-b32-image", "clip-b32-text"]

    text, image = repo.manifest("clip-b32-text"), repo.manifest("clip-b32-image")
    assert (text.kind, image.kind) == (ModelKind.CLIP_TEXT, ModelKind.CLIP_IMAGE)
    assert text.embedding_dim == image.embedding_dim == 512
    assert text.max_seq_len == 77
    assert (text.pairs_with, image.pairs_with) == ("clip-b32-image", "clip-b32-text")
    assert image.inputs[0].shape == ["batch", 3, 224, 224]
    assert text.source.weights_sha256 == image.source.weights_sha256
    for m in (text, image):
        fp32, int8 = m.parity
        assert fp32.variant == "fp32"
        assert fp32.min_cosine >= FP32_MIN_COSINE
        assert int8.variant == "int8"
        assert m.variants == {"int8": "model.int8.onnx"}
