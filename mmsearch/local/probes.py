"""Readiness checks for every process of the local stack: each returns True when the process serves."""

from __future__ import annotations

import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback URLs we built)
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError):
        return False


def grpc_serving(target: str, timeout: float = 2.0) -> bool:
    """The standard gRPC health service reports the whole server SERVING (every model loaded)."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def mongo_ok(uri: str, timeout: float = 2.0) -> bool:
    import pymongo
    import pymongo.errors

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=int(timeout * 1000)
    )
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()
    return True


def milvus_ok(uri: str, timeout: float = 2.0) -> bool:
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    try:
        client = MilvusClient(uri=uri, timeout=timeout)
    except (MilvusException, OSError):
        return False
    try:
        client.list_collections()
    except MilvusException:
        return False
    finally:
        client.close()
    return True
