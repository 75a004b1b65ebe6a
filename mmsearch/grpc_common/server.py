"""Life cycle of one of our gRPC servers: create, serve health/reflection/metrics, load, stop gracefully.

The flow, top to bottom: bind the port and start (health "" is NOT_SERVING), start the metrics exporter, run
the service's start-up work (loading models, while health already answers), report SERVING, wait for SIGTERM
or SIGINT, report NOT_SERVING, `server.stop(grace)` so in-flight calls finish, then the service's clean-up.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc import aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from mmsearch.grpc_common.client import channel_options
from mmsearch.grpc_common.health import HEALTH_SERVICE_NAME, HealthStatus
from mmsearch.grpc_common.metrics import MetricsHttpServer, MetricsPortError
from mmsearch.settings import ModelServerSettings, TokenizerSettings

log = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
    pass


# What stops a server from starting because of its configuration (reported as one line, exit code 1). This
# module is shared with the tokenizer service, which must not load onnxruntime: the model server adds its own
# ProviderError to these.
START_ERRORS = (ServerStartError, MetricsPortError)


@dataclass(frozen=True)
class ServerConfig:
    name: str  # for logs: "tokenizer", "model server"
    host: str
    port: int
    metrics_port: int  # 0: no metrics HTTP server
    max_message_mb: int
    grace_seconds: float
    tls_cert_file: Path | None = None  # both set: the port answers TLS only
    tls_key_file: Path | None = None

    @classmethod
    def from_settings(cls, name: str, settings: TokenizerSettings | ModelServerSettings) -> ServerConfig:
        return cls(
            name=name,
            host=settings.host,
            port=settings.port,
            metrics_port=settings.metrics_port,
            max_message_mb=settings.max_message_mb,
            grace_seconds=settings.grace_seconds,
            tls_cert_file=settings.tls_cert_file,
            tls_key_file=settings.tls_key_file,
        )

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """The TLS credentials of the port, or None for plaintext; a half or unreadable setting stops the start."""
        if self.tls_cert_file is None and self.tls_key_file is None:
            return None
        if self.tls_cert_file is None or self.tls_key_file is None:
            raise ServerStartError(f"{self.name}: TLS needs both tls_cert_file and tls_key_file")
        try:
            cert, key = self.tls_cert_file.read_bytes(), self.tls_key_file.read_bytes()
        except OSError as exc:
            raise ServerStartError(f"{self.name}: cannot read the TLS certificate or key: {exc}") from exc
        return grpc.ssl_server_credentials([(key, cert)])


def create_server(max_message_mb: int) -> aio.Server:
    # Same limit both ways: a request over it fails with RESOURCE_EXHAUSTED before it reaches a servicer.
    return aio.server(options=channel_options(max_message_mb))


@dataclass
class Service:
    """What one service plugs into the common life cycle."""

    service_names: list[str]  # full gRPC names, for reflection and health
    register: Callable[[aio.Server], None]
    start: Callable[[], Awaitable[None]]  # start-up work (load models); the server already answers health
    stop: Callable[[], Awaitable[None]]  # after in-flight calls finished
    health: HealthStatus


async def run_server(config: ServerConfig, service: Service, registry: CollectorRegistry) -> None:
    server = create_server(config.max_message_mb)
    service.register(server)
    service.health.add_to_server(server)
    reflection.enable_server_reflection([*service.service_names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{config.host}:{config.port}"
    credentials = config.server_credentials()
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise ServerStartError(f"{config.name}: cannot listen on {address}: {exc}") from exc
    if bound == 0:
        raise ServerStartError(f"{config.name}: cannot listen on {address} (port in use?)")

    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)

    metrics = MetricsHttpServer(config.host, config.metrics_port, registry) if config.metrics_port else None
    await service.health.set_overall(False)
    await server.start()
    log.info(
        "%s listening on %s (%s, max message %d MB)",
        config.name,
        address,
        "TLS" if credentials is not None else "plaintext",
        config.max_message_mb,
    )
    try:
        if metrics is not None:
            metrics.start()
        await service.start()
        if not stop_requested.is_set():
            await service.health.set_overall(True)
            log.info("%s ready on %s", config.name, address)
        await stop_requested.wait()
        log.info("%s stopping: finishing in-flight calls (grace %.1fs)", config.name, config.grace_seconds)
        await service.health.shutting_down()
        await server.stop(config.grace_seconds)
    finally:
        await server.stop(None)  # no-op after the graceful stop; cancels calls when start-up failed
        await service.stop()
        if metrics is not None:
            metrics.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("%s stopped", config.name)
