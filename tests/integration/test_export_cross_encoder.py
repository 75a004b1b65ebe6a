"""`mmsearch export cross-encoder` on config-built `BertForSequenceClassification` models with random weights and
the real MiniLM tokenizer (no cross-encoder weights exist offline): the ONNX graph must order pairs exactly as
PyTorch does, with logits within 1e-4, on pairs it was not checked on at export. The real
`cross-encoder/ms-marco-MiniLM-L-6-v2` goes through the same path where the Hugging Face hub answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mmsearch.cli.main import cli
from mmsearch.model_repo import ModelKind, ModelRepository
from mmsearch.runtime.pair_scores import pair_scores
from mmsearch.runtime.text import TextPreprocessor
from offline.export.cross_encoder import FP32_MAX_ABS_DIFF, export_cross_encoder
from offline.export.errors import ExportError
from offline.export.variants import VariantRequest
from tests.fixtures.models import torch_pair_logits, write_classifier

pytestmark = pytest.mark.integration

MS_MARCO = "cross-encoder/ms-marco-MiniLM-L-6-v2"
QUERY = "when does the building permit office open?"
DOCS = [
    "The permit office opens at eight on weekdays.",
    "Cats sleep most of the day.",
    "Apply for a permit online; opening hours are listed on the city's site. " * 30,  # truncated
    "营业时间为周一至周五。",
    "",
]


def onnx_logits(repo: ModelRepository, key: str, query: str, docs: list[str], variant: str = "") -> np.ndarray:
    import onnxruntime as ort

    manifest = repo.manifest(key)
    tensors = TextPreprocessor.from_repo(repo, key).prep_pairs([(query, d) for d in docs]).tensors
    onnx_file = manifest.variants[variant] if variant else manifest.onnx_file
    session = ort.InferenceSession(str(repo.path(key) / onnx_file), providers=["CPUExecutionProvider"])
    (out,) = session.run(["logits"], {i.name: tensors[i.name] for i in session.get_inputs()})
    return np.asarray(out)


def test_a_one_label_cross_encoder_orders_pairs_exactly_as_pytorch(tmp_path: Path) -> None:
    source = write_classifier(tmp_path / "ce-1", labels=1, seed=3)
    repo = ModelRepository(tmp_path / "models")
    # Random weights keep fewer than 0.95 of fp32's top 10 under int8 (the rank gate's test below): gate off here.
    command = ["export", "cross-encoder", "--source", str(source), "--key", "ce", "--repo", str(repo.root), "--int8"]
    result = CliRunner().invoke(cli, [*command, "--min-top10-overlap", "0"])
    assert result.exit_code == 0, result.output
    assert "exported ce (cross_encoder, 1 label(s), sigmoid)" in result.output
    assert "the export's parity texts, each ranked against all" in result.output  # the default rank sample
    m = repo.manifest("ce")
    assert (m.kind, m.activation, m.score_label, m.embedding_dim) == (ModelKind.CROSS_ENCODER, "sigmoid", 0, 1)
    assert m.input_names == ["input_ids", "token_type_ids", "attention_mask"]
    assert m.outputs[0].name == "logits"
    assert m.outputs[0].shape == ["batch", 1]
    assert m.max_seq_len == 512
    fp32, int8 = m.parity
    assert fp32.variant == "fp32"
    assert fp32.max_abs_diff <= FP32_MAX_ABS_DIFF
    assert int8.variant == "int8"
    assert m.variants == {"int8": "model.int8.onnx"}

    # Pairs the export never saw: same order as PyTorch, logits within 1e-4.
    reference = torch_pair_logits(source, QUERY, DOCS)
    served = onnx_logits(repo, "ce", QUERY, DOCS)
    assert served.shape == (len(DOCS), 1)
    np.testing.assert_allclose(served, reference, atol=1e-4)
    assert list(np.argsort(-served[:, 0])) == list(np.argsort(-reference[:, 0]))
    scores = pair_scores(served, m)
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-reference[:, 0])), atol=1e-5)
    # The truncated document is cut from its own end: the query's tokens are all there.
    batch = TextPreprocessor.from_repo(repo, "ce").prep_pairs([(QUERY, DOCS[2])])
    assert batch.truncated == [True]
    assert batch.tensors["input_ids"].shape[1] == 512


def test_the_rank_gate_refuses_an_int8_graph_that_changes_fp32s_top_10_and_records_what_it_kept(
    tmp_path: Path,
) -> None:
    """Random weights put a query's logits within ~0.01 of each other, so int8's rounding reorders them: below the
    default gate (0.95 of fp32's top 10) nothing is published; with the gate lowered the manifest records the
    overlap, which the two published graphs reproduce on the sample."""
    import json

    source = write_classifier(tmp_path / "ce-1", labels=1, seed=3)
    repo = ModelRepository(tmp_path / "models")
    topics = ["permits", "opening hours", "fees", "parking", "noise", "trees", "waste", "water"]
    docs = [f"A note on {t}, number {n}: the city office handles {t} requests." for t in topics for n in range(3)]
    groups = [(f"who handles {t}?", docs) for t in topics]
    sample = tmp_path / "rank-sample.jsonl"
    sample.write_text("".join(json.dumps({"query": q, "documents": d}) + "\n" for q, d in groups), encoding="utf-8")
    command = ["export", "cross-encoder", "--source", str(source), "--key", "ce", "--repo", str(repo.root), "--int8"]

    refused = CliRunner().invoke(cli, [*command, "--rank-sample", str(sample)])
    assert refused.exit_code != 0
    assert "the int8 variant of 'ce' keeps 0." in refused.output, refused.output
    assert "of the fp32 graph's top 10" in refused.output
    assert "8 queries x 24 documents from rank-sample.jsonl; the gate is 0.95" in refused.output
    assert "ce" not in repo

    result = CliRunner().invoke(cli, [*command, "--rank-sample", str(sample), "--min-top10-overlap", "0"])
    assert result.exit_code == 0, result.output
    rank = next(p for p in repo.manifest("ce").parity if p.variant == "int8").rank
    assert rank is not None
    assert (rank.k, rank.queries, rank.gate) == (10, 8, 0.0)
    assert f"int8 keeps {rank.mean_overlap:.2f} of fp32's top 10 (gate 0)" in result.output
    kept = []
    for query, candidates in groups:
        fp32 = onnx_logits(repo, "ce", query, candidates)[:, 0]
        int8 = onnx_logits(repo, "ce", query, candidates, variant="int8")[:, 0]
        kept.append(len(set(np.argsort(-fp32)[:10]) & set(np.argsort(-int8)[:10])) / 10)
    assert rank.mean_overlap == pytest.approx(float(np.mean(kept)), abs=1e-4)
    assert rank.min_overlap == pytest.approx(min(kept), abs=1e-4)
    assert rank.mean_overlap < 0.95


def test_two_labels_score_the_relevant_label_by_softmax(tmp_path: Path) -> None:
    source = write_classifier(tmp_path / "ce-2", labels=2, seed=5)
    repo = ModelRepository(tmp_path / "models")
    m = export_cross_encoder(str(source), repo, "ce2", variants=VariantRequest())
    assert (m.activation, m.score_label, m.outputs[0].shape) == ("softmax", 1, ["batch", 2])
    reference = torch_pair_logits(source, QUERY, DOCS)
    served = onnx_logits(repo, "ce2", QUERY, DOCS)
    np.testing.assert_allclose(served, reference, atol=1e-4)
    e = np.exp(reference - reference.max(axis=1, keepdims=True))
    np.testing.assert_allclose(pair_scores(served, m), (e / e.sum(axis=1, keepdims=True))[:, 1], atol=1e-5)
    # An explicit rule wins over the default.
    m = export_cross_encoder(str(source), repo, "ce2", force=True, activation="none", score_label=0)
    np.testing.assert_allclose(pair_scores(served, m), reference[:, 0], atol=1e-4)


def test_bad_score_rules_and_folders_are_refused_with_the_reason(tmp_path: Path) -> None:
    source = write_classifier(tmp_path / "ce-1", labels=1, seed=1)
    repo = ModelRepository(tmp_path / "models")
    with pytest.raises(ExportError, match=r"--score-label 3: the model has 1 label\(s\)"):
        export_cross_encoder(str(source), repo, "bad", score_label=3)
    with pytest.raises(ExportError, match="softmax needs a model with two or more labels"):
        export_cross_encoder(str(source), repo, "bad", activation="softmax")
    (source / "tokenizer.json").unlink()
    with pytest.raises(ExportError, match=r"tokenizer\.json is missing"):
        export_cross_encoder(str(source), repo, "bad")
    assert "bad" not in repo  # nothing published


def test_the_real_ms_marco_cross_encoder_exports_where_the_hub_answers(tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(MS_MARCO, timeout=3)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the hub means: not here
        pytest.skip(f"the Hugging Face hub cannot be reached ({type(exc).__name__}); this runs where it can")
    repo = ModelRepository(tmp_path / "models")
    m = export_cross_encoder(MS_MARCO, repo, "ms-marco-minilm")
    assert (m.kind, m.embedding_dim) == (ModelKind.CROSS_ENCODER, 1)
    served = pair_scores(onnx_logits(repo, "ms-marco-minilm", QUERY, DOCS[:2]), m)
    assert served[0] > served[1]  # a trained reranker puts the answer above the cat
