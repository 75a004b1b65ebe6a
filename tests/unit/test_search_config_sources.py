"""The file config source: a watched edit is applied without restart, an invalid edit is rejected (counted,
reported) while the config in force keeps serving; Consul's last good file is written atomically."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path

import pytest

from mmsearch.collection_meta import CollectionMeta
from mmsearch.model_repo import ModelKind, ModelManifest, ModelSource, TensorSpec, write_manifest
from mmsearch.settings import SearchSettings, Settings
from services.search.config import manager as config_manager
from services.search.config.checks import CollectionStatus
from services.search.config.manager import ConfigManager
from services.search.config.model import RuntimeConfig
from services.search.config.sources import FileConfigSource
from services.search.metrics import SearchMetrics
from services.search.ports import AnnHit, AnnSearch

AB_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ab-config.yaml"


class FaqOnly:
    """Milvus as the config check sees it: faq_qa exists, built with minilm; nothing else."""

    async def search(self, req: AnnSearch) -> list[AnnHit]:
        return []

    async def describe(self, collection: str) -> CollectionStatus:
        if collection != "faq_qa":
            return CollectionStatus(False)
        meta = CollectionMeta(
            model_key="minilm",
            dim=384,
            vector_field="question_emb",
            metric="IP",
            index_type="FLAT",
            corpus="faq_qa",
            count=1,
            lexical_fields=("question",),  # ingested with --lexical-field question, as the demo config needs
            analyzer="standard",
        )
        return CollectionStatus(True, meta)

    async def ping(self) -> None:
        return None


def _repo(root: Path) -> Path:
    folder = root / "minilm"
    folder.mkdir(parents=True)
    manifest = ModelManifest(
        key="minilm",
        kind=ModelKind.TEXT_EMBEDDING,
        inputs=[TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"])],
        outputs=[TensorSpec(name="sentence_embedding", dtype="float32", shape=["batch", 384])],
        embedding_dim=384,
        normalized=True,
        source=ModelSource(note="manifest only: the config check reads manifests, never weights"),
    )
    write_manifest(folder, manifest)
    return root


def _rank_only(text: str, experiment: str) -> str:
    """The config with every rank.qa user on one experiment."""
    other = "rank.qa.mmr" if experiment == "rank.qa.dummy" else "rank.qa.dummy"
    text = re.sub(rf"\n *- \{{experimentName: {re.escape(other)}, ratio: 0.5\}}", "", text)
    return text.replace(
        f"{{experimentName: {experiment}, ratio: 0.5}}", f"{{experimentName: {experiment}, ratio: 1.0}}"
    )


def _rank_experiments(cfg: RuntimeConfig | None) -> list[str]:
    assert cfg is not None
    layer = cfg.scenes["questionAnswer"].layer("rank.qa")
    assert layer is not None
    return [e.name for e in layer.experiments]


def test_file_edits_apply_and_invalid_edits_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ab.yaml"
    path.write_text(AB_CONFIG.read_text())
    settings = Settings(
        model_repo=_repo(tmp_path / "models"),
        search=SearchSettings(config_file=path, last_good_config=tmp_path / "good" / "last.yaml"),
    )
    metrics = SearchMetrics()
    manager = ConfigManager(settings, FaqOnly(), metrics)
    source = FileConfigSource(path)

    async def scenario() -> None:
        await source.load_initial(manager)
        assert _rank_experiments(manager.current) == ["rank.qa.dummy", "rank.qa.mmr"]
        assert manager.current is not None
        assert manager.current.scenes["textToImage"].disabled_reason is not None  # no clip-text here
        watcher = asyncio.create_task(source.watch(manager))
        try:
            text = _rank_only(AB_CONFIG.read_text(), "rank.qa.mmr")
            path.write_text(text)
            os.utime(path, (1, 1))  # a distinct stamp even within the file system's time resolution
            while _rank_experiments(manager.current) != ["rank.qa.mmr"]:
                await asyncio.sleep(0.05)
            path.write_text(text.replace("rankerName: mmr", "rankerName: nope"))
            os.utime(path, (2, 2))
            while metrics.config_rejections.labels("file")._value.get() < 1:
                await asyncio.sleep(0.05)
            assert _rank_experiments(manager.current) == ["rank.qa.mmr"]
            assert manager.last_error is not None
            assert "unknown ranker 'nope'" in manager.last_error
        finally:
            watcher.cancel()

    asyncio.run(scenario())
    assert metrics.config_reloads.labels("file")._value.get() == 2
    manager.save_last_good("scene-config: {}\n")
    assert manager.last_good_text() == "scene-config: {}\n"


def test_a_disabled_scene_is_warned_about_once_not_on_every_recheck(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        model_repo=_repo(tmp_path / "models"),
        search=SearchSettings(config_file=AB_CONFIG, last_good_config=tmp_path / "last.yaml"),
    )
    manager = ConfigManager(settings, FaqOnly(), SearchMetrics())
    monkeypatch.setattr(config_manager, "RECHECK_DISABLED_SECONDS", 0.0)
    caplog.set_level(logging.INFO, logger="services.search")

    async def scenario() -> None:
        await manager.apply(AB_CONFIG.read_text(), "test")
        for _ in range(3):  # what the file and Consul sources do on every poll while a scene is disabled
            await manager.recheck_disabled()

    asyncio.run(scenario())
    warned = [r.getMessage() for r in caplog.records if "scene textToImage disabled" in r.getMessage()]
    assert len(warned) == 1
    assert "clip-text" in warned[0]
