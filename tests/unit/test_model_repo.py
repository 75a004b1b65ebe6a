from pathlib import Path

import pytest

from mmsearch.model_repo import (
    ModelExistsError,
    ModelKind,
    ModelManifest,
    ModelNotFoundError,
    ModelRepoError,
    ModelRepository,
    ModelSource,
    TensorSpec,
    write_manifest,
)


def _manifest(key: str) -> ModelManifest:
    return ModelManifest(
        key=key,
        kind=ModelKind.TEXT_EMBEDDING,
        inputs=[TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"])],
        outputs=[TensorSpec(name="sentence_embedding", dtype="float32", shape=["batch", 4])],
        embedding_dim=4,
        normalized=True,
        source=ModelSource(folder="/x"),
    )


def _publish(repo: ModelRepository, key: str, *, force: bool = False, payload: str = "v1") -> None:
    with repo.writer(key, force=force) as staging:
        (staging / "model.onnx").write_text(payload)
        write_manifest(staging, _manifest(key))


def test_published_model_is_listed_and_readable(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    _publish(repo, "mini")
    assert repo.keys() == ["mini"]
    assert repo.manifest("mini").embedding_dim == 4
    assert repo.onnx_path("mini").read_text() == "v1"


def test_failed_export_leaves_nothing_visible(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with pytest.raises(RuntimeError), repo.writer("mini") as staging:
        (staging / "model.onnx").write_text("half")
        raise RuntimeError("killed mid-export")
    assert repo.keys() == []
    assert list(tmp_path.iterdir()) == []


def test_export_without_manifest_is_not_published(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with pytest.raises(ModelRepoError, match=r"no manifest\.json"), repo.writer("mini") as staging:
        (staging / "model.onnx").write_text("x")
    assert repo.keys() == []


def test_existing_key_needs_force_and_old_model_survives_a_failed_replace(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    _publish(repo, "mini")
    with pytest.raises(ModelExistsError, match="--force"):
        _publish(repo, "mini")
    with pytest.raises(RuntimeError), repo.writer("mini", force=True):
        raise RuntimeError("boom")
    assert repo.onnx_path("mini").read_text() == "v1"
    _publish(repo, "mini", force=True, payload="v2")
    assert repo.onnx_path("mini").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["mini"]


def test_unknown_key_lists_what_exists(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    _publish(repo, "a")
    with pytest.raises(ModelNotFoundError, match=r"'b' is not in the model repository .* \(available: a\)"):
        repo.manifest("b")


@pytest.mark.parametrize("key", ["", "../etc", ".hidden", "a/b", "x" * 200])
def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ModelRepoError, match="invalid model key"):
        ModelRepository(tmp_path).path(key)


def test_missing_variant_names_what_exists(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    _publish(repo, "mini")
    with pytest.raises(ModelRepoError, match="no 'int8' variant"):
        repo.onnx_path("mini", "int8")
