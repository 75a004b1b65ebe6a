"""The Spark engine's pieces that need no running Spark: setup checks, settings, corpus segments, done markers,
and an executor task's errors (run in this process, as a Python worker would run it)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import click
import numpy as np
import pytest

from mmsearch.model_repo import ModelRepository
from offline.encode.manifest import IndexManifest, ShardInfo, write_manifest
from offline.encode.pipeline import plan_job
from offline.encode.shards import write_done_marker, write_shard
from offline.preprocess.records import CorpusError, plan_segments, read_corpus, read_segment
from offline.spark.options import spark_settings
from offline.spark.session import SparkSetupError, check_java, check_master
from offline.spark.tasks import EncodeContext, ShardTask, encode_shard
from tests.fixtures.models import MINILM_KEY
from tests.fixtures.ports import free_port


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(SparkSetupError, match=r"no bin/java.*openjdk-17-jre-headless"):
        check_java()


def test_an_old_java_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    java = tmp_path / "bin" / "java"  # what `java -version` of a Java 11 prints (to stderr)
    java.parent.mkdir()
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n", encoding="utf-8")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(SparkSetupError, match="is Java 11; Spark 4 needs Java 17"):
        check_java()


def test_an_unreachable_or_unknown_master_is_refused() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(SparkSetupError, match=f"cannot reach the Spark master spark://127.0.0.1:{port}"):
        check_master(f"spark://127.0.0.1:{port}", timeout=2)
    with pytest.raises(SparkSetupError, match="unknown Spark master 'yarn'"):
        check_master("yarn")
    for local in ("local", "local[2]", "local[*]", "local[4,2]"):
        check_master(local)


def test_spark_settings_take_flags_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMSEARCH_SPARK__MASTER", "spark://spark-master:7077")
    monkeypatch.setenv("MMSEARCH_SPARK__CONF", '{"spark.executor.memory": "4g"}')
    s = spark_settings(None, None, ("spark.task.cpus=2",))
    assert s.master == "spark://spark-master:7077"
    assert s.conf == {"spark.executor.memory": "4g", "spark.task.cpus": "2"}
    assert spark_settings("local[2]", 8).model_dump(include={"master", "partitions"}) == {
        "master": "local[2]",
        "partitions": 8,
    }
    with pytest.raises(click.BadParameter, match="not KEY=VALUE"):
        spark_settings(None, None, ("spark.task.cpus",))


def test_segments_cover_the_corpus_and_read_back_by_seeking(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    lines = [json.dumps({"id": i, "question": f"q{i} ünïcode", "answer": "a"}) for i in range(11)]
    lines.insert(4, "")  # a blank line is skipped, as read_corpus skips it
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")

    segments = plan_segments(corpus, 4)

    assert [(s.first_row, s.count) for s in segments] == [(0, 4), (4, 4), (8, 3)]
    assert [s.first_line for s in segments] == [1, 6, 10]
    rows = [pair for s in segments for pair in read_segment(corpus, s)]
    assert rows == list(read_corpus(corpus))


def test_segments_refuse_what_read_corpus_refuses(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": 1, "question": "a"}\n{"id": 1, "question": "b"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="line 2: duplicate id 1"):
        plan_segments(corpus, 10)


def _manifest(total: int = 30, shard_size: int = 10) -> IndexManifest:
    return IndexManifest(
        model_key="m",
        model_kind="sbert",
        model_sha256="a" * 64,
        dim=4,
        field="question",
        vector_field="question_emb",
        input_path="/c.jsonl",
        input_sha256="b" * 64,
        total=total,
        shard_size=shard_size,
    )


def _shard(folder: Path, index: int) -> ShardInfo:
    ids = np.arange(index * 10, index * 10 + 10, dtype=np.int64)
    return write_shard(folder, index, index * 10, ids, np.ones((10, 4), dtype=np.float32))


def test_done_markers_of_this_job_are_adopted_in_any_order(tmp_path: Path) -> None:
    """A worker finished shard 2 and the driver died before recording it: the re-run keeps it."""
    plan = _manifest()
    write_manifest(tmp_path, plan)
    write_done_marker(tmp_path, _shard(tmp_path, 2), plan.job_key)
    write_done_marker(tmp_path, _shard(tmp_path, 0), "another-job")  # ignored: another job's files

    resumed = plan_job(tmp_path, _manifest(), restart=False, replace_other_job=False)

    assert [s.index for s in resumed.shards] == [2]
    assert resumed.missing_shards() == [0, 1]
    assert not resumed.complete


def test_an_executor_without_the_model_repository_says_so(model_repo: ModelRepository, tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": 7, "question": "what?", "answer": "a"}) + "\n", encoding="utf-8")
    (segment,) = plan_segments(corpus, 10)
    ctx = EncodeContext(
        corpus=corpus,
        folder=tmp_path / "v",
        repo_root=tmp_path / "not-mounted-here",
        shipped="",
        model_key=MINILM_KEY,
        model_sha256="0" * 64,
        field="question",
        is_image=False,
        batch_size=8,
        threads=1,
        job_key="j",
        mongo=None,
        mongo_collection="",
    )
    with pytest.raises(RuntimeError) as info:
        encode_shard(ctx, ShardTask(segment, encode=True))
    text = str(info.value)
    assert "[mmsearch-partition]" in text
    assert f"cannot load model 'minilm' from {tmp_path / 'not-mounted-here'}" in text
    assert "model repository at the driver's path" in text

    wrong = EncodeContext(**{**ctx.__dict__, "repo_root": model_repo.root})  # the file differs from the driver's
    with pytest.raises(RuntimeError, match="is not the model file the driver planned with"):
        encode_shard(wrong, ShardTask(segment, encode=True))
