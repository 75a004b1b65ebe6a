"""The load test runs first on the session's local stack: hostile-input tests (40 MB gRPC messages, decompression
bombs) leave allocator high-water marks in the servers that would distort the memory-stability figures."""

from __future__ import annotations

import pytest

FIRST = "tests/resilience/test_load.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: 0 if item.nodeid.startswith(FIRST) else 1)  # stable: everything else keeps its order
