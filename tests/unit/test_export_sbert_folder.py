"""Checks that run before any model is loaded: which folders are sentence-transformers models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mmsearch.model_repo import ModelRepository
from offline.export.errors import ExportError
from offline.export.sbert import export_sbert, inspect_folder
from tests.fixtures.models import minilm_source


def _copy_minilm(dest: Path, *, without: str | None = None) -> Path:
    shutil.copytree(minilm_source(), dest, ignore=shutil.ignore_patterns(without) if without else None)
    return dest


def test_minilm_folder_is_recognised(tmp_path: Path) -> None:
    info = inspect_folder(minilm_source())
    assert info.module_types[-1] == "sentence_transformers.models.Normalize"
    assert info.max_seq_len == 256
    assert info.do_lower_case is False


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("modules.json", "modules.json is missing"),
        ("model.safetensors", "model.safetensors or pytorch_model.bin"),
        ("config.json", "config.json is missing"),
    ],
)
def test_incomplete_folder_names_the_missing_file(tmp_path: Path, missing: str, message: str) -> None:
    folder = _copy_minilm(tmp_path / "m", without=missing)
    with pytest.raises(ExportError, match=message):
        inspect_folder(folder)


def test_folder_without_tokenizer_files_is_refused(tmp_path: Path) -> None:
    folder = _copy_minilm(tmp_path / "m", without="tokenizer.json")
    (folder / "vocab.txt").unlink()
    with pytest.raises(ExportError, match=r"tokenizer.json or vocab.txt or vocab.json is missing"):
        inspect_folder(folder)


def test_unreadable_modules_list_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "modules.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ExportError, match="not a sentence-transformers modules list"):
        inspect_folder(folder)


def test_missing_folder_is_refused_and_nothing_written(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    with pytest.raises(ExportError, match="does not exist"):
        export_sbert(str(tmp_path / "nope"), repo, "x")
    assert not repo.root.exists()


def test_pairs_with_an_unknown_model_is_refused(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    with pytest.raises(ExportError, match="export the image tower it pairs with first"):
        export_sbert(str(minilm_source()), repo, "x", pairs_with="clip-image")
