"""Assembles the model server: registry (load + warm up every model) + servicer + the common gRPC life cycle."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prometheus_client import CollectorRegistry

from mmsearch.api.v1 import model_server_pb2, model_server_pb2_grpc
from mmsearch.grpc_common.health import HealthStatus
from mmsearch.grpc_common.rescan import Periodic
from mmsearch.grpc_common.server import ServerConfig, Service, run_server
from mmsearch.model_repo import ModelRepository
from mmsearch.runtime.providers import resolve_providers
from mmsearch.settings import ModelServerSettings
from services.model_server.metrics import ServingMetrics
from services.model_server.registry import ModelRegistry
from services.model_server.servicer import ModelServerServicer

log = logging.getLogger(__name__)

SERVICE_NAME = model_server_pb2.DESCRIPTOR.services_by_name["ModelServer"].full_name


async def serve(settings: ModelServerSettings, model_repo: Path) -> None:
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    health = HealthStatus([SERVICE_NAME])
    executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="ort")
    models = ModelRegistry(ModelRepository(model_repo), settings, executor, metrics, health)
    servicer = ModelServerServicer(models, executor, metrics)
    rescan = Periodic("model repository rescan", settings.rescan_seconds, models.rescan)

    async def start() -> None:
        providers = resolve_providers(settings.providers, cuda_device_id=settings.cuda_device_id)
        log.info(
            "execution providers %s; batching %s (max batch %d, max delay %.1f ms, queue %d)%s",
            [p if isinstance(p, str) else p[0] for p in providers],
            "on" if settings.batching else "off",
            settings.max_batch_size,
            settings.max_queue_delay_ms,
            settings.max_queue_size,
            f"; not for {settings.no_batching_models}" if settings.no_batching_models else "",
        )
        await models.load_all()
        rescan.start()

    async def stop() -> None:
        await rescan.stop()
        await models.stop()
        executor.shutdown(wait=True, cancel_futures=True)

    service = Service(
        service_names=[SERVICE_NAME],
        register=lambda server: model_server_pb2_grpc.add_ModelServerServicer_to_server(servicer, server),
        start=start,
        stop=stop,
        health=health,
    )
    await run_server(ServerConfig.from_settings("model server", settings), service, registry)


def run(settings: ModelServerSettings, model_repo: Path) -> None:
    asyncio.run(serve(settings, model_repo))
