"""The Consul config source with the real py-consul client against the Consul KV test double: a config that
cannot be validated yet (Milvus down) is retried and applied when Milvus is back; an edit applies without restart;
the last good config is saved."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from mmsearch.collection_meta import CollectionMeta
from mmsearch.settings import SearchSettings, Settings
from services.search.app import _watch
from services.search.config.checks import CollectionStatus
from services.search.config.manager import ConfigManager, parse_config
from services.search.config.sources import ConsulConfigSource
from services.search.errors import DependencyUnavailableError
from services.search.metrics import SearchMetrics
from services.search.ports import AnnHit, AnnSearch
from tests.doubles.consul_kv import ConsulKVDouble
from tests.unit.test_search_config_sources import AB_CONFIG, _rank_experiments, _rank_only, _repo

pytestmark = pytest.mark.integration


class FlakyMilvus:
    def __init__(self) -> None:
        self.up = False

    async def search(self, req: AnnSearch) -> list[AnnHit]:
        return []

    async def describe(self, collection: str) -> CollectionStatus:
        if not self.up:
            raise DependencyUnavailableError("milvus", "connection refused")
        if collection != "faq_qa":
            return CollectionStatus(False)
        meta = CollectionMeta(
            model_key="minilm",
            dim=384,
            vector_field="question_emb",
            metric="IP",
            index_type="HNSW",
            corpus="faq_qa",
            count=1,
            lexical_fields=("question",),  # ingested with --lexical-field question, as the demo config needs
            analyzer="standard",
        )
        return CollectionStatus(True, meta)

    async def ping(self) -> None:
        return None


async def _until(what: str, check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not seen within {timeout}s")


def test_unvalidated_config_is_retried_then_edits_apply(consul_kv: ConsulKVDouble, tmp_path: Path) -> None:
    key = "config/test/consul-source"
    consul_kv.put(key, AB_CONFIG.read_text())
    host, port = consul_kv.address.rsplit(":", 1)
    settings = Settings(
        model_repo=_repo(tmp_path / "models"),
        search=SearchSettings(
            config_source="consul",
            consul_host=host,
            consul_port=int(port),
            consul_key=key,
            last_good_config=tmp_path / "last-good.yaml",
        ),
    )
    milvus = FlakyMilvus()
    manager = ConfigManager(settings, milvus, SearchMetrics())
    source = ConsulConfigSource(settings.search)

    async def scenario() -> None:
        with pytest.raises(DependencyUnavailableError):
            await source.load_initial(manager)
        assert not source.settled
        task = asyncio.create_task(_watch(SimpleNamespace(source=source, manager=manager)))  # type: ignore[arg-type]
        try:
            await asyncio.sleep(0.3)
            assert manager.source_state.startswith("no config yet")  # still waiting for Milvus
            milvus.up = True
            await _until("config applied once Milvus is back", lambda: manager.current is not None)
            assert _rank_experiments(manager.current) == ["rank.qa.dummy", "rank.qa.mmr"]
            consul_kv.put(key, _rank_only(AB_CONFIG.read_text(), "rank.qa.dummy"))
            await _until("edit applied", lambda: _rank_experiments(manager.current) == ["rank.qa.dummy"])
            assert manager.current is not None
            assert manager.current.origin == f"consul:{key}"
        finally:
            task.cancel()
            source.close()

    asyncio.run(scenario())
    saved = parse_config((tmp_path / "last-good.yaml").read_text(), "saved")
    assert _rank_experiments(saved) == ["rank.qa.dummy"]
