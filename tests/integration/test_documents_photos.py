"""Photos written live to an image corpus: a multipart PUT through a real search service (milvus-lite server,
SecantusDB, the tokenizer service's image preprocessing and the model server's tiny random-weight CLIP towers),
on a corpus of its own (`live_photos`, the sample photos through the real ingest).

Random weights: meanings are noise, so the checks are exact ones: the live vector equals the ingested twin's, a
new photo searched by itself comes back first, a text search returns it among every photo."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from mmsearch.model_repo import ModelRepository
from tests.doubles.consul_kv import ConsulKVDouble
from tests.fixtures.search import MONGO_DATABASE, FaqCorpus, Stores, start_search, tiny_clip_config

pytestmark = pytest.mark.integration

CORPUS = "live_photos"
CONSUL_KEY = "config/test/documents-photos"


@pytest.fixture(scope="module")
def photos(
    model_repo: ModelRepository, search_stores: Stores, tmp_path_factory: pytest.TempPathFactory
) -> dict[int, Path]:
    from mmsearch.settings import MilvusSettings, MongoSettings
    from offline.ingest.steps import IngestOptions, run_ingest
    from offline.preprocess.demo import Demo, prepare_demo

    work = tmp_path_factory.mktemp("live-photos")
    opts = IngestOptions(
        corpus=CORPUS,
        model_key="tiny-clip-image",
        field="image",
        repo=model_repo,
        work_dir=work,
        milvus=MilvusSettings(uri=search_stores.milvus_uri),
        mongo=MongoSettings(uri=search_stores.mongo_uri, database=MONGO_DATABASE),
        providers=["CPUExecutionProvider"],
    )
    run_ingest(opts, lambda out: prepare_demo(Demo.PHOTOS, out, work_dir=work / "raw"))
    rows = [json.loads(line) for line in (work / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    return {int(r["id"]): Path(r["image"]) for r in rows}


@pytest.fixture(scope="module")
def service(  # noqa: PLR0917 - pytest fixtures
    photos: dict[int, Path],
    faq_corpus: FaqCorpus,
    model_repo: ModelRepository,
    tokenizer_target: str,
    model_server_target: str,
    search_stores: Stores,
    consul_kv: ConsulKVDouble,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[httpx.Client, Path]]:
    config = tiny_clip_config().replace("collectionName: photos", f"collectionName: {CORPUS}")
    consul_kv.put(CONSUL_KEY, config.replace("mongoCollection: photos", f"mongoCollection: {CORPUS}"))
    image_dir = tmp_path_factory.mktemp("live-photo-files")
    with (
        start_search(
            repo=model_repo.root,
            tokenizer_target=tokenizer_target,
            model_server_target=model_server_target,
            milvus_uri=search_stores.milvus_uri,
            mongo_uri=search_stores.mongo_uri,
            consul=consul_kv,
            consul_key=CONSUL_KEY,
            work_dir=tmp_path_factory.mktemp("documents-photos"),
            extra_env={
                "MMSEARCH_DOCUMENTS__IMAGE_DIR": str(image_dir),
                "MMSEARCH_DOCUMENTS__IMAGE_BASE_URL": "http://127.0.0.1:8090/images",
            },
        ) as running,
        httpx.Client(base_url=running.url, timeout=60) as client,
    ):
        yield client, image_dir


def _png(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _put(client: httpx.Client, doc_id: int, data: bytes, filename: str, **fields: str) -> httpx.Response:
    return client.put(
        f"/corpora/{CORPUS}/documents/{doc_id}", files={"image": (filename, data, "image/png")}, data=fields
    )


def _vectors(stores: Stores, ids: list[int]) -> dict[int, Any]:
    from pymilvus import MilvusClient

    client = MilvusClient(stores.milvus_uri)
    try:
        rows = client.query(
            CORPUS,
            filter=f"id in [{', '.join(map(str, ids))}]",
            output_fields=["image_emb"],
            consistency_level="Strong",
        )
        return {int(r["id"]): np.asarray(r["image_emb"], dtype=np.float32) for r in rows}
    finally:
        client.close()


def test_a_photo_written_live_equals_its_ingested_twin(
    service: tuple[httpx.Client, Path], photos: dict[int, Path], search_stores: Stores
) -> None:
    client, image_dir = service
    source_id, source = next(iter(photos.items()))
    reply = client.put(
        f"/corpora/{CORPUS}/documents/800001", files={"image": (source.name, source.read_bytes(), "image/jpeg")}
    )
    assert reply.status_code == 200, reply.text
    vectors = _vectors(search_stores, [source_id, 800001])
    assert np.max(np.abs(vectors[source_id] - vectors[800001])) <= 1e-6
    got = client.get(f"/corpora/{CORPUS}/documents/800001").json()["document"]
    assert got["name"] == source.name
    stored = Path(got["image"])
    assert stored.parent == image_dir
    assert stored.read_bytes() == source.read_bytes()
    assert got["url"] == f"http://127.0.0.1:8090/images/{stored.name}"


def test_a_new_photo_is_found_by_image_and_by_text_and_gone_once_deleted(
    service: tuple[httpx.Client, Path], photos: dict[int, Path]
) -> None:
    client, _ = service
    photo = _png(1)
    assert _put(client, 800002, photo, "noise.png", name="A new photo").status_code == 200
    found = client.post("/i2i/user/10", files={"image": ("q.png", photo, "image/png")}, data={"topK": "3"})
    assert found.status_code == 200, found.text
    hits = found.json()["searchItemModels"][0]
    assert hits[0]["id"] == "800002"
    assert hits[0]["summary"]["name"] == "A new photo"
    by_text = client.post("/t2i/user/10", json={"query": "a photo", "topK": len(photos) + 5})
    assert "800002" in [h["id"] for h in by_text.json()["searchItemModels"][0]]
    assert client.delete(f"/corpora/{CORPUS}/documents/800002").status_code == 200
    again = client.post("/i2i/user/10", files={"image": ("q.png", photo, "image/png")}, data={"topK": "3"})
    assert "800002" not in [h["id"] for h in again.json()["searchItemModels"][0]]


@pytest.mark.parametrize(
    ("name", "files", "data", "status", "says"),
    [
        ("not an image", {"image": ("x.txt", b"plain text, not a photo", "text/plain")}, {}, 415, "image"),
        ("does not decode", {"image": ("bad.png", b"\x89PNG\r\n\x1a\n garbage", "image/png")}, {}, 422, "image"),
        ("no file", {"other": ("x.png", b"\x89PNG\r\n\x1a\n", "image/png")}, {}, 422, "`image`"),
        ("empty file", {"image": ("empty.png", b"", "image/png")}, {}, 422, "empty"),
        ("unknown field", {"image": ("ok.png", _png(3), "image/png")}, {"price": "3"}, 422, "price"),
    ],
)
def test_bad_photo_uploads_are_refused_precisely(  # noqa: PLR0917 - parametrized cases
    service: tuple[httpx.Client, Path],
    name: str,
    files: dict[str, Any],
    data: dict[str, str],
    status: int,
    says: str,
) -> None:
    client, image_dir = service
    before = set(image_dir.iterdir())
    reply = client.put(f"/corpora/{CORPUS}/documents/800100", files=files, data=data)
    assert reply.status_code == status, f"{name}: {reply.text}"
    assert says in reply.json()["message"], f"{name}: {reply.json()}"
    assert set(image_dir.iterdir()) == before, f"{name}: a refused photo was kept"


def test_photos_go_one_per_put_and_text_corpora_take_no_files(service: tuple[httpx.Client, Path]) -> None:
    client, _ = service
    batch = client.post(
        f"/corpora/{CORPUS}/documents:batch",
        json={"items": [{"op": "upsert", "id": "800200", "document": {"name": "x"}}]},
    )
    assert batch.status_code == 207
    assert "multipart PUT" in batch.json()["items"][0]["message"]
    text = client.put("/corpora/faq_qa/documents/800201", files={"image": ("p.png", _png(2), "image/png")})
    assert text.status_code == 422
    assert "holds text" in text.json()["message"]
