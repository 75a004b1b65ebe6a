"""`mmsearch export sbert` end to end, and `mmsearch models` on the session's repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from mmsearch.cli.main import cli
from mmsearch.model_repo import ModelRepository
from tests.fixtures.models import MINILM_KEY, minilm_source

pytestmark = pytest.mark.integration


def test_models_lists_key_kind_dim_and_parity(minilm_repo_path: Path) -> None:
    result = CliRunner().invoke(cli, ["models", "--repo", str(minilm_repo_path)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith(f"{MINILM_KEY} "))
    assert "text_embedding" in row
    assert " 384 " in row
    assert "fp32=" in row
    assert "int8=" in row


def test_models_json_is_the_manifests(minilm_repo_path: Path) -> None:
    result = CliRunner().invoke(cli, ["models", "--repo", str(minilm_repo_path), "--json"])
    assert result.exit_code == 0, result.output
    listed = {m["key"]: m for m in json.loads(result.output)}
    assert listed[MINILM_KEY]["embedding_dim"] == 384


def test_existing_key_is_refused_without_force_and_replaced_with_it(
    tmp_path: Path, model_repo: ModelRepository
) -> None:
    repo = ModelRepository(tmp_path / "repo")
    shutil.copytree(model_repo.path(MINILM_KEY), repo.path(MINILM_KEY))
    before = repo.manifest(MINILM_KEY)
    args = ["export", "sbert", "--source", str(minilm_source()), "--key", MINILM_KEY, "--repo", str(repo.root)]

    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1
    assert "already exists" in refused.output
    assert "--force" in refused.output
    assert repo.manifest(MINILM_KEY) == before

    replaced = CliRunner().invoke(cli, [*args, "--force", "--fp16"])
    assert replaced.exit_code == 0, replaced.output
    assert f"exported {MINILM_KEY}" in replaced.output
    after = repo.manifest(MINILM_KEY)
    assert after.variants == {"fp16": "model.fp16.onnx"}
    assert not (repo.path(MINILM_KEY) / "model.int8.onnx").exists()  # the old entry was replaced, not merged
    assert [p.variant for p in after.parity] == ["fp32", "fp16"]
    fp16 = onnx.load(str(repo.onnx_path(MINILM_KEY, "fp16")))
    weights = {t.data_type for t in fp16.graph.initializer if t.dims and len(t.dims) == 2}
    assert weights == {onnx.TensorProto.FLOAT16}
    # Callers feed and read the same dtypes whatever the precision.
    assert {o.type.tensor_type.elem_type for o in fp16.graph.output} == {onnx.TensorProto.FLOAT}
    assert sorted(p.name for p in repo.root.iterdir()) == [MINILM_KEY]  # no staging or trash left behind


def test_pairs_with_records_the_image_tower_and_checks_its_dimension(
    tmp_path: Path, model_repo: ModelRepository
) -> None:
    from offline.export.clip import export_clip
    from tests.fixtures.models import TINY_CLIP_IMAGE, tiny_clip_config, write_clip_folder

    repo = ModelRepository(tmp_path / "repo")
    shutil.copytree(model_repo.path(TINY_CLIP_IMAGE), repo.path(TINY_CLIP_IMAGE))  # 16-d
    args = ["export", "sbert", "--source", str(minilm_source()), "--repo", str(repo.root)]

    mismatch = CliRunner().invoke(cli, [*args, "--key", "q", "--pairs-with", TINY_CLIP_IMAGE])
    assert mismatch.exit_code == 1
    assert "embeddings are 16-d, this one's 384-d" in mismatch.output
    assert "q" not in repo

    not_an_image_tower = CliRunner().invoke(cli, [*args, "--key", "q", "--pairs-with", "q2"])
    assert not_an_image_tower.exit_code == 1
    assert "export the image tower it pairs with first" in not_an_image_tower.output

    # A CLIP whose projection matches MiniLM's 384 dimensions stands in for a distilled query tower's target.
    config = tiny_clip_config()
    config.projection_dim = 384
    export_clip(str(write_clip_folder(tmp_path / "clip384", config)), repo, "clip384")
    paired = CliRunner().invoke(cli, [*args, "--key", "q", "--pairs-with", "clip384-image"])
    assert paired.exit_code == 0, paired.output
    assert repo.manifest("q").pairs_with == "clip384-image"
