"""Readiness checks for every process of the local stack: each returns True when the process serves."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from mmsearch import stores
from mmsearch.healthcheck import grpc_serving, http_ok
from mmsearch.settings import MilvusSettings, MongoSettings

__all__ = ["grpc_serving", "http_ok", "milvus_ok", "mongo_ok", "web_ui_search_problem"]


def mongo_ok(uri: str, timeout: float = 2.0) -> bool:
    import pymongo.errors

    client = stores.mongo_client(MongoSettings(uri=uri, timeout_ms=int(timeout * 1000)), appname="mmsearch-probe")
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()
    return True


def milvus_ok(uri: str, timeout: float = 2.0) -> bool:
    from pymilvus.exceptions import MilvusException

    try:
        client = stores.milvus_client(MilvusSettings(uri=uri, timeout_seconds=timeout))
    except (MilvusException, OSError):
        return False
    try:
        client.list_collections()
    except MilvusException:
        return False
    finally:
        client.close()
    return True


def web_ui_search_problem(web_url: str, timeout: float = 10.0) -> str | None:
    """None when the web UI reaches the search service with its key (its /api/status), else what is wrong: a
    wrong or missing UI key shows here, at start-up, rather than on somebody's first search."""
    try:
        with urllib.request.urlopen(f"{web_url}/api/status", timeout=timeout) as resp:  # noqa: S310 (our loopback URL)
            status = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"GET /api/status failed: {exc}"
    search = status.get("search", {}) if isinstance(status, dict) else {}
    if search.get("reachable") is True:
        return None
    return str(search.get("message") or f"unexpected /api/status answer {status!r:.200}")
