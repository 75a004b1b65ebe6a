"""Exposures leave the request path at once: `record` puts the document on a bounded queue and returns; one
background task writes the queue to MongoDB in batches. When MongoDB is slow or down, a batch is retried a few
times while the queue absorbs new traffic; what overflows the queue, or still fails after the retries, is lost
and counted (mmsearch_search_exposures_lost_total{reason}). Searches never wait for any of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from services.search.errors import DependencyUnavailableError
from services.search.metrics import SearchMetrics
from services.search.outcomes.store import MongoOutcomeStore

log = logging.getLogger(__name__)

BATCH = 500
LINGER_SECONDS = 0.25
RETRY_DELAYS = (0.5, 1.0, 2.0)  # between the attempts of one batch
WARN_EVERY_SECONDS = 30.0


class ExposureRecorder:
    def __init__(
        self, store: MongoOutcomeStore, metrics: SearchMetrics, *, queue_size: int, ttl_days: int, enabled: bool = True
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.metrics = metrics
        self.ttl_days = ttl_days
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        # Exposures not yet written, by requestId: feedback that arrives before the write still finds its search.
        self._pending: dict[str, dict[str, Any]] = {}
        self._indexed = False
        self._in_flight = 0  # exposures taken off the queue and not yet written or counted
        self._stopping = False
        self._last_warning = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="exposure-writer")

    def record(self, doc: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            self._queue.put_nowait(doc)
        except asyncio.QueueFull:
            self.metrics.exposures_lost.labels("queue_full").inc()
            self._warn("exposure queue full (%d): MongoDB is not keeping up; exposures dropped", self._queue.maxsize)
            return
        self._pending[doc["requestId"]] = doc
        self.metrics.exposure_queue.set(self._queue.qsize())

    def pending(self, request_id: str) -> dict[str, Any] | None:
        return self._pending.get(request_id)

    async def stop(self, timeout: float = 3.0) -> None:
        """Write what is queued (within `timeout`), then stop; what is left is counted as lost. A few seconds: a
        reachable MongoDB takes a full queue in less (the local stack stops its stores after this service)."""
        self._stopping = True
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            left = self._queue.qsize() + self._in_flight
            if left:
                self.metrics.exposures_lost.labels("shutdown").inc(left)
                log.warning("stopped with %d exposures not written to MongoDB", left)

    async def _run(self) -> None:
        while True:
            try:
                first = await asyncio.wait_for(self._queue.get(), 0.5)
            except TimeoutError:
                if self._stopping:
                    return
                continue
            batch = [first]
            self._in_flight = 1
            # Linger a moment so a batch carries many exposures: one insert per LINGER_SECONDS under load rather
            # than one per search, which is what costs the store (and a co-located one, the search path) CPU.
            deadline = time.monotonic() + LINGER_SECONDS
            while len(batch) < BATCH:
                if self._queue.empty():
                    left = deadline - time.monotonic()
                    if left <= 0 or self._stopping:
                        break
                    await asyncio.sleep(min(left, 0.05))
                    continue
                batch.append(self._queue.get_nowait())
                self._in_flight += 1
            await self._write(batch)
            self._in_flight = 0
            for doc in batch:
                self._pending.pop(doc["requestId"], None)
            self.metrics.exposure_queue.set(self._queue.qsize())

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                if not self._indexed:
                    await self.store.ensure_indexes(self.ttl_days)
                    self._indexed = True
                await self.store.insert_exposures(batch)
            except DependencyUnavailableError as exc:
                self._warn("exposures not written (attempt %d): %s", attempt + 1, exc.reason)
                if delay is None or self._stopping:
                    break
                await asyncio.sleep(delay)
                continue
            except Exception:
                # A bug of ours (a document MongoDB cannot take): counted and logged, and the writer goes on, so
                # one bad batch never stops the recording of every later search.
                log.exception("a batch of %d exposures could not be written", len(batch))
                self.metrics.exposures_lost.labels("error").inc(len(batch))
                return
            for doc in batch:
                for layer in doc["experiments"]:
                    self.metrics.exposures.labels(doc["scene"], layer["layer"], layer["experiment"]).inc()
            return
        self.metrics.exposures_lost.labels("mongodb").inc(len(batch))

    def _warn(self, message: str, *args: Any) -> None:
        # Once per WARN_EVERY_SECONDS: an outage under load would otherwise log a line per request.
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning(message + " (further warnings within %ds suppressed)", *args, int(WARN_EVERY_SECONDS))
