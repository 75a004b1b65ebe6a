"""Readiness checks for every process of the local stack: each returns True when the process serves."""

from __future__ import annotations

from mmsearch import stores
from mmsearch.healthcheck import grpc_serving, http_ok
from mmsearch.settings import MilvusSettings, MongoSettings

__all__ = ["grpc_serving", "http_ok", "milvus_ok", "mongo_ok"]


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
