"""Periodic work on the event loop (repository rescans) that logs its failures instead of dying silently."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, what: str, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        self.what, self.seconds, self.job = what, seconds, job
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.seconds > 0:
            self._task = asyncio.create_task(self._loop(), name=self.what)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.seconds)
            try:
                await self.job()
            except Exception:
                log.exception("%s failed; retrying in %.0fs", self.what, self.seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
