"""The one place that builds Milvus and MongoDB clients from settings (URI, token, database, time-outs).

The search service, `push` / `ingest` and the local stack's probes all connect through these two functions, so
a setting (a token, a time-out, the reconnect backoff) means the same thing everywhere. Nothing here checks that
the store answers: each caller decides what a failure means for it (a 503, a push error, "not ready yet").
"""

from __future__ import annotations

from typing import Any

from mmsearch.grpc_common.client import RECONNECT_OPTIONS
from mmsearch.settings import MilvusSettings, MongoSettings


def milvus_client(settings: MilvusSettings, *, timeout_seconds: float | None = None) -> Any:
    """A pymilvus MilvusClient for `settings.uri`: a Milvus Lite file (embedded) or a server URI.

    Raises pymilvus' MilvusException when the server cannot be reached.
    """
    from pymilvus import MilvusClient

    return MilvusClient(**_milvus_kwargs(settings, timeout_seconds))


def async_milvus_client(settings: MilvusSettings, *, timeout_seconds: float | None = None) -> Any:
    """pymilvus' asyncio client (AsyncMilvusClient) with milvus_client's connection, options and credentials. It
    connects on its first call, in the event loop of that call, and serves only that loop. Its channel is its own
    (pymilvus shares one per address otherwise): closing the client closes it, so a client made after a failure
    connects afresh."""
    from pymilvus import AsyncMilvusClient

    return AsyncMilvusClient(**_milvus_kwargs(settings, timeout_seconds), dedicated=True)


def _milvus_kwargs(settings: MilvusSettings, timeout_seconds: float | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "uri": settings.uri,
        "timeout": settings.timeout_seconds if timeout_seconds is None else timeout_seconds,
    }
    # gRPC shares subchannels (and their reconnect backoff, up to 120 s by default) across channels to the same
    # address, so after a long Milvus outage even a new client kept failing for ~20 s after Milvus was back.
    # pymilvus pings every 10 s even on an idle channel; a gRPC server that allows fewer pings without calls (the
    # milvus-lite server: gRPC's default 5 min) answers with GOAWAY "too_many_pings", and the next call on that
    # pooled channel failed with UNAVAILABLE. Pings only while calls are in flight: a dead server still fails the
    # next call, which every caller already handles.
    kwargs["grpc_options"] = {**dict(RECONNECT_OPTIONS), "grpc.keepalive_permit_without_calls": 0}
    kwargs.update(milvus_auth_kwargs(settings))
    return kwargs


def milvus_auth_kwargs(settings: MilvusSettings) -> dict[str, Any]:
    """Credentials, database and TLS of a Milvus connection, as pymilvus' keyword arguments."""
    kwargs: dict[str, Any] = {}
    if settings.token.get_secret_value():
        kwargs["token"] = settings.token.get_secret_value()
    if settings.db_name:
        kwargs["db_name"] = settings.db_name
    if settings.tls_ca_file is not None:
        kwargs["secure"] = True
        kwargs["ca_pem_path"] = str(settings.tls_ca_file)
        if settings.tls_client_cert_file is not None and settings.tls_client_key_file is not None:
            kwargs["client_pem_path"] = str(settings.tls_client_cert_file)
            kwargs["client_key_path"] = str(settings.tls_client_key_file)
        if settings.tls_server_name:
            kwargs["server_name"] = settings.tls_server_name
    return kwargs


def mongo_client(
    settings: MongoSettings, *, timeout_ms: int | None = None, bound_operations: bool = True, appname: str = "mmsearch"
) -> Any:
    """A pymongo MongoClient for `settings.uri` (pymongo connects lazily, on the first operation).

    Finding and connecting to the server is bounded by the time-out. With `bound_operations` every operation is
    too (the search service answers within its stage time-out); bulk loads pass False, since one large batch
    may rightly take longer than a query.
    """
    from pymongo import MongoClient

    return MongoClient(settings.uri, **_mongo_kwargs(settings, timeout_ms, bound_operations, appname))


def async_mongo_client(settings: MongoSettings, *, appname: str = "mmsearch") -> Any:
    """pymongo's asyncio client (AsyncMongoClient) with mongo_client's options, every operation bounded. It
    connects on its first operation and serves the event loop of that operation only."""
    from pymongo import AsyncMongoClient

    return AsyncMongoClient(settings.uri, **_mongo_kwargs(settings, None, True, appname))


def _mongo_kwargs(
    settings: MongoSettings, timeout_ms: int | None, bound_operations: bool, appname: str
) -> dict[str, Any]:
    ms = settings.timeout_ms if timeout_ms is None else timeout_ms
    return {
        "serverSelectionTimeoutMS": ms,
        "connectTimeoutMS": ms,
        "socketTimeoutMS": ms if bound_operations else None,
        "tz_aware": True,
        "appname": appname,
        **mongo_auth_kwargs(settings),
    }


def mongo_auth_kwargs(settings: MongoSettings) -> dict[str, Any]:
    """Credentials and TLS given as settings rather than in the URI, as pymongo's keyword arguments."""
    kwargs: dict[str, Any] = {}
    if settings.username:
        kwargs["username"] = settings.username
        kwargs["password"] = settings.password.get_secret_value()
    if settings.tls_ca_file is not None:
        kwargs["tls"] = True
        kwargs["tlsCAFile"] = str(settings.tls_ca_file)
        if settings.tls_client_cert_key_file is not None:
            kwargs["tlsCertificateKeyFile"] = str(settings.tls_client_cert_key_file)
    return kwargs
