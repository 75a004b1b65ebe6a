"""Model sources: folders vs hub ids, and the weights digest recorded for folders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from offline.export.errors import ExportError
from offline.export.source import looks_like_path, resolve_source, weights_sha256


@pytest.mark.parametrize(
    ("source", "is_path"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2", False),
        ("bert-base-uncased", False),
        ("./models/minilm", True),
        ("/abs/folder", True),
        ("~/m", True),
        ("a/b/c", True),
    ],
)
def test_hub_ids_and_paths_are_told_apart(source: str, is_path: bool) -> None:
    assert looks_like_path(source) is is_path


def test_folder_source_records_folder_and_weights_digest(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    resolved = resolve_source(str(tmp_path))
    assert resolved.folder == tmp_path.resolve()
    assert resolved.record.folder == str(tmp_path.resolve())
    assert resolved.record.hub_id is None
    assert resolved.record.weights_sha256 == hashlib.sha256(b"weights").hexdigest()


def test_several_weight_files_get_one_digest_over_names_and_digests(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"a")
    (tmp_path / "2_Dense").mkdir()
    (tmp_path / "2_Dense" / "model.safetensors").write_bytes(b"b")
    lines = "".join(
        f"{name} {hashlib.sha256(data).hexdigest()}\n"
        for name, data in [("2_Dense/model.safetensors", b"b"), ("model.safetensors", b"a")]
    )
    assert weights_sha256(tmp_path) == hashlib.sha256(lines.encode()).hexdigest()


def test_folder_without_weights_has_no_digest(tmp_path: Path) -> None:
    assert weights_sha256(tmp_path) is None


def test_a_file_is_not_a_model_folder(tmp_path: Path) -> None:
    file = tmp_path / "model.onnx"
    file.write_bytes(b"x")
    with pytest.raises(ExportError, match="is a file"):
        resolve_source(str(file))
