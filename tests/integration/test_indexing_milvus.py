"""Milvus contract of `push milvus`, against every Milvus form (Lite embedded, milvus-lite server, real 2.3.5).

The search side (issue 5) reads exactly this: alias = corpus name -> `<corpus>__<yyyymmddHHMMSS>`, INT64 `id`,
`question_emb` FLOAT_VECTOR, `category` ARRAY<VARCHAR>, CollectionMeta in the collection properties.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from mmsearch import stores
from mmsearch.collection_meta import from_properties
from mmsearch.model_repo import ModelRepository
from mmsearch.runtime.encoder import OnnxEncoder
from mmsearch.settings import MilvusSettings
from offline.encode.manifest import IndexManifest, file_sha256, write_manifest
from offline.encode.shards import write_shard
from offline.push.cli import push
from offline.push.errors import ModelMismatchError, PushError, StoreUnavailableError
from offline.push.milvus_push import MilvusPushOptions, alias_target, count_rows, push_milvus
from offline.push.schema import IndexType, Metric
from tests.fixtures.models import MINILM_KEY
from tests.fixtures.ports import free_port

pytestmark = pytest.mark.integration

PERMIT_QUESTION_ID = 2  # "How long does it take to get a building permit?"


@contextmanager
def client_for(uri: str) -> Iterator[Any]:

    client = stores.milvus_client(MilvusSettings(uri=uri))
    try:
        yield client
    finally:
        client.close()


def _opts(vectors: Path, corpus: str, **kw: Any) -> MilvusPushOptions:
    return MilvusPushOptions(vectors=vectors, corpus=corpus, batch_size=kw.pop("batch_size", 64), progress=False, **kw)


def _search(client: Any, alias: str, vector: np.ndarray, limit: int = 3, flt: str = "") -> list[int]:
    hits = client.search(
        alias, data=[vector.tolist()], anns_field="question_emb", limit=limit, filter=flt, output_fields=["id"]
    )[0]
    return [int(h["id"]) for h in hits]


def test_push_builds_a_verified_collection_behind_the_alias(
    milvus_uri: str, corpus_name: str, faq: tuple[Path, Path], model_repo: ModelRepository
) -> None:
    corpus, vectors = faq
    settings = MilvusSettings(uri=milvus_uri)

    # 503 rows in batches of 64: 7 full batches and a tail of 55 that must not be lost.
    summary = push_milvus(settings, _opts(vectors, corpus_name))

    assert summary.changed
    assert re.fullmatch(rf"{corpus_name}__\d{{14}}", summary.collection)
    query = OnnxEncoder.from_repo(model_repo, MINILM_KEY).encode_texts(["how long does a building permit take"])[0]
    with client_for(milvus_uri) as client:
        assert alias_target(client, corpus_name) == summary.collection
        assert count_rows(client, corpus_name) == 503
        desc = client.describe_collection(corpus_name)
        meta = from_properties(desc["properties"])
        assert meta is not None
        assert (meta.model_key, meta.dim, meta.vector_field, meta.metric, meta.index_type, meta.corpus, meta.count) == (
            "minilm",
            384,
            "question_emb",
            "IP",
            "HNSW",
            corpus_name,
            503,
        )
        fields = {f["name"]: f for f in desc["fields"]}
        assert fields["id"]["is_primary"]
        assert fields["id"]["type"].name == "INT64"
        assert fields["question_emb"]["params"]["dim"] == 384
        assert fields["category"]["type"].name == "ARRAY"
        assert fields["category"]["element_type"].name == "VARCHAR"
        assert client.describe_index(summary.collection, "question_emb")["index_type"] == "HNSW"

        assert _search(client, corpus_name, query)[0] == PERMIT_QUESTION_ID
        rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
        radon = {r["id"] for r in rows if r["category"] == ["radon-fuktskador"]}
        filtered = _search(client, corpus_name, query, limit=5, flt='array_contains(category, "radon-fuktskador")')
        assert filtered
        assert set(filtered) <= radon


def test_rerun_changes_nothing_and_force_swaps_physical_collections(
    milvus_uri: str, corpus_name: str, faq: tuple[Path, Path]
) -> None:
    _, vectors = faq
    settings = MilvusSettings(uri=milvus_uri)
    first = push_milvus(settings, _opts(vectors, corpus_name))
    probe = np.load(vectors / "shard-00001.vectors.npy")[7]
    with client_for(milvus_uri) as client:
        before = _search(client, corpus_name, probe, limit=5)

    again = push_milvus(settings, _opts(vectors, corpus_name))

    assert not again.changed
    assert again.collection == first.collection
    with client_for(milvus_uri) as client:
        assert count_rows(client, corpus_name) == 503
        assert _search(client, corpus_name, probe, limit=5) == before

    rebuilt = push_milvus(settings, _opts(vectors, corpus_name, force=True, batch_size=500))

    assert rebuilt.changed
    assert rebuilt.collection != first.collection
    assert rebuilt.dropped == [first.collection]
    with client_for(milvus_uri) as client:
        assert alias_target(client, corpus_name) == rebuilt.collection
        assert first.collection not in client.list_collections()
        assert count_rows(client, corpus_name) == 503
        assert _search(client, corpus_name, probe, limit=5) == before


def _synthetic_vectors(folder: Path, corpus: Path, model_key: str, dim: int) -> Path:
    """A complete vectors folder as `mmsearch index` writes it, for a model the repository does not hold."""
    ids = np.asarray([json.loads(line)["id"] for line in corpus.read_text(encoding="utf-8").splitlines()])
    rng = np.random.default_rng(7)
    vec = rng.normal(size=(len(ids), dim)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    folder.mkdir(parents=True)
    shard = write_shard(folder, 0, 0, ids, vec)
    manifest = IndexManifest(
        model_key=model_key,
        model_kind="text_embedding",
        model_sha256="0" * 64,
        dim=dim,
        field="question",
        vector_field="question_emb",
        input_path=str(corpus),
        input_sha256=file_sha256(corpus),
        total=len(ids),
        shard_size=len(ids),
        shards=[shard],
        complete=True,
    )
    write_manifest(folder, manifest)
    return folder


def test_dimension_or_model_mismatch_is_refused_and_the_old_collection_keeps_serving(
    milvus_uri: str, corpus_name: str, faq: tuple[Path, Path], tmp_path: Path
) -> None:
    corpus, vectors = faq
    settings = MilvusSettings(uri=milvus_uri)
    first = push_milvus(settings, _opts(vectors, corpus_name))
    other = _synthetic_vectors(tmp_path / "other", corpus, "other-model", 16)

    with pytest.raises(
        ModelMismatchError, match=r"'minilm' \(384-d question_emb\).*'other-model' \(16-d.*--allow-model-change"
    ):
        push_milvus(settings, _opts(other, corpus_name))

    with client_for(milvus_uri) as client:
        assert alias_target(client, corpus_name) == first.collection
        assert count_rows(client, corpus_name) == 503
        assert [c for c in client.list_collections() if c.startswith(corpus_name)] == [first.collection]

    replaced = push_milvus(settings, _opts(other, corpus_name, allow_model_change=True))
    with client_for(milvus_uri) as client:
        meta = from_properties(client.describe_collection(corpus_name)["properties"])
        assert meta is not None
        assert (meta.model_key, meta.dim) == ("other-model", 16)
        assert alias_target(client, corpus_name) == replaced.collection


def test_a_failure_mid_load_drops_the_new_collection_and_keeps_the_alias(
    milvus_uri: str, corpus_name: str, faq: tuple[Path, Path], tmp_path: Path
) -> None:
    corpus, vectors = faq
    settings = MilvusSettings(uri=milvus_uri)
    first = push_milvus(settings, _opts(vectors, corpus_name))
    # Same vectors, but a corpus that lost its last row: the upsert fails on that id, after several batches.
    short = tmp_path / "short.jsonl"
    short.write_text("".join(corpus.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")
    broken = _synthetic_vectors(tmp_path / "broken", corpus, "minilm", 384)
    (broken / "vectors.json").write_text(
        (broken / "vectors.json")
        .read_text(encoding="utf-8")
        .replace(str(corpus), str(short))
        .replace(file_sha256(corpus), file_sha256(short)),
        encoding="utf-8",
    )

    with pytest.raises(PushError, match="vector id 503 has no row"):
        push_milvus(settings, _opts(broken, corpus_name, force=True))

    with client_for(milvus_uri) as client:
        assert alias_target(client, corpus_name) == first.collection
        assert [c for c in client.list_collections() if c.startswith(corpus_name)] == [first.collection]
        assert count_rows(client, corpus_name) == 503


@pytest.mark.parametrize(("index_type", "metric"), [(IndexType.IVF_FLAT, Metric.IP), (IndexType.FLAT, Metric.COSINE)])
def test_other_index_types_and_metrics(
    milvus_uri: str, corpus_name: str, faq: tuple[Path, Path], index_type: IndexType, metric: Metric
) -> None:
    _, vectors = faq
    probe_ids = np.load(vectors / "shard-00000.ids.npy")
    probe = np.load(vectors / "shard-00000.vectors.npy")
    summary = push_milvus(
        MilvusSettings(uri=milvus_uri), _opts(vectors, corpus_name, index_type=index_type, metric=metric)
    )
    with client_for(milvus_uri) as client:
        assert client.describe_index(summary.collection, "question_emb")["index_type"] == str(index_type)
        meta = from_properties(client.describe_collection(corpus_name)["properties"])
        assert meta is not None
        assert (meta.index_type, meta.metric) == (str(index_type), str(metric))
        for k in (0, 50, 150):
            assert _search(client, corpus_name, probe[k], limit=1)[0] == int(probe_ids[k])


def test_server_down_is_a_clear_error_naming_the_setting(faq: tuple[Path, Path]) -> None:
    _, vectors = faq
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StoreUnavailableError, match=r"cannot reach Milvus at .*MMSEARCH_MILVUS__URI"):
        push_milvus(MilvusSettings(uri=uri, timeout_seconds=2), _opts(vectors, "faq_qa"))
    res = CliRunner().invoke(push, ["milvus", "--vectors", str(vectors), "--corpus", "faq_qa", "--milvus-uri", uri])
    assert res.exit_code == 1
    assert "MMSEARCH_MILVUS__URI" in res.output


def test_cli_push_milvus_reads_the_uri_from_the_environment(
    milvus_lite_server_uri: str, corpus_name: str, faq: tuple[Path, Path]
) -> None:
    _, vectors = faq
    res = CliRunner().invoke(
        push,
        ["milvus", "--vectors", str(vectors), "--corpus", corpus_name, "--filter-fields", ""],
        env={"MMSEARCH_MILVUS__URI": milvus_lite_server_uri},
    )
    assert res.exit_code == 0, res.output
    assert f"{corpus_name} -> {corpus_name}__" in res.output
    with client_for(milvus_lite_server_uri) as client:
        assert count_rows(client, corpus_name) == 503
        assert "category" not in {f["name"] for f in client.describe_collection(corpus_name)["fields"]}


def test_a_collection_named_like_the_corpus_is_not_replaced(
    milvus_lite_server_uri: str, faq: tuple[Path, Path]
) -> None:
    from pymilvus import DataType, MilvusClient

    _, vectors = faq
    name = "t_plain_collection"
    with client_for(milvus_lite_server_uri) as client:
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=4)
        if name not in client.list_collections():
            client.create_collection(name, schema=schema)
    with pytest.raises(PushError, match="is a collection, not an alias"):
        push_milvus(MilvusSettings(uri=milvus_lite_server_uri), _opts(vectors, name))


def test_an_index_asked_for_again_is_taken_when_it_matches(milvus_uri: str, corpus_name: str) -> None:
    """What a create_index retried by pymilvus finds (the first call built it): the same index is taken, another
    type is refused. Milvus Lite answers even an identical second create_index with "index already exists"."""
    from pymilvus import DataType

    from offline.push.milvus_push import create_index
    from offline.push.schema import index_params

    name = f"{corpus_name}__retry"
    hnsw = index_params(IndexType.HNSW, Metric.IP, 100)
    with client_for(milvus_uri) as client:
        schema = client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=8)
        client.create_collection(name, schema=schema)
        try:
            rng = np.random.default_rng(0)
            client.insert(name, [{"id": i, "v": rng.random(8).tolist()} for i in range(100)])
            client.flush(name)
            create_index(client, name, "v", hnsw)
            create_index(client, name, "v", hnsw)  # the retry: no error
            assert client.describe_index(name, index_name="v")["index_type"] == "HNSW"
            with pytest.raises(PushError, match="already has an index HNSW/IP, not the FLAT/IP"):
                create_index(client, name, "v", index_params(IndexType.FLAT, Metric.IP, 100))
        finally:
            client.drop_collection(name)
