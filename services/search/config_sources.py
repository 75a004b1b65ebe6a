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
from services.search.config_manager import ConfigManager
from services.search.errors import ConfigError, DependencyUnavailableError

log = logging.getLogger(__name__)

FILE_POLL_SECONDS = 0.5
CONSUL_WAIT = "5s"  # blocking query: Consul answers at once on a change, else after this long
RETRY_SECONDS = 1.0


class ConfigSource(Protocol):
    async def load_initial(self, manager: ConfigManager) -> None: ...

    async def watch(self, manager: ConfigManager) -> None: ...

    def close(self) -> None: ...


class FileConfigSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[float, int] | None = None

    def _stamp(self) -> tuple[float, int]:
        st = self.path.stat()
        return (st.st_mtime, st.st_size)

    async def load_initial(self, manager: ConfigManager) -> None:
        if not self.path.is_file():
            raise ConfigError([f"config file {self.path} does not exist (set MMSEARCH_SEARCH__CONFIG_FILE)"])
        self._seen = self._stamp()
        await manager.apply(self.path.read_text(encoding="utf-8"), f"file:{self.path}")
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
                except (ConfigError, DependencyUnavailableError, OSError) as exc:
                    log.error("config file change not applied: %s", exc)
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
            return
        manager.metrics.config_source_up.set(1)
        if value is None:
            await self._start_from_last_good(manager, f"Consul key {self.key!r} is empty")
            self.index = index
            return
        try:
            await manager.apply(value.decode("utf-8"), f"consul:{self.key}", save=True)
        except ConfigError:
            await self._start_from_last_good(manager, f"the config in Consul key {self.key!r} is invalid")
        self.index = index
        manager.source_state = f"watching Consul key {self.key!r} at {self.where}"

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
        while True:
            try:
                index, value = await self._get(self.index)
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
            manager.source_state = f"watching Consul key {self.key!r} at {self.where}"
            changed = index != self.index
            # Consul's rule: an index that goes backwards means a reset; start over from the current value.
            if index is not None and self.index is not None and _int(index) < _int(self.index):
                changed = True
            self.index = index
            if (
                changed
                and value is not None
                and (manager.current is None or value.decode("utf-8") != manager.current.text)
            ):
                try:
                    await manager.apply(value.decode("utf-8"), f"consul:{self.key}", save=True)
                except (ConfigError, DependencyUnavailableError) as exc:
                    log.error("Consul config change not applied: %s", exc)
            await manager.recheck_disabled()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        return 0


def make_source(s: SearchSettings) -> ConfigSource:
    return ConsulConfigSource(s) if s.config_source == "consul" else FileConfigSource(s.config_file)
