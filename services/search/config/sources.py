"""Where the A/B YAML comes from: a local file (polled for changes) or a Consul KV key (blocking queries).

Both feed ConfigManager.apply; a rejected edit is logged and counted and the config in force keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from mmsearch.settings import SearchSettings
from services.search.config.manager import ConfigManager
from services.search.errors import ConfigError, DependencyUnavailableError

log = logging.getLogger(__name__)

FILE_POLL_SECONDS = 0.5
CONSUL_WAIT = "5s"  # blocking query: Consul answers at once on a change, else after this long
RETRY_SECONDS = 1.0


class ConfigSource(Protocol):
    # True once the source gave an answer that validation could judge (applied or rejected); until then the
    # initial load is retried (e.g. Milvus was down, so the config could not be checked yet).
    settled: bool

    async def load_initial(self, manager: ConfigManager) -> None: ...

    async def watch(self, manager: ConfigManager) -> None: ...

    def close(self) -> None: ...


class FileConfigSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[float, int] | None = None
        self.settled = False

    def _stamp(self) -> tuple[float, int]:
        st = self.path.stat()
        return (st.st_mtime, st.st_size)

    async def load_initial(self, manager: ConfigManager) -> None:
        if not self.path.is_file():
            raise ConfigError([f"config file {self.path} does not exist (set MMSEARCH_SEARCH__CONFIG_FILE)"])
        self._seen = self._stamp()
        try:
            await manager.apply(self.path.read_text(encoding="utf-8"), f"file:{self.path}")
        except ConfigError:
            self.settled = True  # judged: the next edit of the file is what can change it
            raise
        self.settled = True
        manager.source_state = f"watching file {self.path}"
        manager.metrics.config_source_up.set(1)

    async def watch(self, manager: ConfigManager) -> None:
        while True:
            await asyncio.sleep(FILE_POLL_SECONDS)
            try:
                stamp = self._stamp()
            except OSError as exc:
                manager.source_state = f"config file {self.path} unreadable: {exc}"
                manager.metrics.config_source_up.set(0)
                continue
            manager.metrics.config_source_up.set(1)
            if stamp != self._seen:
                self._seen = stamp
                try:
                    await manager.apply(self.path.read_text(encoding="utf-8"), f"file:{self.path}")
                except (ConfigError, OSError) as exc:
                    log.error("config file change not applied: %s", exc)
                except DependencyUnavailableError as exc:
                    self._seen = None  # not judged yet: try again at the next poll
                    log.error("config file change not validated yet (%s); retrying", exc)
            await manager.recheck_disabled()

    def close(self) -> None:
        pass


class ConsulConfigSource:
    """Consul KV through the real py-consul client; the blocking `kv.get(index=, wait=)` runs on its own thread."""

    def __init__(self, s: SearchSettings) -> None:
        import consul

        self.key = s.consul_key
        self.where = f"{s.consul_scheme}://{s.consul_host}:{s.consul_port}"
        self.client = consul.Consul(
            host=s.consul_host, port=s.consul_port, scheme=s.consul_scheme, token=s.consul_token or None
        )
        self.index: str | None = None
        self.settled = False
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consul-watch")

    async def _get(self, index: str | None) -> tuple[str | None, bytes | None]:
        def go() -> tuple[Any, Any]:
            return self.client.kv.get(self.key, index=index, wait=CONSUL_WAIT if index else None)  # type: ignore[no-any-return]

        idx, data = await asyncio.get_running_loop().run_in_executor(self.pool, go)
        value = data.get("Value") if isinstance(data, dict) else None
        return (str(idx) if idx is not None else None), value

    async def load_initial(self, manager: ConfigManager) -> None:
        try:
            index, value = await self._get(None)
        except Exception as exc:  # noqa: BLE001 - any failure to reach Consul means: start from the last good config
            await self._start_from_last_good(
                manager, f"Consul at {self.where} unreachable ({type(exc).__name__}: {exc})"
            )
            self.settled = True  # the watch keeps retrying Consul
            return
        manager.metrics.config_source_up.set(1)
        if value is None:
            await self._start_from_last_good(manager, f"Consul key {self.key!r} is empty")
        else:
            try:
                await manager.apply(value.decode("utf-8"), f"consul:{self.key}", save=True)
                manager.source_state = f"watching Consul key {self.key!r} at {self.where}"
            except ConfigError:
                await self._start_from_last_good(manager, f"the config in Consul key {self.key!r} is invalid")
        # Consul answered: from here on, the watch applies changes of the key (blocking queries).
        self.index = index
        self.settled = True

    async def _start_from_last_good(self, manager: ConfigManager, why: str) -> None:
        text = manager.last_good_text()
        path = manager.settings.search.last_good_config
        if text is None:
            manager.source_state = f"{why}; no last good config at {path}; retrying"
            log.error(manager.source_state)
            return
        await manager.apply(text, f"last-good:{path}")
        manager.source_state = f"{why}; serving the last good config from {path}; retrying"
        log.warning(manager.source_state)

    async def watch(self, manager: ConfigManager) -> None:
        pending = False  # the last value could not be validated (a dependency was down): try it again
        rejected: str | None = None  # the last value refused as invalid: not re-validated until it changes
        while True:
            try:
                # A blocking query waits for a change; with a value pending, poll instead.
                index, value = await self._get(None if pending else self.index)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Consul down: say so in /ready, keep serving, retry
                manager.metrics.config_source_up.set(0)
                state = f"Consul at {self.where} unreachable ({type(exc).__name__}); serving config from " + (
                    manager.current.origin if manager.current else "nowhere (not ready)"
                )
                if state != manager.source_state:
                    log.warning(state)
                manager.source_state = state
                await asyncio.sleep(RETRY_SECONDS)
                continue
            manager.metrics.config_source_up.set(1)
            if manager.current is not None or value is not None:
                manager.source_state = f"watching Consul key {self.key!r} at {self.where}"
            self.index = index
            text = value.decode("utf-8") if value is not None else None
            current = manager.current.text if manager.current else None
            if text is not None and text not in (current, rejected):
                try:
                    await manager.apply(text, f"consul:{self.key}", save=True)
                    pending, rejected = False, None
                except ConfigError as exc:
                    pending, rejected = False, text
                    log.error("Consul config change not applied: %s", exc)
                except DependencyUnavailableError as exc:
                    pending = True
                    log.error("Consul config change not validated yet (%s); retrying", exc)
                    await asyncio.sleep(RETRY_SECONDS)
            await manager.recheck_disabled()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def make_source(s: SearchSettings) -> ConfigSource:
    return ConsulConfigSource(s) if s.config_source == "consul" else FileConfigSource(s.config_file)
