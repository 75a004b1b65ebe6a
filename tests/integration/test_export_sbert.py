"""Export of the real all-MiniLM-L6-v2 (a sentence-transformers folder) to ONNX, checked against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from mmsearch.model_repo import ModelKind, ModelRepository
from mmsearch.runtime.encoder import OnnxEncoder
from offline.export.parity import FP32_MIN_COSINE
from tests.fixtures.models import MINILM_KEY, hf_cache_snapshot, minilm_source

pytestmark = pytest.mark.integration


def test_manifest_describes_the_exported_graph(model_repo: ModelRepository) -> None:
    m = model_repo.manifest(MINILM_KEY)
    assert m.kind == ModelKind.TEXT_EMBEDDING
    assert m.input_names == ["input_ids", "token_type_ids", "attention_mask"]
    assert m.output_names == ["sentence_embedding", "token_embeddings"]
    assert m.embedding_dim == 384
    assert m.normalized is True
    assert m.max_seq_len == 256
    assert m.do_lower_case is True  # BertNormalizer lowercases inside tokenizer.json
    assert m.source.folder == str(minilm_source().resolve())
    assert m.source.weights_sha256 is not None
    assert len(m.source.weights_sha256) == 64
    assert m.export["opset"] == 17
    assert m.export["torch"].startswith("2.")
    assert "transformers" in m.export


def test_onnx_graph_has_dynamic_batch_and_sequence_axes(model_repo: ModelRepository) -> None:
    graph = onnx.load(str(model_repo.onnx_path(MINILM_KEY))).graph
    for value in graph.input:
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], value.name
    outputs = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.output}
    assert outputs["sentence_embedding"] == ["batch", 384]
    assert outputs["token_embeddings"] == ["batch", "sequence", 384]


def test_fp32_parity_is_recorded_and_passes(model_repo: ModelRepository) -> None:
    fp32 = next(p for p in model_repo.manifest(MINILM_KEY).parity if p.variant == "fp32")
    assert fp32.min_cosine >= FP32_MIN_COSINE
    assert fp32.max_abs_diff < 1e-4
    assert fp32.n_inputs == 8


def test_tokenizer_json_sits_beside_the_graph(model_repo: ModelRepository) -> None:
    m = model_repo.manifest(MINILM_KEY)
    assert m.tokenizer_file is not None
    copied = json.loads((model_repo.path(MINILM_KEY) / m.tokenizer_file).read_text(encoding="utf-8"))
    original = json.loads((minilm_source() / "tokenizer.json").read_text(encoding="utf-8"))
    assert copied == original


def test_onnx_matches_sentence_transformers_encode_on_new_texts(model_repo: ModelRepository) -> None:
    """Texts and batch shapes the export never saw: the runtime's path reproduces SentenceTransformer.encode."""
    from sentence_transformers import SentenceTransformer

    texts = ["where is the town hall", "我想知道明天的天气", "x " * 400, "Permit fees for a small extension"]
    expected = SentenceTransformer(str(minilm_source()), device="cpu").encode(texts, convert_to_numpy=True)
    got = OnnxEncoder.from_repo(model_repo, MINILM_KEY, providers=["cpu"]).encode_texts(texts, batch_size=3)
    cos = np.sum(expected * got, axis=1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1))
    assert float(cos.min()) >= FP32_MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_an_embedding(model_repo: ModelRepository) -> None:
    encoder = OnnxEncoder.from_repo(model_repo, MINILM_KEY, providers=["cpu"])
    alone = encoder.encode_texts(["short"])
    padded = encoder.encode_texts(["short", "a much longer text that forces padding of the short one"], batch_size=2)
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


def test_int8_variant_has_its_own_parity(model_repo: ModelRepository) -> None:
    m = model_repo.manifest(MINILM_KEY)
    assert m.variants == {"int8": "model.int8.onnx"}
    assert model_repo.onnx_path(MINILM_KEY, "int8").is_file()
    int8 = next(p for p in m.parity if p.variant == "int8")
    assert 0.9 < int8.min_cosine < 1.0
    assert int8.max_abs_diff > 0


def test_failed_parity_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from offline.export import parity
    from offline.export.errors import ExportError
    from offline.export.sbert import export_sbert

    # A threshold no graph can meet stands in for a broken export; the real check still runs.
    monkeypatch.setattr(parity, "FP32_MIN_COSINE", 1.5)
    repo = ModelRepository(tmp_path)
    with pytest.raises(ExportError, match=r"parity check.*nothing was published"):
        export_sbert(str(minilm_source()), repo, "broken")
    assert repo.keys() == []
    assert list(repo.root.iterdir()) == []


def test_folder_without_tokenizer_json_gets_one_from_the_fast_tokenizer(tmp_path: Path) -> None:
    import shutil

    from offline.export.sbert import export_sbert

    source = tmp_path / "minilm-vocab-only"
    shutil.copytree(minilm_source(), source, ignore=shutil.ignore_patterns("tokenizer.json"))
    repo = ModelRepository(tmp_path / "repo")
    m = export_sbert(str(source), repo, "m")
    assert (repo.path("m") / "tokenizer.json").is_file()
    assert m.parity[0].min_cosine >= FP32_MIN_COSINE  # the tokenisation check inside the export passed too


def test_hub_id_is_resolved_through_the_hugging_face_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id takes the download path; offline mode and a cache laid out as a download leaves it serve it."""
    import shutil

    from huggingface_hub import constants

    from offline.export.sbert import export_sbert

    cache = tmp_path / "hf-cache"
    snapshot = hf_cache_snapshot(cache, "sentence-transformers/all-MiniLM-L6-v2")
    shutil.copytree(minilm_source(), snapshot)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    repo = ModelRepository(tmp_path / "repo")
    m = export_sbert("sentence-transformers/all-MiniLM-L6-v2", repo, "hub")
    assert m.source.hub_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert m.source.revision == snapshot.name
    assert m.source.weights_sha256 == model_weights_sha()


def model_weights_sha() -> str:
    from offline.export.source import file_sha256

    return file_sha256(minilm_source() / "model.safetensors")
