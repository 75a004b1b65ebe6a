"""`mmsearch index` with the real MiniLM export: same vectors as the shared encoder, resumable, refuses mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mmsearch.model_repo import ModelNotFoundError, ModelRepository
from mmsearch.runtime.encoder import OnnxEncoder
from offline.encode.cli import index
from offline.encode.manifest import read_manifest
from offline.encode.pipeline import EncodeError, encode_corpus
from offline.encode.shards import iter_shards, open_vectors
from tests.fixtures.models import MINILM_KEY

TEXTS = [
    "How long does a building permit take?",
    "What is a bygglov?",
    "Who pays for the roof inspection when the house is sold?",
    "你好",
    "Is a heat pump worth it in southern Sweden, and how long does it take to pay back the investment?",
    "ROT deduction",
    "Can I build a small guest house without a permit?",
    "What does radon do?",
    "Tell me about hidden defects.",
    "hi",
    "What insurance does a contractor need?",
]


def _corpus(tmp_path: Path, texts: list[str] = TEXTS, name: str = "corpus.jsonl") -> Path:
    path = tmp_path / name
    rows = [{"id": 100 + i, "question": t, "answer": f"a{i}", "category": ["c"]} for i, t in enumerate(texts)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _load(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    manifest = open_vectors(folder)
    parts = list(iter_shards(folder, manifest))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_vectors_equal_the_shared_encoder_and_are_unit_length(model_repo: ModelRepository, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    out = tmp_path / "vec"

    summary = encode_corpus(corpus, model_repo, MINILM_KEY, "question", out, batch_size=4, shard_size=4)

    ids, vecs = _load(out)
    expected = OnnxEncoder.from_repo(model_repo, MINILM_KEY).encode_texts(TEXTS, batch_size=32)
    assert ids.tolist() == [100 + i for i in range(len(TEXTS))]
    assert vecs.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(vecs, expected, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    manifest = read_manifest(out)
    assert manifest is not None
    assert manifest.complete
    assert (manifest.model_key, manifest.dim, manifest.field, manifest.vector_field) == (
        "minilm",
        384,
        "question",
        "question_emb",
    )
    assert [s.count for s in manifest.shards] == [4, 4, 3]
    assert summary.encoded == len(TEXTS)
    assert summary.docs_per_second > 0


def test_interrupted_run_resumes_from_the_last_complete_shard(model_repo: ModelRepository, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    out = tmp_path / "vec"

    def interrupt_after_first(shard: int) -> None:
        if shard == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encode_corpus(corpus, model_repo, MINILM_KEY, "question", out, shard_size=4, on_shard=interrupt_after_first)
    partial = read_manifest(out)
    assert partial is not None
    assert not partial.complete
    assert [s.index for s in partial.shards] == [0]
    with pytest.raises(Exception, match="incomplete"):
        open_vectors(out)
    first_shard = out / partial.shards[0].vectors
    mtime = first_shard.stat().st_mtime_ns

    summary = encode_corpus(corpus, model_repo, MINILM_KEY, "question", out, shard_size=4)

    assert summary.shards_done_before == 1
    assert summary.encoded == len(TEXTS) - 4
    assert first_shard.stat().st_mtime_ns == mtime  # the finished shard was not redone
    fresh = tmp_path / "fresh"
    encode_corpus(corpus, model_repo, MINILM_KEY, "question", fresh, shard_size=4)
    ids_a, vec_a = _load(out)
    ids_b, vec_b = _load(fresh)
    assert ids_a.tolist() == ids_b.tolist()
    np.testing.assert_allclose(vec_a, vec_b, atol=1e-6)

    again = encode_corpus(corpus, model_repo, MINILM_KEY, "question", out, shard_size=4)
    assert again.encoded == 0
    assert "nothing to do" in again.text()


def test_damaged_shard_is_encoded_again(model_repo: ModelRepository, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    out = tmp_path / "vec"
    encode_corpus(corpus, model_repo, MINILM_KEY, "question", out, shard_size=4)
    (out / "shard-00001.vectors.npy").write_bytes(b"truncated")

    summary = encode_corpus(corpus, model_repo, MINILM_KEY, "question", out, shard_size=4)

    # Shards 0 and 2 are whole and kept; only the damaged one is encoded again.
    assert summary.shards_done_before == 2
    assert summary.encoded == 4
    assert _load(out)[1].shape == (len(TEXTS), 384)


def test_different_input_is_refused_unless_restart(model_repo: ModelRepository, tmp_path: Path) -> None:
    out = tmp_path / "vec"
    encode_corpus(_corpus(tmp_path), model_repo, MINILM_KEY, "question", out, shard_size=4)
    other = _corpus(tmp_path, [*TEXTS, "one more question"], name="other.jsonl")

    with pytest.raises(EncodeError, match=r"different job \(input \(sha256\).*--restart"):
        encode_corpus(other, model_repo, MINILM_KEY, "question", out, shard_size=4)

    summary = encode_corpus(other, model_repo, MINILM_KEY, "question", out, shard_size=4, restart=True)
    assert summary.encoded == len(TEXTS) + 1
    assert _load(out)[0].tolist()[-1] == 100 + len(TEXTS)


def test_bad_corpus_rows_name_the_line(model_repo: ModelRepository, tmp_path: Path) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"id": 1, "question": "ok"}\n{"id": 2, "question": \n', encoding="utf-8")
    with pytest.raises(EncodeError, match="line 2"):
        encode_corpus(corpus, model_repo, MINILM_KEY, "question", tmp_path / "v")
    corpus.write_text('{"id": 1, "question": "ok"}\n{"id": 2, "answer": "no question"}\n', encoding="utf-8")
    with pytest.raises(EncodeError, match=r"line 2: row 2 has no 'question' field"):
        encode_corpus(corpus, model_repo, MINILM_KEY, "question", tmp_path / "v")
    corpus.write_text('{"id": 1, "question": "ok"}\n{"id": 1, "question": "dup"}\n', encoding="utf-8")
    with pytest.raises(EncodeError, match="line 2: duplicate id 1"):
        encode_corpus(corpus, model_repo, MINILM_KEY, "question", tmp_path / "v")
    corpus.write_text('{"id": "7", "question": "string id"}\n', encoding="utf-8")
    with pytest.raises(EncodeError, match="line 1"):
        encode_corpus(corpus, model_repo, MINILM_KEY, "question", tmp_path / "v")


def test_image_field_with_a_text_model_is_refused(model_repo: ModelRepository, tmp_path: Path) -> None:
    corpus = tmp_path / "img.jsonl"
    corpus.write_text('{"id": 1, "name": "a.png", "image": "/nope/a.png", "url": "u"}\n', encoding="utf-8")
    with pytest.raises(EncodeError, match=r"encodes text.*image model"):
        encode_corpus(corpus, model_repo, MINILM_KEY, "image", tmp_path / "v")


def test_cli_unknown_model_key_names_the_available_ones(model_repo: ModelRepository, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    with pytest.raises(ModelNotFoundError):
        encode_corpus(corpus, model_repo, "no-such-model", "question", tmp_path / "v")
    res = CliRunner().invoke(
        index,
        [
            "-i",
            str(corpus),
            "--model",
            "no-such-model",
            "--field",
            "question",
            "-o",
            str(tmp_path / "v"),
            "--repo",
            str(model_repo.root),
        ],
    )
    assert res.exit_code != 0
    assert "'no-such-model' is not in the model repository" in res.output
    assert "minilm" in res.output


def test_cli_encodes_and_prints_throughput(model_repo: ModelRepository, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    out = tmp_path / "v"
    args = ["-i", str(corpus), "--model", MINILM_KEY, "--field", "question", "-o", str(out)]
    res = CliRunner().invoke(index, [*args, "--repo", str(model_repo.root), "--providers", "CPUExecutionProvider"])
    assert res.exit_code == 0, res.output
    assert f"encoded {len(TEXTS)} of {len(TEXTS)} rows" in res.output
    assert "docs/s" in res.output


def test_image_corpus_vectors_equal_the_shared_encoder(model_repo: ModelRepository, tmp_path: Path) -> None:
    from offline.preprocess.demo import prepare_demo
    from tests.fixtures.models import TINY_CLIP_IMAGE

    corpus = tmp_path / "photos.jsonl"
    prepare_demo("photos", corpus, base_url="http://127.0.0.1:8090/images")
    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    out = tmp_path / "vec"

    summary = encode_corpus(corpus, model_repo, TINY_CLIP_IMAGE, "image", out, batch_size=5, shard_size=6)

    ids, vecs = _load(out)
    blobs = [Path(r["image"]).read_bytes() for r in rows]
    expected = OnnxEncoder.from_repo(model_repo, TINY_CLIP_IMAGE).encode_images(blobs)
    assert ids.tolist() == [r["id"] for r in rows]
    np.testing.assert_allclose(vecs, expected, atol=2e-5)
    manifest = read_manifest(out)
    assert manifest is not None
    assert (manifest.field, manifest.vector_field, manifest.model_kind) == ("image", "image_emb", "clip_image")
    assert summary.encoded == len(rows) == 16


def test_unreadable_image_names_the_file(model_repo: ModelRepository, tmp_path: Path) -> None:
    from tests.fixtures.models import TINY_CLIP_IMAGE

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    corpus = tmp_path / "img.jsonl"
    corpus.write_text(json.dumps({"id": 1, "name": "bad.jpg", "image": str(bad), "url": "u"}) + "\n", encoding="utf-8")
    with pytest.raises(EncodeError, match=r"bad\.jpg.*not a readable image"):
        encode_corpus(corpus, model_repo, TINY_CLIP_IMAGE, "image", tmp_path / "v")
    corpus.write_text(json.dumps({"id": 1, "name": "x", "image": str(tmp_path / "gone.png"), "url": "u"}) + "\n")
    with pytest.raises(EncodeError, match=r"cannot read image .*gone\.png"):
        encode_corpus(corpus, model_repo, TINY_CLIP_IMAGE, "image", tmp_path / "v")


def test_replace_other_job_starts_over_only_when_the_input_changed(model_repo: ModelRepository, tmp_path: Path) -> None:
    out = tmp_path / "vec"
    corpus = _corpus(tmp_path)
    encode_corpus(corpus, model_repo, MINILM_KEY, "question", out, shard_size=4)
    same = encode_corpus(corpus, model_repo, MINILM_KEY, "question", out, shard_size=4, replace_other_job=True)
    assert same.encoded == 0

    changed = _corpus(tmp_path, TEXTS[:5], name="corpus.jsonl")
    summary = encode_corpus(changed, model_repo, MINILM_KEY, "question", out, shard_size=4, replace_other_job=True)

    assert summary.encoded == 5
    assert _load(out)[0].tolist() == [100, 101, 102, 103, 104]
    assert not (out / "shard-00002.vectors.npy").exists()
