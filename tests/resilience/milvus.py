"""A MilvusClient for the test process that survives a stale shared connection.

pymilvus shares one connection per URI inside a process and re-checks it when a new client is made. A
milvus-lite server answers the idle connection's keepalive pings with GOAWAY "too_many_pings", after which that
re-check can fail once ("Fail connecting to server"); a fresh attempt opens a new transport and succeeds.
"""

from __future__ import annotations

import time
from typing import Any

from mmsearch import stores
from mmsearch.settings import MilvusSettings

ATTEMPTS = 5


def milvus_client(uri: str, timeout: float = 30.0) -> Any:
    from pymilvus.exceptions import MilvusException

    for attempt in range(ATTEMPTS):
        try:
            return stores.milvus_client(MilvusSettings(uri=uri), timeout_seconds=timeout)
        except MilvusException:
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")
