"""The sequential ingest fills the new Milvus collection while it encodes: an interrupted or refused ingest leaves
no half-built collection and the alias where it was; the re-run completes with exact counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mmsearch import stores
from mmsearch.model_repo import ModelRepository
from mmsearch.settings import MilvusSettings
from offline.encode.manifest import read_manifest
from offline.ingest.cli import ingest
from offline.preprocess.demo import prepare_demo
from offline.push.milvus_push import count_rows
from tests.fixtures.interrupt import interrupt_after_first_shard
from tests.fixtures.models import MINILM_KEY

pytestmark = pytest.mark.integration


def _collections(uri: str, alias: str) -> tuple[list[str], str | None]:
    client = stores.milvus_client(MilvusSettings(uri=uri))
    try:
        names = sorted(c for c in client.list_collections() if c.startswith(f"{alias}__"))
        target = client.describe_alias(alias)["collection_name"] if alias in client.list_aliases()["aliases"] else None
        return names, target
    finally:
        client.close()


def _count(uri: str, alias: str) -> int:
    client = stores.milvus_client(MilvusSettings(uri=uri))
    try:
        return count_rows(client, alias)  # the push's own count (strong consistency)
    finally:
        client.close()


def test_an_interrupted_ingest_drops_its_half_built_collection_and_the_rerun_completes(
    milvus_lite_server_uri: str, mongo_uri: str, model_repo: ModelRepository, tmp_path: Path
) -> None:
    full = tmp_path / "chatterbot.jsonl"
    prepare_demo("chatterbot", full)
    raw = tmp_path / "part.jsonl"  # 600 rows in shards of 50
    rows = [json.loads(line) for line in full.read_text(encoding="utf-8").splitlines()[:600]]
    raw.write_text("".join(json.dumps({"q": r["question"], "a": r["answer"]}) + "\n" for r in rows), encoding="utf-8")
    corpus = f"ov_{uuid.uuid4().hex[:8]}"
    work = tmp_path / "w"
    cmd = [str(Path(sys.executable).parent / "mmsearch"), "ingest", "qa", "--input", str(raw)]
    cmd += ["--map", "question=q,answer=a", "--ids", "sequential", "--model", MINILM_KEY, "--corpus", corpus]
    cmd += ["--work-dir", str(work), "--shard-size", "50"]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "MMSEARCH_MODEL_REPO": str(model_repo.root),
        "MMSEARCH_MILVUS__URI": milvus_lite_server_uri,
        "MMSEARCH_MONGO__URI": mongo_uri,
        "MMSEARCH_MONGO__DATABASE": f"t_{uuid.uuid4().hex[:8]}",
    }
    vectors = work / f"vectors-{MINILM_KEY}"
    code, text = interrupt_after_first_shard(cmd, env, vectors)
    partial = read_manifest(vectors)
    assert code == 130, text
    assert partial is not None
    assert not partial.complete, text
    # The collection being filled was dropped; there is no alias yet (a first ingest).
    assert _collections(milvus_lite_server_uri, corpus) == ([], None)

    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)

    assert res.returncode == 0, res.stdout + res.stderr
    assert "600 vectors upserted" in res.stdout
    names, target = _collections(milvus_lite_server_uri, corpus)
    assert names == [target]
    assert _count(milvus_lite_server_uri, corpus) == 600


def test_a_refused_push_leaves_the_served_collection_alone(
    milvus_lite_server_uri: str, mongo_uri: str, model_repo: ModelRepository, tmp_path: Path
) -> None:
    corpus = f"ov_{uuid.uuid4().hex[:8]}"
    env = {
        "MMSEARCH_MODEL_REPO": str(model_repo.root),
        "MMSEARCH_MILVUS__URI": milvus_lite_server_uri,
        "MMSEARCH_MONGO__URI": mongo_uri,
        "MMSEARCH_MONGO__DATABASE": f"t_{uuid.uuid4().hex[:8]}",
    }
    args: list[Any] = ["qa", "--demo", "faq", "--model", MINILM_KEY, "--corpus", corpus, "--shard-size", "100"]
    first = CliRunner().invoke(
        ingest, [*args, "--work-dir", str(tmp_path / "a"), "--lexical-field", "question"], env=env
    )
    assert first.exit_code == 0, first.output
    served = _collections(milvus_lite_server_uri, corpus)

    # Without the lexical field, the push would drop what hybrid experiments search: refused.
    second = CliRunner().invoke(ingest, [*args, "--work-dir", str(tmp_path / "b")], env=env)

    assert second.exit_code == 1
    assert "would drop them" in second.output
    assert _collections(milvus_lite_server_uri, corpus) == served
    assert _count(milvus_lite_server_uri, corpus) == 503
