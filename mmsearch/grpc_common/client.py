"""Client side of our gRPC services: channels with our message limits and one typed error for failed calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmsearch.grpc_common.health import model_health_name

T = TypeVar("T")

# Codes that mean "the dependency is not there right now" (callers answer 503 and may retry), as opposed to
# a request the server refused (a bug or bad input on the caller's side).
UNAVAILABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


class ServiceCallError(Exception):
    """A failed call to the tokenizer service or the model server, with the gRPC status code it ended with."""

    def __init__(self, service: str, method: str, code: grpc.StatusCode, details: str) -> None:
        self.service = service
        self.method = method
        self.code = code
        self.details = details
        super().__init__(f"{service}.{method} failed with {code.name}: {details}")

    @property
    def unavailable(self) -> bool:
        """True when the service is down, overloaded or too slow (map to HTTP 503), not a bad request."""
        return self.code in UNAVAILABLE_CODES


def channel_options(max_message_mb: int) -> list[tuple[str, int]]:
    limit = max_message_mb * 1024 * 1024
    return [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]


# A server that comes back after an outage must be used again within about a second. gRPC's default reconnect
# backoff starts at 1 s and grows x1.6 up to 120 s, so the longer the outage the longer a client kept failing
# after the server was back (measured by tests/resilience/test_faults.py with a 45 s outage: 16-23 s).
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 1000)]


@dataclass(frozen=True)
class ClientTls:
    """TLS to one of our gRPC servers: the server's certificate must be signed by the CA in `ca_file` and carry the
    target's host name, or `server_name` when the target is reached by another name (an IP address)."""

    ca_file: Path
    server_name: str = ""

    @classmethod
    def from_settings(cls, ca_file: Path | None, server_name: str) -> ClientTls | None:
        return cls(ca_file, server_name) if ca_file is not None else None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca_file.read_bytes())

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def open_channel(target: str, *, max_message_mb: int = 64, tls: ClientTls | None = None) -> aio.Channel:
    options: list[tuple[str, int | str]] = [*channel_options(max_message_mb), *RECONNECT_OPTIONS]
    if tls is None:
        return aio.insecure_channel(target, options=options)
    return aio.secure_channel(target, tls.credentials(), options=[*options, *tls.options()])


async def call(service: str, method: str, make: Callable[[], Awaitable[T]]) -> T:
    """Await one RPC, turning grpc's exception into ServiceCallError (with the code kept)."""
    try:
        return await make()
    except aio.AioRpcError as exc:
        raise ServiceCallError(service, method, exc.code(), exc.details() or "") from exc


async def check_health(channel: aio.Channel, service: str, model: str | None, timeout: float) -> bool:
    """Standard health check: the whole server (model None) or one model's entry."""
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=model_health_name(model) if model else "")
    reply = await call(service, "Health.Check", lambda: stub.Check(request, timeout=timeout))
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
