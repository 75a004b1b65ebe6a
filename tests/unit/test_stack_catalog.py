"""When a second start may skip ingestion: only for the same model export and the same ingest input."""

from __future__ import annotations

from pathlib import Path

from mmsearch.model_repo import ModelKind, ModelManifest, ModelRepository, ModelSource, TensorSpec, write_manifest
from stack import catalog
from stack.plan import Corpus

CORPUS = Corpus(name="faq_qa", kind="qa", source=Path("faq.jsonl"), model_key="minilm")
# Nothing listens here: a decision that needs the stores would fail, so these tests prove none was needed.
NOWHERE = {"milvus_uri": "http://127.0.0.1:9", "mongo_uri": "mongodb://127.0.0.1:9", "database": "mmsearch"}


def _repo(tmp_path: Path) -> tuple[ModelRepository, ModelManifest]:
    repo = ModelRepository(tmp_path / "models")
    manifest = ModelManifest(
        key="minilm",
        kind=ModelKind.TEXT_EMBEDDING,
        inputs=[TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"])],
        outputs=[TensorSpec(name="sentence_embedding", dtype="float32", shape=["batch", 384])],
        embedding_dim=384,
        normalized=True,
        source=ModelSource(folder="/somewhere"),
    )
    with repo.writer("minilm") as folder:
        write_manifest(folder, manifest)
    return repo, manifest


def _stamp(run_dir: Path, manifest: ModelManifest, fingerprint: str) -> None:
    state = catalog.LoadedState(
        corpus="faq_qa", model_key="minilm", model_created_at=manifest.created_at, fingerprint=fingerprint, count=503
    )
    catalog.write_stamp(run_dir, state)


def test_no_stamp_means_ingest(tmp_path: Path) -> None:
    repo, _ = _repo(tmp_path)
    assert catalog.loaded_count(repo=repo, corpus=CORPUS, fingerprint="a", run_dir=tmp_path, **NOWHERE) is None


def test_other_input_or_other_export_means_ingest(tmp_path: Path) -> None:
    repo, manifest = _repo(tmp_path)
    _stamp(tmp_path, manifest, "--base-url http://127.0.0.1:8090/images")
    other_port = "--base-url http://127.0.0.1:9999/images"
    assert catalog.loaded_count(repo=repo, corpus=CORPUS, fingerprint=other_port, run_dir=tmp_path, **NOWHERE) is None
    # A re-export of the model (new manifest time) makes the stored vectors stale.
    stamp = catalog.read_stamp(tmp_path, "faq_qa")
    assert stamp is not None
    catalog.write_stamp(tmp_path, stamp.model_copy(update={"model_created_at": "2000-01-01T00:00:00+00:00"}))
    same = "--base-url http://127.0.0.1:8090/images"
    assert catalog.loaded_count(repo=repo, corpus=CORPUS, fingerprint=same, run_dir=tmp_path, **NOWHERE) is None


def test_a_damaged_stamp_only_costs_a_re_ingest(tmp_path: Path) -> None:
    catalog.stamp_path(tmp_path, "faq_qa").write_text("{not json")
    assert catalog.read_stamp(tmp_path, "faq_qa") is None
