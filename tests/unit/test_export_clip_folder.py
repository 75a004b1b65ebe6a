"""Which folders are CLIP models, and how their image preprocessing is read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from offline.export.clip import inspect_folder, read_image_preprocessing, tower_keys
from offline.export.errors import ExportError
from tests.fixtures.models import CLIP_CONFIG_DIR


def _folder(tmp_path: Path, *, without: str | None = None) -> Path:
    folder = tmp_path / "clip"
    shutil.copytree(CLIP_CONFIG_DIR, folder)
    (folder / "model.safetensors").write_bytes(b"stand-in: only the presence is checked here")
    if without:
        (folder / without).unlink()
    return folder


def test_tower_keys() -> None:
    assert tower_keys("clip-b32") == ("clip-b32-text", "clip-b32-image")


def test_complete_folder_is_recognised(tmp_path: Path) -> None:
    assert inspect_folder(_folder(tmp_path))["model_type"] == "clip"


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("preprocessor_config.json", "preprocessor_config.json is missing"),
        ("model.safetensors", "model.safetensors or pytorch_model.bin"),
        ("config.json", "config.json is missing"),
    ],
)
def test_incomplete_folder_names_the_missing_file(tmp_path: Path, missing: str, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        inspect_folder(_folder(tmp_path, without=missing))


def test_folder_without_tokenizer_json_needs_merges(tmp_path: Path) -> None:
    folder = _folder(tmp_path, without="tokenizer.json")
    (folder / "merges.txt").unlink()
    with pytest.raises(ExportError, match=r"merges.txt is missing"):
        inspect_folder(folder)


def test_non_clip_config_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ExportError, match=r"model_type 'bert', not 'clip'.*export sbert"):
        inspect_folder(folder)


def test_real_preprocessor_config_is_read() -> None:
    pre = read_image_preprocessing(CLIP_CONFIG_DIR)
    assert (pre.resize_shortest_edge, pre.crop_size, pre.resample) == (224, 224, "bicubic")
    assert pre.mean == [0.48145466, 0.4578275, 0.40821073]
    assert pre.std == [0.26862954, 0.26130258, 0.27577711]
    assert pre.convert_rgb is True


def test_unsupported_preprocessing_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    cfg = json.loads((folder / "preprocessor_config.json").read_text())
    cfg["do_center_crop"] = False
    (folder / "preprocessor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="do_center_crop=false is not supported"):
        read_image_preprocessing(folder)
