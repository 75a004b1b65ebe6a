"""The offline job of docker-compose.yml and the Kubernetes Job (deploy/docker/offline-job.sh), run here as a
plain script against the local stack's real stores: it keeps an existing model and ingests the demo FAQ when no
corpus is mounted, and the search side then sees the corpus like any other."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmsearch.model_repo import ModelRepository
from stack import catalog
from stack.plan import Corpus
from tests.fixtures.stack import LocalStack, model_repo_with_minilm

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_offline_job_ingests_the_demo_faq_into_the_stores(
    local_stack: LocalStack, model_repo: ModelRepository, tmp_path: Path
) -> None:
    repo_dir = model_repo_with_minilm(tmp_path / "models", model_repo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        MMSEARCH_MODEL_REPO=str(repo_dir),
        MMSEARCH_MILVUS__URI=local_stack.plan.milvus_uri,
        MMSEARCH_MONGO__URI=local_stack.plan.mongo_uri,
        QA_FILE=str(tmp_path / "no-such-corpus.jsonl"),
        QA_CORPUS="job_faq",
        WORK_DIR=str(tmp_path / "work"),
    )
    result = subprocess.run(
        ["sh", str(ROOT / "deploy" / "docker" / "offline-job.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"model minilm already in {repo_dir}" in out
    assert "ingesting the demo FAQ" in out
    assert "CLIP_SOURCE not set: text-to-image stays off" in out
    assert "offline job done" in out
    corpus = Corpus(name="job_faq", kind="qa", source=tmp_path, model_key="minilm")
    vectors = catalog.milvus_count(local_stack.plan.milvus_uri, corpus, dim=384)
    assert vectors == local_stack.ready.loaded["faq_qa"]
    assert catalog.mongo_count(local_stack.plan.mongo_uri, "mmsearch", "job_faq") == vectors
