"""The exposure writer's accounting, with a MongoDB that never answers: every exposure it was given is either
written or counted as lost, whatever state the writer is in when the service stops."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from mmsearch.settings import Settings
from services.search.metrics import SearchMetrics
from services.search.outcomes.recorder import ExposureRecorder
from services.search.outcomes.store import MongoOutcomeStore


class HangingStore(MongoOutcomeStore):
    """Accepts the indexes, then never finishes a write (a MongoDB going away under it)."""

    def __init__(self) -> None:
        super().__init__(Settings())
        self.writes = 0

    async def ensure_indexes(self, ttl_days: int) -> None:
        return None

    async def insert_exposures(self, docs: Sequence[dict[str, Any]]) -> None:
        self.writes += 1
        await asyncio.sleep(3600)


def _lost(metrics: SearchMetrics, reason: str) -> float:
    value: float = metrics.exposures_lost.labels(reason)._value.get()
    return value


def test_exposures_in_flight_or_queued_at_shutdown_are_counted_lost() -> None:
    metrics = SearchMetrics()
    store = HangingStore()

    async def scenario() -> None:
        recorder = ExposureRecorder(store, metrics, queue_size=10, ttl_days=30)
        recorder.start()
        for n in range(3):
            recorder.record({"requestId": f"r{n}", "scene": "s", "experiments": []})
        await asyncio.sleep(0.6)  # past the linger: the batch of 3 is in the hanging write
        recorder.record({"requestId": "r3", "scene": "s", "experiments": []})  # queued behind it
        await recorder.stop(timeout=0.2)

    asyncio.run(scenario())
    store.close()
    assert store.writes == 1
    assert _lost(metrics, "shutdown") == 4


def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    metrics = SearchMetrics()
    store = HangingStore()

    async def scenario() -> None:
        recorder = ExposureRecorder(store, metrics, queue_size=2, ttl_days=30)  # not started: nothing drains
        for n in range(5):
            recorder.record({"requestId": f"r{n}", "scene": "s", "experiments": []})
        assert recorder.pending("r1") is not None
        assert recorder.pending("r4") is None

    asyncio.run(scenario())
    store.close()
    assert _lost(metrics, "queue_full") == 3
