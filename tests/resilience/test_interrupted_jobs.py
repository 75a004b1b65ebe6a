"""Interrupted offline jobs: `mmsearch index`, `mmsearch push milvus` and `mmsearch push mongo` are SIGKILLed once
they have made progress; the same command run again completes with exact counts and no duplicate ids."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from offline.datasets.faq import load_faq
from tests.fixtures.resilience import FaultStack
from tests.resilience.milvus import milvus_client
from tests.resilience.report import record

pytestmark = pytest.mark.resilience

CORPUS = "jobs_qa"
MAX_JOB_SECONDS = 300.0  # bound on each subprocess and on the wait for progress


def _mmsearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmsearch.cli.main", *args]


def _run(cmd: list[str], log: Path) -> None:
    with log.open("ab") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=MAX_JOB_SECONDS, check=False).returncode
    assert rc == 0, f"{' '.join(cmd[3:6])} failed ({rc}):\n{log.read_text(errors='replace')[-3000:]}"


def _kill_after_progress(cmd: list[str], log: Path, progressed: Callable[[], bool]) -> float:
    """Start cmd, SIGKILL it as soon as progressed() says it did part of its work; returns when it was killed."""
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    start = time.monotonic()
    try:
        while time.monotonic() - start < MAX_JOB_SECONDS:
            if proc.poll() is not None:
                pytest.fail(f"{' '.join(cmd[3:6])} finished (rc {proc.returncode}) before it could be interrupted")
            if progressed():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return time.monotonic() - start
            time.sleep(0.02)
        pytest.fail(f"{' '.join(cmd[3:6])} made no progress within {MAX_JOB_SECONDS:.0f}s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The FAQ as a normalised corpus (via `mmsearch preprocess qa`), ids 1..503 from the input."""
    work = tmp_path_factory.mktemp("jobs")
    raw = work / "raw.jsonl"
    rows = [{"id": i + 1, "question": e.q, "answer": e.a, "category": e.category} for i, e in enumerate(load_faq())]
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = work / "corpus.jsonl"
    _run(_mmsearch("preprocess", "qa", "-i", str(raw), "-o", str(out)), work / "preprocess.log")
    return out, len(rows)


def test_index_killed_mid_way_resumes_to_exact_counts(
    fault_stack: FaultStack, corpus_file: tuple[Path, int], tmp_path: Path
) -> None:
    corpus, total = corpus_file
    vectors = tmp_path / "vectors"
    cmd = _mmsearch("index", "-i", str(corpus), "--model", "minilm", "--field", "question", "-o", str(vectors),
                    "--repo", str(fault_stack.repo.root), "--shard-size", "50", "--batch-size", "16",
                    "--providers", "CPUExecutionProvider")  # fmt: skip

    def shards_done() -> int:
        try:
            return len(json.loads((vectors / "vectors.json").read_text())["shards"])
        except (OSError, ValueError, KeyError):
            return 0

    killed_after = _kill_after_progress(cmd, tmp_path / "index.log", lambda: shards_done() >= 2)
    at_kill = shards_done()
    _run(cmd, tmp_path / "index.log")
    manifest = json.loads((vectors / "vectors.json").read_text())
    ids = np.concatenate([np.load(vectors / s["ids"]) for s in manifest["shards"]])
    vecs = [np.load(vectors / s["vectors"]) for s in manifest["shards"]]
    record(
        "interrupted.index",
        {"killed_after_seconds": round(killed_after, 2), "shards_at_kill": at_kill,
         "shards_after_rerun": len(manifest["shards"]), "rows": int(ids.size), "unique_ids": int(np.unique(ids).size)},
    )  # fmt: skip
    assert manifest["complete"] is True
    assert [s["index"] for s in manifest["shards"]] == list(range(len(manifest["shards"])))
    assert ids.size == total
    assert np.unique(ids).size == total, "duplicate ids across shards after the resumed run"
    assert sorted(ids.tolist()) == list(range(1, total + 1))
    assert sum(v.shape[0] for v in vecs) == total


@pytest.fixture(scope="module")
def vectors_dir(
    fault_stack: FaultStack, corpus_file: tuple[Path, int], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("jobs-vectors") / "vectors"
    _run(
        _mmsearch("index", "-i", str(corpus_file[0]), "--model", "minilm", "--field", "question", "-o", str(out),
                  "--repo", str(fault_stack.repo.root), "--providers", "CPUExecutionProvider"),
        out.parent / "index.log",
    )  # fmt: skip
    return out


def _upserted(log: Path) -> int:
    """The largest row count tqdm reported for the upsert so far (e.g. 'upsert jobs_qa__2026...: 40/503')."""
    found = re.findall(rb"upsert \S+: +\d+%\|[^|]*\| (\d+)/\d+", log.read_bytes())
    return max((int(n) for n in found), default=0)


def test_push_milvus_killed_mid_way_then_rerun_serves_exact_counts(
    fault_stack: FaultStack,
    corpus_file: tuple[Path, int],
    vectors_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    total = corpus_file[1]
    # The kill waits for the progress bar to show part of the upsert. tqdm prints at most every 0.1 s to a file, and
    # on a fast machine 503 rows went in between two prints (the push ended before it could be killed): every
    # update is printed here, and one row per batch makes the upsert long enough to be caught in the middle.
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    cmd = _mmsearch("push", "milvus", "--vectors", str(vectors_dir), "--corpus", CORPUS, "--batch-size", "1",
                    "--index", "FLAT", "--milvus-uri", fault_stack.milvus_uri)  # fmt: skip
    log = tmp_path / "push-milvus.log"
    killed_after = _kill_after_progress(cmd, log, lambda: 0 < _upserted(log) < total)
    at_kill = _upserted(log)
    _run(cmd, log)
    client = milvus_client(fault_stack.milvus_uri)
    try:
        served = str(client.describe_alias(CORPUS)["collection_name"])
        rows = client.query(served, filter="id >= 0", output_fields=["id"], limit=16_384)
        count = int(client.query(served, filter="", output_fields=["count(*)"])[0]["count(*)"])
        physical = sorted(c for c in client.list_collections() if c.startswith(CORPUS + "__"))
    finally:
        client.close()
    ids = [int(r["id"]) for r in rows]
    record(
        "interrupted.push_milvus",
        {"killed_after_seconds": round(killed_after, 2), "rows_upserted_at_kill": at_kill, "served": served,
         "count": count, "unique_ids": len(set(ids)), "physical_collections_left": physical},
    )  # fmt: skip
    assert count == total
    assert len(ids) == total
    assert sorted(set(ids)) == list(range(1, total + 1)), "duplicate or missing ids in the served collection"
    assert physical == [served], f"the interrupted run left collections behind: {physical}"


def test_push_mongo_killed_mid_way_then_rerun_has_exact_counts(
    fault_stack: FaultStack, corpus_file: tuple[Path, int], tmp_path: Path
) -> None:
    from pymongo import MongoClient

    corpus, total = corpus_file
    mongo: MongoClient[dict[str, object]] = MongoClient(fault_stack.mongo_uri)
    coll = mongo["mmsearch"][CORPUS]
    try:
        cmd = _mmsearch("push", "mongo", "--input", str(corpus), "--corpus", CORPUS, "--batch-size", "5",
                        "--mongo-uri", fault_stack.mongo_uri)  # fmt: skip
        log = tmp_path / "push-mongo.log"
        killed_after = _kill_after_progress(cmd, log, lambda: 0 < coll.estimated_document_count() < total)
        at_kill = coll.count_documents({})
        _run(cmd, log)
        count = coll.count_documents({})
        ids = [int(str(d["_id"])) for d in coll.find({}, {"_id": 1})]
        queryids = [d["queryid"] for d in coll.find({}, {"queryid": 1})]
    finally:
        mongo.close()
    record(
        "interrupted.push_mongo",
        {"killed_after_seconds": round(killed_after, 2), "documents_at_kill": at_kill, "count": count},
    )
    assert count == total
    assert sorted(ids) == list(range(1, total + 1))
    assert len(set(queryids)) == total
