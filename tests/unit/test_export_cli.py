"""`mmsearch export` refuses bad input with a clear message, a non-zero exit and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsearch.cli.main import cli


def _export(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["export", *args])
    return result.exit_code, result.output


def test_missing_folder(tmp_path: Path) -> None:
    code, out = _export("sbert", "--source", str(tmp_path / "nope"), "--key", "m", "--repo", str(tmp_path / "repo"))
    assert code == 1
    assert "does not exist" in out
    assert not (tmp_path / "repo").exists()


def test_folder_that_is_not_a_sentence_transformers_model(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    code, out = _export("sbert", "--source", str(folder), "--key", "m", "--repo", str(tmp_path / "repo"))
    assert code == 1
    assert "not a sentence-transformers model folder: modules.json is missing" in out
    assert not (tmp_path / "repo").exists()


def test_folder_that_is_not_a_clip_model(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "clip"}))
    code, out = _export("clip", "--source", str(folder), "--key", "c", "--repo", str(tmp_path / "repo"))
    assert code == 1
    assert "not a CLIP model folder" in out
    assert "is missing" in out
    assert not (tmp_path / "repo").exists()


def test_invalid_key(tmp_path: Path) -> None:
    code, out = _export("sbert", "--source", str(tmp_path), "--key", "../evil", "--repo", str(tmp_path / "repo"))
    assert code == 1
    assert "invalid model key" in out


def test_hub_id_without_network_says_so_and_suggests_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    # Offline mode and an empty cache make the outcome the same on machines with and without network.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    code, out = _export(
        "sbert", "--source", "sentence-transformers/all-MiniLM-L6-v2", "--key", "m", "--repo", str(tmp_path / "repo")
    )
    assert code == 1
    assert "unreachable" in out
    assert "--source DIR" in out
    assert not (tmp_path / "repo").exists()


def test_models_on_an_empty_repository(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["models", "--repo", str(tmp_path)])
    assert result.exit_code == 0
    assert "no models in" in result.output


def test_models_reports_an_unreadable_manifest_without_hiding_it(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{}")
    result = CliRunner().invoke(cli, ["models", "--repo", str(tmp_path)])
    assert result.exit_code == 1
    assert "not a valid model manifest" in result.output
    assert "1 model(s)" in result.output
